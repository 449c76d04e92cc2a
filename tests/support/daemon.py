"""`Daemon`: a `bgtaskex --config CFG [OPTIONS] daemon` subprocess, its stdout and stderr in
files (so a test can wait on its log lines while it runs).

Whoever starts one kills it at the end of the test if it still runs: `Bgx.started` (the
`bgx` fixture does it), or the test's own list.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.support.cli import command, wait_until

#: One run's summary line in the daemon's log (text or JSON format).
RUN_LINE = re.compile(
    r"process \S+: run (?P<run_id>[0-9a-f]+): (?P<finished>\d+) finished, (?P<paused>\d+) "
    r"paused, (?P<failed>\d+) failed, (?P<errors>\d+) errored"
    r"(?:, (?P<cancelled>\d+) cancelled)?(?:, (?P<lost>\d+) lost)?"
)


class Daemon:
    """A `bgtaskex --config CFG [OPTIONS] daemon` subprocess; stderr in `err_path`, stdout
    beside it (`.out`). `host`: run it under another host name (a UTS namespace)."""

    def __init__(
        self,
        config: Path,
        env: Mapping[str, str],
        *options: str,
        err_path: Path,
        name: str = "",
        host: str | None = None,
    ) -> None:
        self.name = name
        self.err_path = err_path
        argv = command("--config", config, *options, "daemon")
        if host is not None:  # another host name (a UTS namespace): another host to it
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]
        with open(err_path, "w") as err, open(err_path.with_suffix(".out"), "w") as out:
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                env=dict(env),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def run_counts(self) -> list[dict[str, int]]:
        """The counts of each run it logged: finished, paused, failed, errors, cancelled,
        lost."""
        return [
            {k: int(v or 0) for k, v in m.groupdict().items() if k != "run_id"}
            for m in RUN_LINE.finditer(self.log())
        ]

    def describe(self) -> str:
        return f"--- daemon {self.name} (pid {self.pid}) stderr\n{self.log()[-6000:]}"

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        """Poll `condition` until true; fail (with the daemon's log) after `timeout` s or at
        once if the daemon exits."""

        def check() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the daemon exited with {self.proc.returncode} before {what}\n"
                    f"--- stderr\n{self.log()}"
                )
            return condition()

        try:
            wait_until(check, what, timeout)
        except pytest.fail.Exception as failed:
            raise AssertionError(f"{failed}\n--- daemon stderr\n{self.log()}") from None

    def started(self) -> Daemon:
        self.wait_for(lambda: "daemon started" in self.log(), "the daemon to start")
        return self

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def signal_all(self, signum: int) -> None:
        """`signum` to the daemon and to its run's child process, if one runs (to freeze
        a daemon with its run: SIGSTOP, SIGCONT)."""
        self.proc.send_signal(signum)
        for child in self.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    def children(self) -> list[int]:
        """The pids of the daemon's child processes (its run's child, forked by one of
        its threads)."""
        pids: list[int] = []
        for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def exit_code(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon {self.name} did not exit within {timeout}s\n{self.describe()}")

    def stop(self, timeout: float = 15, *, tracebacks: bool = False) -> None:
        """SIGTERM: it must exit 0 within `timeout`, with no traceback in its log (unless
        `tracebacks`: a hook that raised is logged with its traceback)."""
        self.signal(signal.SIGTERM)
        code = self.exit_code(timeout)
        assert code == 0, f"daemon {self.name} exited {code}\n{self.describe()}"
        assert tracebacks or "Traceback" not in self.log(), self.describe()
