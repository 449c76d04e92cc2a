"""How many write transactions a run makes, and what gathering writes must not change.

A status is committed right before the hook it announces, together with every write
since the previous hook: "task i done" and "task i+1 running" are one commit. These tests
count the write transactions on the real databases and check the cases where gathering
could go wrong: a task cancelled between its last hook and that commit, a task that
calls no hook at all, a retry without `change_params_on_error` of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from bgtaskex import Action
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.models import TaskStatus
from bgtaskex.store import Store

NOOP = "tests.scripted:Noop"
SCRIPTED_NO_INIT = "tests.scripted:ScriptedNoInit"
HERE = __name__


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted", HERE),
        max_execution_time=60.0,
        retry_delay=0.0,  # a dead execute is retried at the next run
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with connect(settings=settings) as opened:
        yield opened


class WriteCommits:
    """Counts the transactions that wrote something, on the store's engine."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        self._wrote = False
        self._engine = store._engine
        event.listen(self._engine, "before_cursor_execute", self._statement)
        event.listen(self._engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            self._wrote = True

    def _commit(self, conn: Any) -> None:
        if self._wrote:
            self.count += 1
        self._wrote = False

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._statement)
        event.remove(self._engine, "commit", self._commit)


@pytest.fixture
def commits(client: Client) -> Iterator[WriteCommits]:
    counter = WriteCommits(client.store)
    yield counter
    counter.close()


def test_one_commit_per_single_action_task(client: Client, commits: WriteCommits) -> None:
    ids = [client.enqueue(f"t{i}", [(NOOP, {})]) for i in range(20)]
    commits.count = 0
    summary = client.run_once()
    assert summary.finished == 20
    # one per task ("running", with the previous task's "finished"), plus the last
    # "finished", plus the run's record: its start and its end
    assert commits.count == 21 + 2
    assert all(client.get(i).status is TaskStatus.FINISHED for i in ids)


def test_one_commit_per_action_of_a_chain(client: Client, commits: WriteCommits) -> None:
    task_id = client.enqueue("chain", [(NOOP, {})] * 10)
    commits.count = 0
    assert client.run_once().finished == 1
    assert commits.count == 11 + 2  # + the run's record: its start and its end
    history = [(e.old_status, e.new_status) for e in client.events(task_id) if e.rank is None]
    assert history[-1] == ("running", "finished")


def test_every_write_is_durable_when_the_run_returns(client: Client) -> None:
    """The last task's writes are not left behind: another connection sees them all."""
    ids = [client.enqueue(f"t{i}", [(NOOP, {})]) for i in range(3)]
    client.run_once()
    with connect(settings=client.settings) as other:
        assert [other.get(i).status for i in ids] == [TaskStatus.FINISHED] * 3
        assert all(a.status == "done" for i in ids for a in other.get(i).actions)


class CancelsItsOwnTask(Action):
    """Asks, through another connection, to cancel its own task, then finishes."""

    def execute(self, deadline: float) -> bool:
        task_id = self._context.task.id  # type: ignore[attr-defined]
        with connect(settings=self.settings) as other:
            other.cancel(task_id)
        return True


def test_a_cancel_during_the_last_execute_is_kept(client: Client) -> None:
    """The task's "finished" would be written with the next task's "running": the cancel
    that came meanwhile wins, and the next task still runs."""
    cancelled = client.enqueue("c", [(f"{HERE}:CancelsItsOwnTask", {})])
    after = client.enqueue("after", [(NOOP, {})])
    summary = client.run_once()
    assert client.get(cancelled).status is TaskStatus.CANCELLED
    assert client.get(after).status is TaskStatus.FINISHED
    assert (summary.finished, summary.cancelled) == (1, 1)


def test_tasks_that_call_no_hook_are_each_processed_once(client: Client) -> None:
    """Corrupt tasks are failed without a hook: their writes gather over several tasks
    and each task is still taken once."""
    bad = [client.enqueue(f"bad{i}", [(NOOP, {})]) for i in range(5)]
    good = client.enqueue("good", [(NOOP, {})])
    with client.store._engine.begin() as conn:
        conn.execute(
            text("UPDATE bgtaskex_tasks SET status = 'zombie' WHERE id <= :last"), {"last": bad[-1]}
        )
    summary = client.run_once()
    assert (summary.failed, summary.finished) == (5, 1)
    assert client.get(good).status is TaskStatus.FINISHED
    for task_id in bad:
        assert client.get(task_id).status is TaskStatus.FAILED
        assert [e.new_status for e in client.events(task_id)][-1] == "failed"
        assert len([e for e in client.events(task_id) if e.new_status == "failed"]) == 1


class RaisesOnce(Action):
    """Raises at its first execute (a marker file remembers it), then finishes; keeps the
    default change_params_on_error (retry as is)."""

    def execute(self, deadline: float) -> bool:
        marker = Path(self.params["marker"])
        if not marker.exists():
            marker.touch()
            raise RuntimeError("first execute fails")
        return True


def test_a_retry_as_is_writes_no_recovering(client: Client, tmp_path: Path) -> None:
    """An action without change_params_on_error of its own is retried straight away:
    no `recovering` status, a line saying so in the history."""
    params = {"marker": str(tmp_path / "raised")}
    task_id = client.enqueue("retry", [(f"{HERE}:RaisesOnce", params)])
    client.run_once()
    assert client.get(task_id).status is TaskStatus.RUNNING
    client.run_once()
    assert client.get(task_id).status is TaskStatus.FINISHED
    history = client.events(task_id)
    assert not [e for e in history if e.new_status == "recovering"]
    assert any("retrying it as is" in e.message for e in history)
    assert client.get(task_id).actions[0].attempts == 1
