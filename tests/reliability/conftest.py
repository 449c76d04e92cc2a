"""Fixtures and helpers of the torture suite (see __init__.py for the sizes).

* `size`: "quick" or "long" (``BGTASKEX_TORTURE``).
* `bgx`: the real-CLI runner (tests/conftest.py).
* `torture`: a `Torture` bench: an SQLite file database, a journal, a lock file, an
  isolated environment, in-process enqueueing of JournalActions, and `bgtaskex run-once`
  subprocesses (`Run`) whose exit is waited for on a pidfd, with their CPU time
  (wait4's rusage). Whatever is still running at the end of the test is killed by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import SUMMARY
from tests.reliability import SIZE, SIZE_VARIABLE, SIZES
from tests.reliability import invariants as inv
from tests.support import journal as ja

if SIZE not in SIZES:
    raise pytest.UsageError(f"{SIZE_VARIABLE}={SIZE!r}: expected one of {', '.join(SIZES)}")

MODULE = "tests.support.journal"


@pytest.fixture
def size() -> str:
    """The size of this session: "quick" (default) or "long" (BGTASKEX_TORTURE=long)."""
    return SIZE


class Run:
    """One `bgtaskex` subprocess, its output in files, reaped with wait4 (CPU time)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], out: Path) -> None:
        self.args = list(args)
        self.out_path = out.with_suffix(".out")
        self.err_path = out.with_suffix(".err")
        with open(self.out_path, "wb") as stdout, open(self.err_path, "wb") as stderr:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=dict(env)
            )
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self.ended: float | None = None
        self.cpu: float | None = None  # user + system seconds
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(self.pid)

    def poll(self) -> bool:
        """Reap the process if it has exited; True once it has."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.ended = time.monotonic()
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode  # Popen must not reap it again
        self.cpu = usage.ru_utime + usage.ru_stime
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        return True

    def fileno(self) -> int:
        """The pidfd (readable once the process exits), for `select`."""
        assert self._pidfd is not None
        return self._pidfd

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit (on the pidfd, else by polling); fail the test after timeout."""
        give_up = time.monotonic() + timeout
        while not self.poll():
            left = give_up - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"{self.describe()} still running after {timeout}s: killed")
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], left)
            else:
                time.sleep(min(left, 0.005))
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> bool:
        """SIGKILL it if it still runs (and reap it); True if the signal was sent."""
        if self.poll():
            return False
        os.kill(self.pid, signal.SIGKILL)
        self.wait(10)
        return True

    @property
    def wall(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def summary(self) -> dict[str, str] | None:
        """The parsed summary line of a run that took the lock, else None."""
        lines = self.stdout.splitlines()
        match = SUMMARY.match(lines[0]) if len(lines) == 1 else None
        return match.groupdict() if match else None

    def describe(self) -> str:
        args = self.args[self.args.index("bgtaskex") + 1 :] if "bgtaskex" in self.args else []
        return (
            f"pid {self.pid} exit {self.returncode} wall {self.wall:.2f}s ({' '.join(args)})\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr[-4000:]}"
        )


def wait_for_any(runs: Iterable[Run], timeout: float) -> None:
    """Block until one of `runs` exits or `timeout` seconds pass (no busy loop)."""
    fds = [r for r in runs if r.returncode is None and r._pidfd is not None]
    if fds:
        select.select(fds, [], [], max(0.0, timeout))
    else:
        time.sleep(max(0.0, min(timeout, 0.005)))


class Torture:
    """A workload of JournalActions on an SQLite file, and the runs that process it."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str]) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "torture.db"
        self.url = f"sqlite:///{self.db}"
        self.journal = tmp_path / "journal.jsonl"
        self.lock = tmp_path / "run.lock"
        self.env = dict(env)
        self.runs: list[Run] = []
        #: The modules the runs declare (--import).
        self.imports = [MODULE]
        #: The runs' retry_delay when a test turns backoff on (timed.backoff), for J8.
        self.retry_delay: float | None = None

    # -- the workload -------------------------------------------------------------------

    def enqueue(
        self,
        tasks: Sequence[Sequence[Mapping[str, Any]]],
        *,
        ref: str = ja.REF,
        names: Sequence[str] | None = None,
    ) -> list[int]:
        """Queue one task per item, each a list of JournalAction params (`ja.params`)."""
        from bgtaskex.client import connect
        from bgtaskex.config import Settings

        settings = Settings(database_url=self.url, lock_file=str(self.lock), imports=(MODULE,))
        with connect(settings=settings) as client:
            return [
                client.enqueue(
                    names[i] if names else f"torture-{i}",
                    [(ref, dict(params)) for params in actions],
                )
                for i, actions in enumerate(tasks)
            ]

    def params(self, label: str, **kw: Any) -> dict[str, Any]:
        return ja.params(self.journal, label, **kw)

    # -- runs ---------------------------------------------------------------------------

    def command(self, *args: object) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bgtaskex",
            "--database-url",
            self.url,
            *[arg for module in self.imports for arg in ("--import", module)],
            *map(str, args),
        ]

    def start(self, *args: object, env: Mapping[str, str] | None = None) -> Run:
        """Start `bgtaskex ARGS` (with the database and the module) in the background."""
        run = Run(
            self.command(*args),
            {**self.env, **(env or {})},
            self.dir / f"run-{len(self.runs):05d}",
        )
        self.runs.append(run)
        return run

    def start_run_once(self, *more: object) -> Run:
        return self.start("run-once", "--lock-file", self.lock, *more)

    def run_once(self, *more: object, timeout: float = 120.0) -> Run:
        run = self.start_run_once(*more)
        run.wait(timeout)
        return run

    def cli(self, *args: object, timeout: float = 60.0) -> Run:
        run = self.start(*args)
        run.wait(timeout)
        return run

    def lock_holder(self) -> int | None:
        """The pid the lock file names (the last run that took the lock), if any."""
        try:
            text = self.lock.read_text(encoding="utf-8").strip()
            return int(json.loads(text)["pid"]) if text else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not there yet, or being written

    # -- reading the state ----------------------------------------------------------------

    def check(self, *, killed_pids: Iterable[int] = (), final: bool = False) -> inv.Report:
        return inv.check(
            self.db,
            self.journal,
            killed_pids=set(killed_pids),
            final=final,
            retry_delay=self.retry_delay,
        )

    def tasks(self) -> list[dict[str, Any]]:
        return inv.read_db(self.db)[0]

    def actions(self) -> list[dict[str, Any]]:
        rows = inv.read_db(self.db)[1]
        for row in rows:
            row["params"] = inv.json_params(row["params"])
        return rows

    def cleanup(self) -> None:
        for run in self.runs:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                run.kill()


@pytest.fixture
def torture(tmp_path: Path, cli_env: dict[str, str]) -> Iterator[Torture]:
    bench = Torture(tmp_path, cli_env)
    try:
        yield bench
    finally:
        bench.cleanup()
