"""The behaviour of docs/semantics.md (#the-state-machine, #write-order), case by case,
against real databases.

Every test runs on SQLite and on PostgreSQL (the `client` fixture). Hooks are driven by
`tests.scripted.Scripted`, whose calls are logged to a file, so each test states the
exact sequence of hook calls run after run. A few small actions below cover what the
scripted one cannot do in-process (a checkpoint before an error, a simulated crash, a
hook that looks at the persisted status while it runs).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bgtaskex import Action
from bgtaskex.client import Client
from bgtaskex.config import Settings
from bgtaskex.models import ActionStatus, TaskStatus, TaskType, run_order
from bgtaskex.registry import Registry
from bgtaskex.run.worker import Worker
from bgtaskex.store import Store
from tests.scripted import calls

SCRIPTED = "tests.scripted:Scripted"
NO_INIT = "tests.scripted:ScriptedNoInit"
NOOP = "tests.scripted:Noop"
HERE = __name__
RETRY_AT_ONCE = Settings(retry_delay=0.0)  # a dead execute is retried at the next run

Call = tuple[str, str]


# -- helpers -------------------------------------------------------------------------


def act(
    log: str,
    name: str = "A",
    *,
    ref: str = SCRIPTED,
    init: list[str] | None = None,
    change: list[str] | None = None,
    execute: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """A scripted action spec: `name` labels its calls in the log."""
    plan = {
        hook: steps
        for hook, steps in (("init", init), ("change", change), ("execute", execute))
        if steps is not None
    }
    return ref, {"name": name, "log": log, "plan": plan}


class Calls:
    """The hook calls logged since the previous `new()`."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.seen = 0

    def new(self) -> list[Call]:
        every = calls(self.log)
        fresh = every[self.seen :]
        self.seen = len(every)
        return fresh


def statuses(client: Client, task_id: int) -> tuple[str, list[str]]:
    task = client.get(task_id)
    return task.status, [a.status for a in task.actions]


def params(client: Client, task_id: int, rank: int = 1) -> dict[str, Any]:
    return next(a.params for a in client.get(task_id).actions if a.rank == rank)


def sql(store: Store, statement: str, **binds: Any) -> None:
    """Write the database behind the engine's back (corrupt states, simulated crashes)."""
    with store._engine.begin() as conn:
        conn.execute(text(statement), binds)


def new_status_events(client: Client, task_id: int) -> list[tuple[int | None, str | None]]:
    return [(e.rank, e.new_status) for e in client.events(task_id) if e.old_status != e.new_status]


# -- actions that the scripted one cannot stand in for -------------------------------


