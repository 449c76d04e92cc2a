"""Acceptance helpers: the real `bgtaskex` command in subprocesses.

`bgx(*args, input=None)` (the fixture of tests/conftest.py; `Bgx` of tests/support/cli.py)
runs `python -m bgtaskex ARGS` with the private environment of `cli_env` and returns the
CompletedProcess (text mode, a timeout on every call). `bgx.start(*args)` starts one in
the background; whatever is still running at the end of the test is killed (only the
processes this fixture started, by pid). Here: parsing its output, the scripted action's
log, and waiting on conditions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import journal
from tests.support.cli import TIMEOUT, Bgx, command, describe, wait_until

__all__ = [
    "TIMEOUT",
    "Bgx",
    "command",
    "describe",
    "wait_until",
]  # the tests import them from here too

SUMMARY = re.compile(
    r"^run (?P<run_id>[0-9a-f]+): (?P<finished>\d+) finished, (?P<paused>\d+) paused, "
    r"(?P<failed>\d+) failed, (?P<errors>\d+) errored, (?P<actions>\d+) actions run "
    r"in (?P<elapsed>\d+(?:\.\d+)?)s$"
)

SCRIPTED = "tests.scripted:Scripted"


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
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, float]:
    """The one summary line of `run-once`, parsed; fails unless stdout is exactly that."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, describe(result)
    match = SUMMARY.match(lines[0])
    assert match is not None, describe(result)
    return {k: float(v) for k, v in match.groupdict().items() if k != "run_id"}


def entries(log: str | Path) -> list[dict[str, Any]]:
    """Every hook call the scripted action logged: {"name", "hook", "pid"}."""
    return journal.read(log)


def hooks(log: str | Path) -> list[str]:
    return [e["hook"] for e in entries(log)]


def scripted(log: str | Path, plan: Mapping[str, list[str]], name: str = "A") -> str:
    """A `REF=JSON` argument for the scripted action."""
    params = {"name": name, "log": str(log), "plan": dict(plan)}
    return f"{SCRIPTED}={json.dumps(params)}"


def hook_started(log: str | Path, hook: str, pid: int) -> Callable[[], bool]:
    """`hook` called by process `pid`, or by a run child of it (the daemon's)."""
    return lambda: any(e["hook"] == hook and pid in (e["pid"], e["ppid"]) for e in entries(log))


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
