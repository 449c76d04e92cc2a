"""Retry backoff and snooze (docs/semantics.md#retry-backoff), with the real clock and
short delays, on SQLite (the logic; the due query's not_before is tested on every backend
by the ENQUEUE tests): a task whose execute died is not taken again before its delay, is
taken after it, the delay doubles at each death up to max_retry_delay; a crash counts one
death however long the task then waits; a snoozed task counts none.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtaskex import Action
from bgtaskex.builtin.retention import PurgeRows
from bgtaskex.client import Client
from bgtaskex.exceptions import DatabaseUnavailable, InvalidRef
from bgtaskex.registry import Registry
from tests.scripted import calls

SCRIPTED = "tests.scripted:Scripted"
HERE = __name__
DELAY = 0.4  # retry_delay of these tests (jitter: +-10%)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bgtaskex.db'}"


@pytest.fixture
def backoff(client: Client) -> Client:
    client.settings = client.settings._replace(
        retry_delay=DELAY, max_retry_delay=2 * DELAY, max_attempts=10
    )
    return client


def scripted(log: str, **plan: list[str]) -> tuple[str, dict[str, Any]]:
    return SCRIPTED, {"name": "A", "log": log, "plan": plan}


def wait_taken(client: Client, task_id: int, timeout: float = 5.0) -> float:
    """Run until a run calls a hook of the task; the seconds it took. Each run before
    must have called nothing."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        summary = client.run_once()
        if summary.actions or summary.failed or summary.finished:
            return time.monotonic() - began
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} not taken within {timeout}s")


def delay_of(client: Client, task_id: int) -> float:
    """Seconds from now until the task's not_before."""
    not_before = client.get(task_id).not_before
    assert not_before is not None
    return (not_before - datetime.now(UTC)).total_seconds()


def run_until_taken(client: Client, timeout: float = 5.0) -> tuple[datetime, datetime]:
    """Run until a run calls a hook; the clock before and after that run (whatever it
    wrote, it wrote between them). Each run before must have called nothing."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        before = datetime.now(UTC)
        summary = client.run_once()
        if summary.actions or summary.failed or summary.finished:
            return before, datetime.now(UTC)
        time.sleep(0.02)
    raise AssertionError(f"no task taken within {timeout}s")


def test_a_raised_execute_waits_its_delay_which_doubles_up_to_the_cap(
    backoff: Client, calls_log: str
) -> None:
    """The delay set at each death, bracketed by the clock around the run that set it
    (a loaded machine stretches the run, not the bracket): ±10% of retry_delay, doubled
    at each death, capped; and no run takes the task before it."""
    task_id = backoff.enqueue("t", [scripted(calls_log, execute=["raise"] * 4 + ["true"])])
    around = run_until_taken(backoff)  # execute raises: death 1 to be counted, in DELAY
    expected = [DELAY, 2 * DELAY, 2 * DELAY, 2 * DELAY]  # doubled, then capped
    for death, delay in enumerate(expected, start=1):
        task = backoff.get(task_id)
        assert task.status == "running"
        assert task.actions[0].last_failure == f"RuntimeError: A.execute scripted failure #{death}"
        assert task.not_before is not None
        longest = (task.not_before - around[0]).total_seconds()
        shortest = (task.not_before - around[1]).total_seconds()
        assert longest >= 0.9 * delay - 0.01 and shortest <= 1.1 * delay + 0.01, (death, delay)
        if datetime.now(UTC) < task.not_before - timedelta(seconds=0.05):
            assert backoff.run_once().actions == 0, "taken before its delay"
        around = run_until_taken(backoff)
    task = backoff.get(task_id)
    assert (task.status, task.actions[0].attempts) == ("finished", 4)
    assert task.not_before is None
    assert task.actions[0].last_failure is None  # the last execute did not die


def test_change_params_on_error_is_told_why_execute_died(backoff: Client, calls_log: str) -> None:
    task_id = backoff.enqueue("t", [scripted(calls_log, execute=["raise", "true"])])
    backoff.run_once()
    wait_taken(backoff, task_id)
    action = backoff.get(task_id).actions[0]
    assert action.status == "done"
    assert action.params["last_failure"] == "RuntimeError: A.execute scripted failure #1"


def test_a_crash_counts_one_death_then_waits_its_delay(
    backoff: Client, calls_log: str, tmp_path: Path
) -> None:
    """A process that died in execute: the next run counts the death (last_failure
    "crash"), calls change_params_on_error, and leaves the task paused until the delay;
    the run after it calls execute without counting another death."""
    task_id = backoff.enqueue("t", [scripted(calls_log, execute=["kill", "true"])])
    died = _run_in_subprocess(backoff, tmp_path)
    assert died == -signal.SIGKILL
    assert backoff.get(task_id).status == "running"

    backoff.run_once()  # finds running: the death, change, then the delay
    task = backoff.get(task_id)
    action = task.actions[0]
    assert (task.status, action.attempts, action.last_failure) == ("paused", 1, "crash")
    assert action.params["last_failure"] == "crash"
    assert [h for _, h in calls(calls_log)] == ["init", "execute", "change"]
    left = delay_of(backoff, task_id)
    assert 0.8 * DELAY < left <= 1.1 * DELAY + 0.05
    assert backoff.run_once().actions == 0, "taken before its delay"
    wait_taken(backoff, task_id)
    task = backoff.get(task_id)
    assert (task.status, task.actions[0].attempts) == ("finished", 1)
    assert [h for _, h in calls(calls_log)] == ["init", "execute", "change", "execute"]


def _run_in_subprocess(client: Client, tmp_path: Path) -> int:
    """`bgtaskex run-once` in a process of its own (which the action may kill)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGTASKEX_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    command = [
        sys.executable, "-m", "bgtaskex", "--database-url", client.settings.url,
        "--import", "tests.scripted", "run-once", "--lock-file", str(client.settings.lock_path),
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, timeout=60).returncode


