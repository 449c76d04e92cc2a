"""Real crashes of `bgtaskex run-once`, then recovery by the next run, as
docs/semantics.md#write-order says: each status is written before the hook it announces, so
the status found after a crash tells the next run what happened.

The scripted action dies with os._exit(3) inside a hook ("exit", "checkpoint-exit"), or
the test kills the process with SIGKILL from outside while execute is working.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import (
    Bgx,
    describe,
    hook_started,
    hooks,
    lock_is_free,
    scripted,
    summary,
    wait_until,
)

HOOK_EXIT_CODE = 3  # what tests.scripted's "exit" passes to os._exit


class Scenario:
    """One task of one scripted action on one database, and the runs that process it."""

    def __init__(self, bgx: Bgx, url: str, tmp_path: Path, plan: dict[str, list[str]]) -> None:
        self.bgx = bgx
        self.url = url
        self.log = tmp_path / "calls.jsonl"
        self.lock = tmp_path / "run.lock"
        added = bgx.ok(*self.options, "enqueue", "crashy", scripted(self.log, plan), "--quiet")
        self.task_id = int(added.stdout)

    @property
    def options(self) -> tuple[str, ...]:
        return ("--database-url", self.url, "--import", "tests.scripted")

    def run_args(self, *more: str) -> tuple[str, ...]:
        return (*self.options, "run-once", "--lock-file", str(self.lock), *more)

    def run(self) -> subprocess.CompletedProcess[str]:
        return self.bgx(*self.run_args())

    def died(self) -> None:
        """A run that must die inside the hook, with the hook's exit code."""
        result = self.run()
        assert result.returncode == HOOK_EXIT_CODE, describe(result)
        assert result.stdout == "", describe(result)  # died before any summary

    def recovered(self) -> dict[str, float]:
        result = self.run()
        assert result.returncode == 0, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        return summary(result)

    def task(self) -> dict[str, Any]:
        return self.bgx.show(self.url, self.task_id)

    def action(self) -> dict[str, Any]:
        (action,) = self.task()["actions"]
        return action  # type: ignore[no-any-return]


def test_init_params_died(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """`starting` found: the action is hopeless, it fails and no hook is called."""
    s = Scenario(bgx, db_url, tmp_path, {"init": ["exit", "true"]})
    s.died()
    task = s.task()
    assert (task["status"], task["current_rank"]) == ("starting", 1)
    assert task["actions"][0]["status"] == "active"
    assert hooks(s.log) == ["init"]

    counts = s.recovered()
    assert (counts["failed"], counts["finished"], counts["actions"]) == (1, 0, 0)
    assert hooks(s.log) == ["init"], "no hook may be called for an action whose init died"
    task = s.task()
    assert task["status"] == "failed"
    assert task["ended_at"] is not None
    assert task["actions"][0]["status"] == "failed"
    assert "init_calls" not in task["actions"][0]["params"]


def test_execute_died(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """`running` found: change_params_on_error, then execute again."""
    s = Scenario(bgx, db_url, tmp_path, {"execute": ["exit", "true"]})
    s.died()
    task = s.task()
    assert (task["status"], task["current_rank"]) == ("running", 1)
    action = task["actions"][0]
    assert (action["status"], action["attempts"]) == ("active", 0)
    # init returned normally: its params were saved; execute's never were.
    assert action["params"]["init_calls"] == 1
    assert "execute_calls" not in action["params"]
    assert hooks(s.log) == ["init", "execute"]

    counts = s.recovered()
    assert (counts["finished"], counts["failed"], counts["actions"]) == (1, 0, 1)
    assert hooks(s.log) == ["init", "execute", "change", "execute"]
    task = s.task()
    assert task["status"] == "finished"
    action = task["actions"][0]
    assert (action["status"], action["attempts"]) == ("done", 1)
    assert (action["params"]["change_calls"], action["params"]["execute_calls"]) == (1, 2)
    assert any(e["new_status"] == "recovering" for e in task["events"])


def test_change_params_on_error_died(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """`recovering` found: the action fails and no hook is called."""
    s = Scenario(bgx, db_url, tmp_path, {"execute": ["exit"], "change": ["exit"]})
    s.died()
    assert s.task()["status"] == "running"
    s.died()
    task = s.task()
    assert (task["status"], task["current_rank"]) == ("recovering", 1)
    assert task["actions"][0]["attempts"] == 1
    assert hooks(s.log) == ["init", "execute", "change"]

    counts = s.recovered()
    assert (counts["failed"], counts["finished"], counts["actions"]) == (1, 0, 0)
    assert hooks(s.log) == ["init", "execute", "change"], "no hook after change died"
    task = s.task()
    assert task["status"] == "failed"
    assert task["actions"][0]["status"] == "failed"


def test_checkpointed_params_survive_a_crash(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    s = Scenario(bgx, db_url, tmp_path, {"execute": ["checkpoint-exit", "true"]})
    s.died()
    task = s.task()
    assert task["status"] == "running"
    params = task["actions"][0]["params"]
    assert (params["checkpointed"], params["execute_calls"]) == (1, 1)

    counts = s.recovered()
    assert counts["finished"] == 1
    assert hooks(s.log) == ["init", "execute", "change", "execute"]
    action = s.action()
    assert action["status"] == "done"
    params = action["params"]
    assert params["checkpointed"] == 1, "the checkpoint before the crash was lost"
    assert (params["change_calls"], params["execute_calls"]) == (1, 2)


def test_sigkill_during_execute(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """kill -9 from outside while execute works: the kernel drops the lock, the next run
    recovers the action (change_params_on_error, then execute)."""
    s = Scenario(bgx, db_url, tmp_path, {"execute": ["until-deadline", "true"]})
    proc = bgx.start(*s.run_args("--max-execution-time", "120"))
    wait_until(hook_started(s.log, "execute", proc.pid), "execute to start", proc=proc)
    assert not lock_is_free(s.lock), "the running run must hold the lock"

    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert lock_is_free(s.lock), "the kernel must release the lock of a killed run"
    task = s.task()
    assert task["status"] == "running"
    assert (task["actions"][0]["status"], task["actions"][0]["attempts"]) == ("active", 0)

    result = s.run()  # no --wait: the lock must be free at once
    assert result.returncode == 0, describe(result)
    assert "another run" not in result.stdout
    assert summary(result)["finished"] == 1
    assert hooks(s.log) == ["init", "execute", "change", "execute"]
    action = s.action()
    assert (action["status"], action["attempts"]) == ("done", 1)


def test_max_attempts_fails_instead_of_recovering_again(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """max_attempts (here 2, from BGTASKEX_MAX_ATTEMPTS) bounds how many times execute is
    tried: after its second brutal death the action fails, with no hook called."""
    s = Scenario(bgx, sqlite_url, tmp_path, {"execute": ["exit"]})
    s.bgx.env["BGTASKEX_MAX_ATTEMPTS"] = "2"
    s.died()  # execute, death 1
    s.died()  # change_params_on_error, execute, death 2
    assert hooks(s.log) == ["init", "execute", "change", "execute"]
    assert s.task()["status"] == "running"

    counts = s.recovered()
    assert (counts["failed"], counts["actions"]) == (1, 0)
    assert hooks(s.log) == ["init", "execute", "change", "execute"]
    action = s.action()
    assert (action["status"], action["attempts"]) == ("failed", 2)
    assert s.task()["status"] == "failed"
