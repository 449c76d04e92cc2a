"""`history = "failures"` (#17): a run leaves the routine status changes out of the
history, and keeps every failure, death, retry, hook error and note, and the events of
enqueue and of the operators."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.models import NewEvent, TaskStatus, TaskType, run_order
from tests.integration.test_semantics import act, sql

NOOP = "tests.scripted:Noop"


def _history(settings: Settings, history: str, actions: list[tuple[str, dict]]) -> list:
    with connect(settings=settings._replace(history=history, max_attempts=1)) as client:
        task_id = client.enqueue("h", actions)
        client.run_once()
        client.run_once()  # an action that raised is failed by the next run (max_attempts=1)
        return [(e.rank, e.old_status, e.new_status, e.error) for e in client.events(task_id)]


def test_a_task_that_finishes_keeps_only_its_enqueue(settings: Settings) -> None:
    kept = _history(settings, "FAILURES", [(NOOP, {}), (NOOP, {})])
    assert [new for _, _, new, _ in kept] == ["created"]
    every = _history(settings, "ALL", [(NOOP, {}), (NOOP, {})])
    assert len(every) > 4 and every[0] == kept[0]  # the default records each step


def test_a_failure_and_a_note_are_kept(settings: Settings, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.jsonl")
    chain = [act(log, "A", execute=["note"]), act(log, "B", execute=["raise"])]
    kept = _history(settings, "FAILURES", chain)
    assert kept[0][2] == "created"
    assert (1, None, None, None) in kept  # A's note
    failed = [(rank, new) for rank, _, new, error in kept if new == "failed"]
    assert failed == [(2, "failed"), (None, "failed")]  # action B, then the task
    assert all(new in (None, "failed") or new == old for _, old, new, _ in kept[1:])


def test_a_crash_before_change_params_on_error_is_kept(settings: Settings, tmp_path: Path) -> None:
    """A process death in execute (kill -9: no error event) is recorded by the next run
    alone, with its move to `recovering` when the action has a change_params_on_error:
    that event is the death's, not a routine step, and stays in the history."""
    log = str(tmp_path / "calls.jsonl")
    with connect(settings=settings._replace(history="FAILURES")) as client:
        task_id = client.enqueue("h", [act(log, "A")])
        order = run_order(TaskType.CRON, TaskStatus.RUNNING)
        sql(
            client.store,
            "UPDATE bgtaskex_tasks SET status = 'running', run_order = :o, current_rank = 1 "
            "WHERE id = :id",
            o=order,
            id=task_id,
        )
        sql(
            client.store,
            "UPDATE bgtaskex_actions SET status = 'active' WHERE task_id = :id",
            id=task_id,
        )
        client.run_once()
        assert client.get(task_id).status == "finished"
        died = [e for e in client.events(task_id) if "execute died in an earlier run" in e.message]
        assert [(e.old_status, e.new_status) for e in died] == [("running", "recovering")]
    assert not NewEvent(None, "running", "recovering", "execute died (death 1)").routine


def test_history_failures_from_the_environment(settings: Settings, tmp_path: Path) -> None:
    from bgtaskex.config import load_settings

    loaded = load_settings(environ={"BGTASKEX_HISTORY": "Failures", "HOME": str(tmp_path)})
    assert loaded.history == "FAILURES"


@pytest.mark.parametrize(
    ("event", "routine"),
    [
        (NewEvent(1, "pending", "active"), True),
        (NewEvent(None, "running", "finished"), True),
        (NewEvent(1, "active", "failed", "boom", "RuntimeError: boom"), False),
        (NewEvent(None, "running", "failed", "an action failed"), False),
        (NewEvent(1, "running", "running", "execute died in an earlier run"), False),
        (NewEvent(1, None, None, "a note"), False),
        (NewEvent(1, "active", "done", "", "a hook error kept"), False),
    ],
)
def test_which_events_are_routine(event: NewEvent, routine: bool) -> None:
    assert event.routine is routine


def test_a_store_refuses_an_unknown_history() -> None:
    from bgtaskex.exceptions import UsageError
    from bgtaskex.store import Store

    with pytest.raises(UsageError, match="history must be all or failures"):
        Store("sqlite://", history="failure")


def test_the_default_is_every_event() -> None:
    assert Settings().history == "ALL"
    assert TaskStatus.FAILED.value == "failed"  # what `NewEvent.routine` compares to