class NoBackoff(Action):
    retry_delay = 0.0

    def execute(self, deadline: float) -> bool:
        if not self.params.get("raised"):
            self.params["raised"] = True
            self.checkpoint()
            raise RuntimeError("once")
        return True


def test_an_action_class_overrides_the_delay_and_purge_rows_retries_at_once(
    backoff: Client,
) -> None:
    assert PurgeRows.retry_delay == 0  # its chunk halving is its backoff
    task_id = backoff.enqueue("t", [(f"{HERE}:NoBackoff", {})])
    backoff.run_once()
    assert backoff.get(task_id).not_before is None
    assert backoff.run_once().finished == 1


class SlippedDelay(Action):
    """Its retry_delay becomes "30s" (the config's syntax, a slip) after it was enqueued."""

    def execute(self, deadline: float) -> bool:
        raise RuntimeError("dies")


@pytest.mark.parametrize(
    ("name", "value"),
    [("retry_delay", "30s"), ("retry_delay", -5), ("max_retry_delay", float("nan")),
     ("max_attempts", "3")],
)  # fmt: skip
def test_an_action_class_with_a_bad_backoff_attribute_is_an_invalid_ref(
    backoff: Client, monkeypatch: pytest.MonkeyPatch, name: str, value: object
) -> None:
    """Attack #14 finding 13: such a class failed in the backoff at every run, before
    writing anything, the task stuck for ever. Now enqueue refuses it, and a run that finds
    it in a task enqueued before (a new deploy) fails its action as any invalid ref."""
    ref = f"{HERE}:SlippedDelay"
    task_id = backoff.enqueue("t", [(ref, {})])
    monkeypatch.setattr(SlippedDelay, name, value)
    backoff.registry = Registry(trust_refs=True)  # the class as a new deploy imports it
    summary = backoff.run_once()
    task = backoff.get(task_id)
    assert (summary.failed, task.status, task.actions[0].status) == (1, "failed", "failed")
    why = f"SlippedDelay.{name} = {value!r}: expected"
    assert any(why in (event.message or "") for event in backoff.events(task_id))
    with pytest.raises(InvalidRef, match=re.escape(why)):
        backoff.enqueue("t", [(ref, {})])


