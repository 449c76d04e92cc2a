"""The `bgtaskex` command in tests: in this process (`run_cli`), or as a user runs it, in
a subprocess with a private HOME (`Bgx`).

In-process calls go through `bgtaskex.cli._main` (the real argument parsing and the
exit-code mapping, no `sys.exit`), with stdout and stderr captured; call `isolate` first
so that no BGTASKEX_* variable or user config leaks in.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Seconds a single CLI subprocess may take before the test fails (a hang is a failure).
TIMEOUT = 60.0


@dataclass
class CliResult:
    """What one in-process CLI call did: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str
    args: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        assert self.code == 0, self
        return json.loads(self.out)

    def describe(self) -> str:
        args = [a if len(a) < 200 else a[:200] + "..." for a in self.args]
        return f"exit {self.code} from {args!r}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def run_cli(*args: object, stdin: str | None = None) -> CliResult:
    """`bgtaskex ARGS` in this process; `stdin`, if given, is what it reads."""
    from bgtaskex.cli import _main

    argv = [str(arg) for arg in args]
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = _main(argv)
    finally:
        sys.stdin = saved_stdin
    return CliResult(code, out.getvalue(), err.getvalue(), argv)


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BGTASKEX_* variable or user config leaks into the in-process CLI."""
    for key in list(os.environ):
        if key.startswith("BGTASKEX_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BGTASKEX_RETRY_DELAY", "0")  # as tests/conftest.py's TEST_RETRY_DELAY
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def command(*args: object, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "bgtaskex", *map(str, args)]


class Bgx:
    """Runs the `bgtaskex` CLI as a user would, in a private HOME."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.started: list[subprocess.Popen[str]] = []

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra or {})
        return env

    def __call__(
        self,
        *args: object,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = TIMEOUT,
        python_flags: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command(*args, python_flags=python_flags),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self._env(env),
            timeout=timeout,
            check=False,
        )

    def start(
        self, *args: object, env: Mapping[str, str] | None = None, stderr: Any = subprocess.PIPE
    ) -> subprocess.Popen[str]:
        """Start `bgtaskex ARGS` in the background (stderr: a pipe, unless a file is given)."""
        proc = subprocess.Popen(
            command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=self._env(env),
        )
        self.started.append(proc)
        return proc

    def ok(self, *args: object, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run and assert exit code 0 and no traceback."""
        result = self(*args, **kwargs)
        assert result.returncode == 0, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        return result

    def json(self, *args: object, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, **kwargs).stdout)

    def show(self, url: str, task_id: int) -> dict[str, Any]:
        task = self.json("--database-url", url, "show", task_id, "--json")
        assert isinstance(task, dict)
        return task

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                proc.communicate(timeout=10)


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode} from {_cli_args(result.args)}\n"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )


def _cli_args(args: list[str]) -> list[str]:
    """The arguments after `-m bgtaskex`."""
    return list(args[args.index("bgtaskex") + 1 :]) if "bgtaskex" in args else list(args)


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 30.0,
    proc: subprocess.Popen[str] | None = None,
) -> None:
    """Poll `condition` until true; fail after `timeout` s or if `proc` exits first."""
    give_up = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"process exited with {proc.returncode} before {what}\n"
                f"--- stdout\n{out}--- stderr\n{err}"
            )
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