class SimulatedCrash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the runner catches it and
    nothing more is written, exactly as if the process had died inside the hook."""


class CheckpointThenFail(Action):
    """execute saves progress 1 with a checkpoint, reaches progress 2, then dies (raises
    RuntimeError, or SimulatedCrash when params['crash']); once recovered it succeeds."""

    def change_params_on_error(self) -> bool:
        self.params["progress_seen_on_recovery"] = self.params.get("progress")
        self.params["recovered"] = True
        return True

    def execute(self, deadline: float) -> bool:
        if self.params.get("recovered"):
            return True
        self.params["progress"] = 1
        self.checkpoint()
        self.params["progress"] = 2
        if self.params.get("crash"):
            raise SimulatedCrash
        raise RuntimeError("died after a checkpoint")


class CrashInExecute(Action):
    """The first execute dies like a killed process; later ones succeed."""

    def init_params(self) -> bool:
        self.params["init_calls"] = self.params.get("init_calls", 0) + 1
        return True

    def change_params_on_error(self) -> bool:
        self.params["change_calls"] = self.params.get("change_calls", 0) + 1
        return True

    def execute(self, deadline: float) -> bool:
        if "change_calls" not in self.params:
            self.params["dying"] = True
            raise SimulatedCrash
        return True


class StatusSpy(Action):
    """Writes to params['out'] the task status persisted in the database (read through a
    separate connection) at the moment each hook is called. The first execute raises."""

    def _seen(self, hook: str) -> None:
        other = Store(self.params["url"])
        try:
            (task,) = other.list_tasks()
            status = str(task.status)
        finally:
            other.close()
        with open(self.params["out"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps([hook, status]) + "\n")

    def init_params(self) -> bool:
        self._seen("init")
        return True

    def change_params_on_error(self) -> bool:
        self._seen("change")
        return True

    def execute(self, deadline: float) -> bool:
        first = not any(hook == "execute" for hook, _ in spied(Path(self.params["out"])))
        self._seen("execute")
        if first:
            raise RuntimeError("first execute dies")
        return True


class PauseAfterDeadline(Action):
    """execute works until just past the deadline, then pauses (returns False)."""

    def execute(self, deadline: float) -> bool:
        time.sleep(max(0.0, deadline - time.time()) + 0.05)
        self.params["paused"] = self.params.get("paused", 0) + 1
        return False


def spied(out: Path) -> list[list[str]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


# -- examples (from the original extension's own tests) -------------------------------


def test_example_one_action_execute_true(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log)])
    summary = client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("finished", ["done"])
    assert summary.finished == 1


def test_example_execute_false_then_true(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["false", "true"])])
    summary = client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("paused", ["active"])
    assert summary.paused == 1
    client.run_once()
    assert log.new() == [("A", "execute")]
    assert statuses(client, tid) == ("finished", ["done"])


def test_example_execute_raises_then_recovers(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["raise", "true"])])
    summary = client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("running", ["active"])
    assert summary.errors == 1
    client.run_once()
    assert log.new() == [("A", "change"), ("A", "execute")]
    assert statuses(client, tid) == ("finished", ["done"])


def test_example_execute_raises_and_change_gives_up(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["raise"], change=["false"])])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("running", ["active"])
    summary = client.run_once()
    assert log.new() == [("A", "change")]
    assert statuses(client, tid) == ("failed", ["failed"])
    assert summary.failed == 1


def test_example_init_raises(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, init=["raise"])])
    client.run_once()
    assert log.new() == [("A", "init")]
    assert statuses(client, tid) == ("starting", ["active"])
    client.run_once()
    assert log.new() == []
    assert statuses(client, tid) == ("failed", ["failed"])


def test_example_two_actions_fine(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A"), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute"), ("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["done", "done"])


# -- the "Processing one task" table, row by row ---------------------------------------


def test_created_takes_next_pending_action_by_rank(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A"), act(calls_log, "B"), act(calls_log, "C")])
    client.run_once()
    assert [name for name, _ in log.new()] == ["A", "A", "B", "B", "C", "C"]
    assert client.get(tid).current_rank == 3


def test_created_init_false_skips_and_chain_moves_on(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", init=["false"]), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init"), ("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["skipped", "done"])


def test_single_action_skipped_finishes_the_task(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, init=["false"])])
    client.run_once()
    assert log.new() == [("A", "init")]
    assert statuses(client, tid) == ("finished", ["skipped"])


def test_starting_found_fails_action_without_hook_and_moves_on(
    client: Client, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", init=["raise"]), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init")]
    assert statuses(client, tid) == ("starting", ["active", "pending"])
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("failed", ["failed", "done"])


def test_running_found_recovers_then_executes(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", execute=["raise", "true"]), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    client.run_once()
    assert log.new() == [("A", "change"), ("A", "execute"), ("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["done", "done"])
    # the recovery went through `recovering`, written before change_params_on_error
    assert [s for r, s in new_status_events(client, tid) if r is None] == [
        "created",
        "starting",
        "running",
        "recovering",
        "running",
        "starting",
        "running",
        "finished",
    ]


def test_running_found_change_false_fails_action_later_actions_run(
    client: Client, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue(
        "t",
        [act(calls_log, "A", execute=["raise"], change=["false"]), act(calls_log, "B")],
    )
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    client.run_once()
    assert log.new() == [("A", "change"), ("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("failed", ["failed", "done"])


def test_recovering_found_fails_action_without_hook_and_moves_on(
    client: Client, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue(
        "t", [act(calls_log, "A", execute=["raise"], change=["raise"]), act(calls_log, "B")]
    )
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    client.run_once()
    assert log.new() == [("A", "change")]
    assert statuses(client, tid) == ("recovering", ["active", "pending"])
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("failed", ["failed", "done"])


def test_paused_found_executes_again_without_init(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue(
        "t", [act(calls_log, "A", execute=["false", "false", "true"]), act(calls_log, "B")]
    )
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]  # paused: not taken again
    assert statuses(client, tid) == ("paused", ["active", "pending"])
    client.run_once()
    assert log.new() == [("A", "execute")]
    assert statuses(client, tid) == ("paused", ["active", "pending"])
    client.run_once()
    assert log.new() == [("A", "execute"), ("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["done", "done"])


def test_corrupt_status_fails_the_task(
    client: Client, store: Store, calls_log: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log)])
    sql(store, "UPDATE bgtaskex_tasks SET status = 'zombie' WHERE id = :id", id=tid)
    with caplog.at_level(logging.ERROR, logger="bgtaskex"):
        summary = client.run_once()
    assert log.new() == []
    task = client.get(tid)
    assert task.status == "failed"
    assert task.ended_at is not None
    assert summary.failed == 1
    last = client.events(tid)[-1]
    assert (last.old_status, last.new_status) == ("zombie", "failed")
    assert "corrupt" in last.message
    assert any(r.levelno >= logging.ERROR and "corrupt" in r.getMessage() for r in caplog.records)
    client.run_once()  # ended for good
    assert log.new() == []


def test_resumable_status_without_current_action_is_corrupt(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log)])
    sql(
        store,
        "UPDATE bgtaskex_tasks SET status = 'running', run_order = :o, current_rank = NULL "
        "WHERE id = :id",
        o=run_order(TaskType.CRON, TaskStatus.RUNNING),
        id=tid,
    )
    client.run_once()
    assert log.new() == []
    assert client.get(tid).status == "failed"
    assert "corrupt" in client.events(tid)[-1].message


def test_corrupt_task_does_not_stop_the_run(client: Client, store: Store, calls_log: str) -> None:
    log = Calls(calls_log)
    bad = client.enqueue("bad", [act(calls_log, "X")])
    good = client.enqueue("good", [act(calls_log, "G")])
    sql(store, "UPDATE bgtaskex_tasks SET status = 'zombie' WHERE id = :id", id=bad)
    client.run_once()
    assert log.new() == [("G", "init"), ("G", "execute")]
    assert client.get(bad).status == "failed"
    assert client.get(good).status == "finished"


def test_corrupt_params_fail_the_task_and_the_run_goes_on(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    bad = client.enqueue("bad", [act(calls_log, "X")])
    good = client.enqueue("good", [act(calls_log, "G")])
    cast = "CAST('[1, 2]' AS jsonb)" if store.dialect == "postgresql" else "'[1, 2]'"
    sql(store, f"UPDATE bgtaskex_actions SET params = {cast} WHERE task_id = :id", id=bad)
    client.run_once()
    assert log.new() == [("G", "init"), ("G", "execute")]
    assert client.get(good).status == "finished"
    assert client.get(bad).status == "failed"


def test_corrupt_type_does_not_stop_the_run(client: Client, store: Store, calls_log: str) -> None:
    log = Calls(calls_log)
    bad = client.enqueue("bad", [act(calls_log, "X")])
    good = client.enqueue("good", [act(calls_log, "G")])
    sql(store, "UPDATE bgtaskex_tasks SET type = 'batch' WHERE id = :id", id=bad)
    client.run_once()
    assert ("G", "execute") in log.new()
    assert client.get(good).status == "finished"


# -- brutal deaths: exceptions and simulated crashes ----------------------------------


def test_hook_exception_leaves_status_and_records_traceback(
    client: Client, calls_log: str, caplog: pytest.LogCaptureFixture
) -> None:
    tid = client.enqueue("t", [act(calls_log, execute=["raise", "true"])])
    with caplog.at_level(logging.WARNING, logger="bgtaskex"):
        summary = client.run_once()
    assert client.get(tid).status == "running"
    errors = [e for e in client.events(tid) if e.error]
    assert len(errors) == 1
    (event,) = errors
    assert event.run_id == summary.run_id
    assert event.rank == 1
    assert (event.old_status, event.new_status) == ("running", "running")
    assert "execute" in event.message and "RuntimeError" in event.message
    assert "A.execute scripted failure #1" in event.message
    assert event.error.startswith("Traceback (most recent call last)")
    assert "RuntimeError: A.execute scripted failure #1" in event.error
    assert "scripted.py" in event.error
    logged = [r for r in caplog.records if r.exc_info and "raised" in r.getMessage()]
    assert len(logged) == 1


def test_init_exception_event_keeps_starting(client: Client, calls_log: str) -> None:
    tid = client.enqueue("t", [act(calls_log, init=["raise"])])
    client.run_once()
    (event,) = [e for e in client.events(tid) if e.error]
    assert (event.old_status, event.new_status) == ("starting", "starting")
    assert "init_params" in event.message
    assert "RuntimeError: A.init scripted failure #1" in event.error


def test_change_exception_event_keeps_recovering(client: Client, calls_log: str) -> None:
    tid = client.enqueue("t", [act(calls_log, execute=["raise"], change=["raise"])])
    client.run_once()
    client.run_once()
    assert client.get(tid).status == "recovering"
    event = [e for e in client.events(tid) if e.error][-1]
    assert (event.old_status, event.new_status) == ("recovering", "recovering")
    assert "change_params_on_error" in event.message
    assert "RuntimeError: A.change scripted failure #1" in event.error


def test_hook_returning_non_bool_is_a_hook_error(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["none", "true"])])
    summary = client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert client.get(tid).status == "running"
    assert summary.errors == 1
    (event,) = [e for e in client.events(tid) if e.error]
    assert "True or False" in event.message and "None" in event.message
    assert "execute_calls" not in params(client, tid)  # not saved: the hook failed
    client.run_once()
    assert log.new() == [("A", "change"), ("A", "execute")]
    assert client.get(tid).status == "finished"


def test_params_not_json_is_a_hook_error(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["notjson", "true"])])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert client.get(tid).status == "running"
    (event,) = [e for e in client.events(tid) if e.error]
    assert "not JSON" in event.message
    saved = params(client, tid)
    assert "bad" not in saved and "execute_calls" not in saved
    assert saved["init_calls"] == 1
    client.run_once()
    assert log.new() == [("A", "change"), ("A", "execute")]
    assert client.get(tid).status == "finished"


def test_init_params_not_json_keeps_starting(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, init=["notjson"])])
    client.run_once()
    assert log.new() == [("A", "init")]
    assert client.get(tid).status == "starting"
    assert "init_calls" not in params(client, tid)
    client.run_once()
    assert log.new() == []
    assert statuses(client, tid) == ("failed", ["failed"])


def test_crash_in_execute_leaves_running_and_next_run_recovers(client: Client) -> None:
    """A process death (SimulatedCrash escapes the runner) ends where an exception does."""
    tid = client.enqueue("t", [(f"{HERE}:CrashInExecute", {})])
    with pytest.raises(SimulatedCrash):
        client.run_once()
    task = client.get(tid)
    assert task.status == "running"
    assert task.current_rank == 1
    assert task.actions[0].params == {"init_calls": 1}  # what init saved; not 'dying'
    assert not [e for e in client.events(tid) if e.error]  # a crash writes nothing
    client.run_once()  # the lock went with the crashed run
    task = client.get(tid)
    assert task.status == "finished"
    assert task.actions[0].params == {"init_calls": 1, "change_calls": 1}
    assert task.actions[0].attempts == 1


def test_crash_mid_init_written_with_sql_fails_action(
    client: Client, store: Store, calls_log: str
) -> None:
    """What a kill -9 inside init_params leaves: `starting`, current action active."""
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A"), act(calls_log, "B")])
    sql(
        store,
        "UPDATE bgtaskex_tasks SET status = 'starting', run_order = :o, current_rank = 1 "
        "WHERE id = :id",
        o=run_order(TaskType.CRON, TaskStatus.STARTING),
        id=tid,
    )
    sql(
        store,
        "UPDATE bgtaskex_actions SET status = 'active' WHERE task_id = :id AND rank = 1",
        id=tid,
    )
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("failed", ["failed", "done"])


def test_crash_mid_execute_written_with_sql_recovers(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A")])
    sql(
        store,
        "UPDATE bgtaskex_tasks SET status = 'running', run_order = :o, current_rank = 1 "
        "WHERE id = :id",
        o=run_order(TaskType.CRON, TaskStatus.RUNNING),
        id=tid,
    )
    sql(store, "UPDATE bgtaskex_actions SET status = 'active' WHERE task_id = :id", id=tid)
    client.run_once()
    assert log.new() == [("A", "change"), ("A", "execute")]
    assert statuses(client, tid) == ("finished", ["done"])


def test_each_status_is_written_before_its_hook(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    out = tmp_path / "seen.jsonl"
    tid = client.enqueue("t", [(f"{HERE}:StatusSpy", {"url": settings.url, "out": str(out)})])
    client.run_once()
    assert spied(out) == [["init", "starting"], ["execute", "running"]]
    client.run_once()
    assert spied(out)[2:] == [["change", "recovering"], ["execute", "running"]]
    assert client.get(tid).status == "finished"


# -- attempts ----------------------------------------------------------------------------


def test_max_attempts_deaths_fail_the_action(client: Client, calls_log: str) -> None:
    client.settings = client.settings._replace(max_attempts=3)
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", execute=["raise"]), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert client.get(tid).actions[0].attempts == 0
    for death in (1, 2):
        client.run_once()
        assert log.new() == [("A", "change"), ("A", "execute")]
        task = client.get(tid)
        assert task.status == "running"
        assert task.actions[0].attempts == death
    client.run_once()  # third death found: no more recovery
    assert log.new() == [("B", "init"), ("B", "execute")]
    task = client.get(tid)
    assert (task.status, [a.status for a in task.actions]) == ("failed", ["failed", "done"])
    assert task.actions[0].attempts == 3
    failed = [e for e in client.events(tid) if e.rank == 1 and e.new_status == "failed"]
    assert len(failed) == 1
    assert "max_attempts=3" in failed[0].message


def test_max_attempts_one_fails_at_first_death(client: Client, calls_log: str) -> None:
    client.settings = client.settings._replace(max_attempts=1)
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["raise", "true"])])
    client.run_once()
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("failed", ["failed"])
    assert client.get(tid).actions[0].attempts == 1


def test_an_action_class_may_survive_more_deaths_than_the_setting(
    client: Client, calls_log: str
) -> None:
    client.settings = client.settings._replace(max_attempts=2)
    tid = client.enqueue("t", [act(calls_log, ref="tests.scripted:Patient", execute=["raise"])])
    for _ in range(8):
        client.run_once()
    assert client.get(tid).status == "running"
    assert client.get(tid).actions[0].attempts == 7
    client.run_once()
    assert statuses(client, tid) == ("failed", ["failed"])
    failed = [e for e in client.events(tid) if e.rank == 1 and e.new_status == "failed"]
    assert "max_attempts=8" in failed[0].message


def test_note_adds_to_the_history_and_settings_are_the_runs(client: Client, calls_log: str) -> None:
    client.settings = client.settings._replace(max_attempts=7)
    tid = client.enqueue("t", [act(calls_log, execute=["note"])])
    client.run_once()
    assert statuses(client, tid) == ("finished", ["done"])
    notes = [e for e in client.events(tid) if e.message == "A.execute noted"]
    assert len(notes) == 1 and notes[0].rank == 1
    assert (notes[0].old_status, notes[0].new_status) == (None, None)
    assert params(client, tid)["max_attempts_setting"] == 7


def test_default_max_attempts_comes_from_settings(client: Client, calls_log: str) -> None:
    assert client.settings.max_attempts == 5
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["raise"])])
    for _ in range(5):
        client.run_once()
    assert client.get(tid).status == "running"
    assert client.get(tid).actions[0].attempts == 4
    client.run_once()
    assert statuses(client, tid) == ("failed", ["failed"])
    assert client.get(tid).actions[0].attempts == 5
    hooks = [hook for _, hook in log.new()]
    assert hooks.count("execute") == 5 and hooks.count("change") == 4


def test_attempts_counted_on_recovered_action(client: Client, calls_log: str) -> None:
    tid = client.enqueue("t", [act(calls_log, execute=["raise", "raise", "true"])])
    for _ in range(3):
        client.run_once()
    task = client.get(tid)
    assert (task.status, task.actions[0].status) == ("finished", "done")
    assert task.actions[0].attempts == 2


# -- params --------------------------------------------------------------------------------


def test_params_saved_when_hooks_return_normally(client: Client, calls_log: str) -> None:
    tid = client.enqueue("t", [act(calls_log, execute=["false", "true"])])
    initial = params(client, tid)
    assert "init_calls" not in initial
    client.run_once()
    assert params(client, tid) == {**initial, "init_calls": 1, "execute_calls": 1}
    client.run_once()
    assert params(client, tid)["execute_calls"] == 2


def test_params_of_init_false_and_change_false_are_saved(client: Client, calls_log: str) -> None:
    skipped = client.enqueue("s", [act(calls_log, "S", init=["false"])])
    gave_up = client.enqueue("g", [act(calls_log, "G", execute=["raise"], change=["false"])])
    client.run_once()
    client.run_once()
    assert params(client, skipped)["init_calls"] == 1
    assert params(client, gave_up)["change_calls"] == 1


def test_params_not_saved_when_a_hook_raises(client: Client, calls_log: str) -> None:
    tid = client.enqueue(
        "t", [act(calls_log, execute=["none", "raise", "true"], change=["true", "raise"])]
    )
    client.run_once()  # execute sets execute_calls, then fails by returning None
    saved = params(client, tid)
    assert saved["init_calls"] == 1 and "execute_calls" not in saved
    client.run_once()  # change returns True (saved), execute raises
    saved = params(client, tid)
    assert saved["change_calls"] == 1 and "execute_calls" not in saved
    client.run_once()  # change sets nothing and raises: recovering
    assert client.get(tid).status == "recovering"
    assert params(client, tid) == saved


def test_checkpoint_persists_params_mid_execute(client: Client) -> None:
    tid = client.enqueue("t", [(f"{HERE}:CheckpointThenFail", {})])
    client.run_once()
    task = client.get(tid)
    assert task.status == "running"
    assert task.actions[0].params == {"progress": 1}
    client.run_once()
    task = client.get(tid)
    assert task.status == "finished"
    assert task.actions[0].params == {
        "progress": 1,
        "progress_seen_on_recovery": 1,
        "recovered": True,
    }


def test_checkpoint_survives_a_crash(client: Client) -> None:
    tid = client.enqueue("t", [(f"{HERE}:CheckpointThenFail", {"crash": True})])
    with pytest.raises(SimulatedCrash):
        client.run_once()
    assert client.get(tid).actions[0].params == {"crash": True, "progress": 1}
    client.run_once()
    assert params(client, tid)["progress_seen_on_recovery"] == 1


# -- refs that no longer resolve ------------------------------------------------------------


def test_unknown_ref_at_run_time_fails_action_and_run_goes_on(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    bad = client.enqueue("bad", [act(calls_log, "A"), act(calls_log, "X"), act(calls_log, "B")])
    good = client.enqueue("good", [act(calls_log, "G")])
    sql(
        store,
        "UPDATE bgtaskex_actions SET ref = 'tests.scripted:Vanished' "
        "WHERE task_id = :id AND rank = 2",
        id=bad,
    )
    summary = client.run_once()
    assert log.new() == [
        ("A", "init"),
        ("A", "execute"),
        ("B", "init"),
        ("B", "execute"),
        ("G", "init"),
        ("G", "execute"),
    ]
    assert statuses(client, bad) == ("failed", ["done", "failed", "done"])
    assert client.get(good).status == "finished"
    assert (summary.failed, summary.finished) == (1, 1)
    (event,) = [e for e in client.events(bad) if e.rank == 2 and e.new_status == "failed"]
    assert event.old_status == "pending"
    assert "tests.scripted:Vanished" in event.message and "has no" in event.message


def test_ref_to_non_action_at_run_time_fails_action(
    client: Client, store: Store, calls_log: str
) -> None:
    tid = client.enqueue("t", [act(calls_log)])
    sql(
        store,
        "UPDATE bgtaskex_actions SET ref = 'tests.scripted:NotAnAction' WHERE task_id = :id",
        id=tid,
    )
    client.run_once()
    assert calls(calls_log) == []
    assert statuses(client, tid) == ("failed", ["failed"])
    assert "not a subclass" in client.events(tid)[-2].message


def test_undeclared_module_at_run_time_leaves_the_task_waiting(
    client: Client, calls_log: str
) -> None:
    """A deploy slip (a module not declared to this runner) leaves the task as it was,
    and the run goes on with the other tasks and says which module it missed."""
    tid = client.enqueue("t", [act(calls_log)])
    other = client.enqueue("other", ["bgtaskex.examples:NothingToDo"])
    restricted = Client(client.store, Registry(entry_points=False), client.settings)
    summary = restricted.run_once()
    assert calls(calls_log) == []
    assert statuses(client, tid) == ("created", ["pending"])
    assert client.get(tid).actions[0].attempts == 0
    assert statuses(client, other) == ("finished", ["skipped"])
    assert (summary.left_waiting, summary.missing_modules) == (1, ("tests.scripted",))
    assert "left waiting" in summary.line()
    client.run_once()  # declared again: it runs
    assert calls(calls_log) == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("finished", ["done"])


def test_paused_action_whose_module_vanished_is_left_waiting(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", execute=["false"]), act(calls_log, "B")])
    client.run_once()
    assert log.new() == [("A", "init"), ("A", "execute")]
    sql(
        store,
        "UPDATE bgtaskex_actions SET ref = 'tests.nowhere:Gone' WHERE task_id = :id AND rank = 1",
        id=tid,
    )
    summary = client.run_once()
    assert log.new() == []
    assert statuses(client, tid) == ("paused", ["active", "pending"])
    assert summary.missing_modules == ("tests.nowhere",)


def test_running_action_whose_module_vanished_counts_no_death(
    client: Client, store: Store, calls_log: str
) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", execute=["raise"])])
    client.run_once()
    sql(store, "UPDATE bgtaskex_actions SET ref = 'tests.nowhere:Gone' WHERE task_id = :id", id=tid)
    log.new()
    for _ in range(3):
        assert client.run_once().left_waiting == 1
    assert log.new() == []
    assert statuses(client, tid) == ("running", ["active"])
    assert client.get(tid).actions[0].attempts == 0


def test_chain_whose_second_module_is_missing_keeps_the_first_action_done(
    client: Client, calls_log: str
) -> None:
    """What the run did before the missing module is kept; the task waits between
    actions (created), attempts unchanged."""
    log = Calls(calls_log)
    tid = client.enqueue("t", [("bgtaskex.examples:NothingToDo", {}), act(calls_log, "B")])
    restricted = Client(client.store, Registry(entry_points=False), client.settings)
    assert restricted.run_once().left_waiting == 1
    assert log.new() == []
    assert statuses(client, tid) == ("created", ["skipped", "pending"])
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["skipped", "done"])


# -- the order of a run ---------------------------------------------------------------------


def _prepare(store: Store, registry: Registry, task_id: int, times: int = 1) -> None:
    """Process one task alone with the real state machine, to bring it to a status."""
    for _ in range(times):
        worker = Worker(store, registry, deadline=time.time() + 30, settings=RETRY_AT_ONCE)
        worker.work_on(store.get_task(task_id))


def test_run_order_types_then_statuses_then_oldest(
    client: Client, store: Store, calls_log: str
) -> None:
    def two(first: tuple[str, dict[str, Any]], name: str) -> list[tuple[str, dict[str, Any]]]:
        # a second action shows, by its hooks, when a task whose first action calls no
        # hook (starting, recovering) was processed
        return [first, act(calls_log, name + "+next")]

    c1 = client.enqueue("c1", two(act(calls_log, "C1"), "C1"))
    paused = client.enqueue("p", two(act(calls_log, "P", execute=["false", "true"]), "P"))
    running = client.enqueue("r", two(act(calls_log, "R", execute=["raise", "true"]), "R"))
    recovering = client.enqueue(
        "rc", two(act(calls_log, "RC", execute=["raise"], change=["raise"]), "RC")
    )
    starting = client.enqueue("s", two(act(calls_log, "S", init=["raise"]), "S"))
    c2 = client.enqueue("c2", two(act(calls_log, "C2"), "C2"))
    i_created = client.enqueue("i", two(act(calls_log, "I"), "I"), type="interactive")
    i_paused = client.enqueue(
        "ip", two(act(calls_log, "IP", execute=["false", "true"]), "IP"), type="interactive"
    )
    i_starting = client.enqueue(
        "is", two(act(calls_log, "IS", init=["raise"]), "IS"), type="interactive"
    )
    for tid in (paused, running, starting, i_paused, i_starting):
        _prepare(store, client.registry, tid)
    _prepare(store, client.registry, recovering, times=2)
    expected_status = {
        c1: "created",
        paused: "paused",
        running: "running",
        recovering: "recovering",
        starting: "starting",
        c2: "created",
        i_created: "created",
        i_paused: "paused",
        i_starting: "starting",
    }
    assert {tid: client.get(tid).status for tid in expected_status} == expected_status

    log = Calls(calls_log)
    log.new()
    client.run_once()
    firsts: list[str] = []
    for name, _hook in log.new():
        task = name.removesuffix("+next")
        if task not in firsts:
            firsts.append(task)
    assert firsts == ["IS", "IP", "I", "S", "RC", "R", "P", "C1", "C2"]
    assert all(client.get(tid).status in ("finished", "failed") for tid in expected_status)


def test_interactive_before_cron_then_oldest_first(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    client.enqueue("a", [act(calls_log, "cron1", ref=NO_INIT)])
    client.enqueue("b", [act(calls_log, "inter1", ref=NO_INIT)], type="interactive")
    client.enqueue("c", [act(calls_log, "cron2", ref=NO_INIT)])
    client.enqueue("d", [act(calls_log, "inter2", ref=NO_INIT)], type="interactive")
    client.run_once()
    assert [name for name, _ in log.new()] == ["inter1", "inter2", "cron1", "cron2"]


# -- deadlines and the run going on -----------------------------------------------------------


def test_no_action_starts_after_the_deadline(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, "A", execute=["sleep:0.3"]), act(calls_log, "B")])
    summary = client.run_once(max_execution_time=0.2)
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert statuses(client, tid) == ("created", ["done", "pending"])
    assert summary.paused == 1
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]
    assert statuses(client, tid) == ("finished", ["done", "done"])


def test_no_task_starts_after_the_deadline(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    first = client.enqueue("first", [act(calls_log, "A", execute=["sleep:0.3"])])
    second = client.enqueue("second", [act(calls_log, "B")])
    client.run_once(max_execution_time=0.2)
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert client.get(first).status == "finished"
    assert statuses(client, second) == ("created", ["pending"])
    client.run_once()
    assert log.new() == [("B", "init"), ("B", "execute")]


def test_execute_deadline_is_the_run_deadline(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, execute=["until-deadline", "true"])])
    began = time.time()
    client.run_once(max_execution_time=0.3)
    assert 0.25 <= time.time() - began < 5
    assert log.new() == [("A", "init"), ("A", "execute")]
    assert client.get(tid).status == "paused"


def test_pause_because_the_deadline_came_ends_the_run(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    paused = client.enqueue("p", [(f"{HERE}:PauseAfterDeadline", {})])
    later = client.enqueue("l", [act(calls_log, "L")])
    summary = client.run_once(max_execution_time=0.2)
    assert client.get(paused).status == "paused"
    assert params(client, paused) == {"paused": 1}
    assert log.new() == []
    assert statuses(client, later) == ("created", ["pending"])
    assert (summary.paused, summary.finished) == (1, 0)


def test_pause_before_deadline_does_not_stop_the_run(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    paused = client.enqueue("p", [act(calls_log, "P", execute=["false", "true"])])
    other = client.enqueue("o", [act(calls_log, "O")])
    summary = client.run_once()
    assert log.new() == [("P", "init"), ("P", "execute"), ("O", "init"), ("O", "execute")]
    assert client.get(paused).status == "paused"
    assert client.get(other).status == "finished"
    assert (summary.paused, summary.finished) == (1, 1)


def test_erroring_task_does_not_stop_the_run(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    broken = client.enqueue("x", [act(calls_log, "X", execute=["raise", "true"])])
    init_broken = client.enqueue("y", [act(calls_log, "Y", init=["raise"])])
    other = client.enqueue("o", [act(calls_log, "O")])
    summary = client.run_once()
    assert log.new() == [
        ("X", "init"),
        ("X", "execute"),
        ("Y", "init"),
        ("O", "init"),
        ("O", "execute"),
    ]
    assert client.get(broken).status == "running"
    assert client.get(init_broken).status == "starting"
    assert client.get(other).status == "finished"
    assert (summary.errors, summary.finished) == (2, 1)


# -- event history -----------------------------------------------------------------------------


def test_events_record_each_transition_with_run_id(client: Client, calls_log: str) -> None:
    tid = client.enqueue("t", [act(calls_log, execute=["false", "true"])])
    run1 = client.run_once()
    run2 = client.run_once()
    assert run1.run_id != run2.run_id
    got = [(e.run_id, e.rank, e.old_status, e.new_status) for e in client.events(tid)]
    assert got == [
        (None, None, None, "created"),
        (run1.run_id, 1, "pending", "active"),
        (run1.run_id, None, "created", "starting"),
        (run1.run_id, None, "starting", "running"),
        (run1.run_id, None, "running", "paused"),
        (run2.run_id, None, "paused", "running"),
        (run2.run_id, 1, "active", "done"),
        (run2.run_id, None, "running", "finished"),
    ]
    events = client.events(tid)
    assert all(e.task_id == tid and e.error is None for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    assert all(e.message for e in events if e.rank is None)


def test_events_of_skipped_and_failed_actions(client: Client, calls_log: str) -> None:
    tid = client.enqueue(
        "t", [act(calls_log, "A", init=["false"]), act(calls_log, "B", init=["raise"])]
    )
    client.run_once()
    client.run_once()
    got = [(e.rank, e.old_status, e.new_status) for e in client.events(tid) if e.rank]
    assert got == [
        (1, "pending", "active"),
        (1, "active", "skipped"),
        (2, "pending", "active"),
        (2, "starting", "starting"),  # the init_params exception
        (2, "active", "failed"),
    ]
    assert client.get(tid).status == "failed"


def test_no_starting_write_when_init_params_not_overridden(client: Client, calls_log: str) -> None:
    log = Calls(calls_log)
    tid = client.enqueue("t", [act(calls_log, ref=NO_INIT)])
    client.run_once()
    assert log.new() == [("A", "execute")]
    assert client.get(tid).status == "finished"
    assert not [e for e in client.events(tid) if e.new_status == "starting"]
    assert [e.new_status for e in client.events(tid) if e.rank is None] == [
        "created",
        "running",
        "finished",
    ]


# -- how much a run writes --------------------------------------------------------------------


def _count_applies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = Store.apply

    def counting(self: Store, change: Any) -> None:
        count[0] += 1
        real(self, change)

    monkeypatch.setattr(Store, "apply", counting)
    return count


def test_noop_single_action_task_costs_two_commits(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = client.enqueue("t", [NOOP])
    count = _count_applies(monkeypatch)
    client.run_once()
    assert client.get(tid).status == "finished"
    assert count[0] == 2


def test_action_with_init_costs_three_commits(
    client: Client, calls_log: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tid = client.enqueue("t", [act(calls_log)])
    count = _count_applies(monkeypatch)
    client.run_once()
    assert client.get(tid).status == "finished"
    assert count[0] == 3  # starting, running, finished


def test_run_with_nothing_due_writes_nothing(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = _count_applies(monkeypatch)
    summary = client.run_once()
    assert count[0] == 0
    assert (summary.finished, summary.failed, summary.paused, summary.errors) == (0, 0, 0, 0)


def test_ended_tasks_are_kept_with_actions_and_events(client: Client, calls_log: str) -> None:
    done = client.enqueue("done", [act(calls_log, "A")])
    failed = client.enqueue("failed", [act(calls_log, "B", init=["raise"])])
    client.run_once()
    client.run_once()
    assert client.get(done).status == TaskStatus.FINISHED
    assert client.get(failed).status == TaskStatus.FAILED
    for tid in (done, failed):
        task = client.get(tid)
        assert task.ended_at is not None
        assert len(task.actions) == 1
        assert task.actions[0].status in (ActionStatus.DONE, ActionStatus.FAILED)
        assert task.actions[0].ended_at is not None
        assert len(client.events(tid)) >= 3