class Snoozes(Action):
    def execute(self, deadline: float) -> bool:
        self.params["calls"] = self.params.get("calls", 0) + 1
        if self.params["calls"] == 1:
            return self.snooze(DELAY)
        return True


def test_snooze_pauses_the_task_until_then_without_counting_an_attempt(
    backoff: Client,
) -> None:
    task_id = backoff.enqueue("t", [(f"{HERE}:Snoozes", {})])
    backoff.run_once()
    task = backoff.get(task_id)
    action = task.actions[0]
    assert (task.status, action.attempts, action.params["calls"]) == ("paused", 0, 1)
    left = delay_of(backoff, task_id)
    assert DELAY - 0.1 < left <= DELAY
    assert backoff.run_once().actions == 0, "taken before the snooze ended"
    waited = wait_taken(backoff, task_id)
    assert waited >= left - 0.05
    task = backoff.get(task_id)
    assert (task.status, task.actions[0].attempts, task.actions[0].params["calls"]) == (
        "finished",
        0,
        2,
    )


class CheckpointsOnce(Action):
    def execute(self, deadline: float) -> bool:
        self.params["calls"] = self.params.get("calls", 0) + 1
        self.checkpoint()  # the first one finds the database gone
        return True


class CatchesTheOutageThenFails(Action):
    def execute(self, deadline: float) -> bool:
        with contextlib.suppress(DatabaseUnavailable):
            self.checkpoint()  # finds the database gone; the action goes on without it
        raise ValueError("its own bug")


def test_a_storage_outage_under_a_checkpoint_counts_no_death(
    backoff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's own write failed inside execute (a checkpoint could not reach the
    database): not the action's fault. The error is recorded as "storage: ..." and the
    next run calls execute again at once, counting no death and no delay."""
    store = backoff.store
    real_apply = store.apply
    failures = []

    def apply(*changes: Any) -> None:
        checkpoint = len(changes) == 1 and changes[0].status is None and changes[0].actions
        if checkpoint and changes[0].actions[0].params is not None and not failures:
            failures.append(changes)
            raise DatabaseUnavailable("the database went away")
        real_apply(*changes)

    monkeypatch.setattr(store, "apply", apply)
    task_id = backoff.enqueue("t", [(f"{HERE}:CheckpointsOnce", {})])
    assert backoff.run_once().errors == 1
    task = backoff.get(task_id)
    action = task.actions[0]
    assert task.status == "running" and task.not_before is None
    assert action.last_failure == "storage: DatabaseUnavailable: the database went away"
    assert backoff.run_once().finished == 1
    action = backoff.get(task_id).actions[0]
    # (the params of the execute that died were not saved: `calls` starts again)
    assert (action.attempts, action.params["calls"], action.last_failure) == (0, 1, None)


def test_an_execute_that_survived_an_outage_and_then_raised_its_own_error_counts_a_death(
    backoff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outage is only the cause when the error comes from it: an action that caught
    its failed checkpoint and later raised an error of its own dies of that error (a
    death, a delay), not of "storage" (retried for ever without counting)."""
    store = backoff.store
    real_apply = store.apply

    def apply(*changes: Any) -> None:
        checkpoint = len(changes) == 1 and changes[0].status is None and changes[0].actions
        if checkpoint and changes[0].actions[0].params is not None:
            raise DatabaseUnavailable("the database went away")
        real_apply(*changes)

    monkeypatch.setattr(store, "apply", apply)
    task_id = backoff.enqueue("t", [(f"{HERE}:CatchesTheOutageThenFails", {})])
    assert backoff.run_once().errors == 1
    task = backoff.get(task_id)
    assert task.actions[0].last_failure == "ValueError: its own bug"
    assert task.not_before is not None  # the retry delay of a death
    wait_taken(backoff, task_id)
    assert backoff.get(task_id).actions[0].attempts == 1
