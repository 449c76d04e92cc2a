"""Acceptance helpers: the real `bgtaskex` command in subprocesses.

`bgx(*args, input=None)` runs `python -m bgtaskex ARGS` with the private environment of
`cli_env` and returns the CompletedProcess (text mode, a timeout on every call).
`bgx.start(*args)` starts one in the background; whatever is still running at the end of
the test is killed (only the processes this fixture started, by pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: Seconds a single CLI call may take before the test fails (a hang is a failure).
TIMEOUT = 60.0

SUMMARY = re.compile(
    r"^run (?P<run_id>[0-9a-f]+): (?P<finished>\d+) finished, (?P<paused>\d+) paused, "
    r"(?P<failed>\d+) failed, (?P<errors>\d+) errored, (?P<actions>\d+) actions run "
    r"in (?P<elapsed>\d+(?:\.\d+)?)s$"
)

SCRIPTED = "tests.scripted:Scripted"


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

    def start(self, *args: object, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
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


def run_many(
    env: Mapping[str, str], calls: Mapping[str, tuple[list[str], str | None]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run independent CLI calls {key: (args, stdin)} side by side (they only wait on
    subprocesses, so threads are enough); returns {key: CompletedProcess}."""
    from concurrent.futures import ThreadPoolExecutor

    runner = Bgx(env)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {
            key: pool.submit(runner, *args, input=stdin) for key, (args, stdin) in calls.items()
        }
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture
def bgx(cli_env: dict[str, str]) -> Iterator[Bgx]:
    runner = Bgx(cli_env)
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode} from {_cli_args(result.args)}\n"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )


def _cli_args(args: list[str]) -> list[str]:
    """The arguments after `-m bgtaskex`."""
    return list(args[args.index("bgtaskex") + 1 :]) if "bgtaskex" in args else list(args)


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, float]:
    """The one summary line of `run-once`, parsed; fails unless stdout is exactly that."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, describe(result)
    match = SUMMARY.match(lines[0])
    assert match is not None, describe(result)
    return {k: float(v) for k, v in match.groupdict().items() if k != "run_id"}


def entries(log: str | Path) -> list[dict[str, Any]]:
    """Every hook call the scripted action logged: {"name", "hook", "pid"}."""
    try:
        with open(log, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def hooks(log: str | Path) -> list[str]:
    return [e["hook"] for e in entries(log)]


def scripted(log: str | Path, plan: Mapping[str, list[str]], name: str = "A") -> str:
    """A `REF=JSON` argument for the scripted action."""
    params = {"name": name, "log": str(log), "plan": dict(plan)}
    return f"{SCRIPTED}={json.dumps(params)}"


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


def hook_started(log: str | Path, hook: str, pid: int) -> Callable[[], bool]:
    return lambda: any(e["hook"] == hook and e["pid"] == pid for e in entries(log))


def lock_is_free(path: str | Path) -> bool:
    """Whether an exclusive flock on `path` can be taken right now (then let go)."""
    import fcntl

    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def finish(proc: subprocess.Popen[str], timeout: float = TIMEOUT) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err
