"""bgtaskex.store.Store on SQLite, PostgreSQL and MariaDB: enqueue, the client's reads, and
what `apply` writes (what the run relies on, `RunStorage`: test_store_contract.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update

from bgtaskex import tables
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import StorageError, TaskNotFound
from bgtaskex.models import (
    ActionChange,
    ActionStatus,
    Change,
    NewAction,
    NewEvent,
    Progress,
    TaskFilter,
    TaskStatus,
    TaskType,
    run_order,
)
from bgtaskex.plan import Routing
from bgtaskex.registry import Registry
from bgtaskex.store import Store

NOOP = "tests.scripted:Noop"

ODD_PARAMS: dict[str, Any] = {
    "ünïcødé": "日本語 ✓ émoji 🎉 and quotes \" ' \\ and a newline\n",
    "nested": {
        "list": [1, 2.5, -3, None, True, False, "x", {"deep": [[], {}, [{"a": "b"}]]}],
        "empty": {},
        "zero": 0,
    },
    "big": 2**53,
    "tiny": 1.5e-10,
    "negative": -(2**40),
}


def enqueue(store: Store, name: str = "t", type_: TaskType = TaskType.CRON, n: int = 1) -> int:
    return store.enqueue(name, type_, "default", [NewAction(NOOP, {"i": i}) for i in range(n)])


def set_status(store: Store, task_id: int, status: TaskStatus, rank: int | None = None) -> None:
    store.apply(Change(task_id, "setup", status=status, current_rank=rank))


def raw_run_order(store: Store, task_id: int) -> Any:
    with store._engine.connect() as conn:
        return conn.execute(
            text("SELECT run_order FROM bgtaskex_tasks WHERE id = :id"), {"id": task_id}
        ).scalar_one()


def recent(at: datetime | None) -> bool:
    assert at is not None
    assert at.tzinfo is not None
    return abs(datetime.now(UTC) - at) < timedelta(minutes=5)


# -- enqueue and get_task ---------------------------------------------------------------


def test_enqueue_then_get_task(store: Store) -> None:
    tid = store.enqueue(
        "a task",
        TaskType.INTERACTIVE,
        "reports",
        [NewAction(NOOP, {"x": 1}), NewAction("tests.scripted:Scripted", {})],
    )
    task = store.get_task(tid)
    assert task.id == tid
    assert (task.name, task.type, task.queue) == ("a task", "interactive", "reports")
    assert task.status == TaskStatus.CREATED
    assert task.current_rank is None
    assert task.current_action is None
    assert task.ended_at is None
    assert recent(task.created_at) and recent(task.updated_at)
    assert [(a.rank, a.ref, a.params) for a in task.actions] == [
        (1, NOOP, {"x": 1}),
        (2, "tests.scripted:Scripted", {}),
    ]
    for action in task.actions:
        assert action.task_id == tid
        assert action.status == ActionStatus.PENDING
        assert action.attempts == 0
        assert action.started_at is None and action.ended_at is None
    assert raw_run_order(store, tid) == run_order(TaskType.INTERACTIVE, TaskStatus.CREATED)


def test_enqueue_returns_increasing_ids(store: Store) -> None:
    ids = [enqueue(store, f"t{i}") for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_enqueue_writes_a_created_event(store: Store) -> None:
    tid = enqueue(store, n=3)
    (event,) = store.events(tid)
    assert (event.task_id, event.run_id, event.rank) == (tid, None, None)
    assert (event.old_status, event.new_status) == (None, "created")
    assert "3 action" in event.message
    assert event.error is None
    assert recent(event.at)


def test_params_round_trip_through_enqueue(store: Store) -> None:
    tid = store.enqueue("p", TaskType.CRON, "q", [NewAction(NOOP, ODD_PARAMS)])
    assert store.get_task(tid).actions[0].params == ODD_PARAMS


def test_unknown_ids_raise_task_not_found(store: Store) -> None:
    enqueue(store)
    with pytest.raises(TaskNotFound) as raised:
        store.get_task(999_999)
    assert raised.value.task_id == 999_999
    with pytest.raises(TaskNotFound):
        store.events(999_999)


def test_tasks_are_independent(store: Store) -> None:
    a = enqueue(store, "a", n=2)
    b = enqueue(store, "b", n=1)
    store.apply(
        Change(
            a,
            "r",
            status=TaskStatus.RUNNING,
            current_rank=1,
            actions=(ActionChange(1, status=ActionStatus.ACTIVE),),
        )
    )
    assert store.get_task(b).status == TaskStatus.CREATED
    assert [x.status for x in store.get_task(b).actions] == [ActionStatus.PENDING]
    assert len(store.events(b)) == 1


# -- list_tasks and next_task -------------------------------------------------------------


def test_list_tasks_waiting_in_run_order_then_ended_newest_first(store: Store) -> None:
    cron_created = enqueue(store, "cron created")
    inter_created = enqueue(store, "interactive created", TaskType.INTERACTIVE)
    cron_paused = enqueue(store, "cron paused")
    finished_old = enqueue(store, "finished old")
    failed_new = enqueue(store, "failed new")
    inter_running = enqueue(store, "interactive running", TaskType.INTERACTIVE)
    cron_starting = enqueue(store, "cron starting")
    cron_created_2 = enqueue(store, "cron created 2")
    set_status(store, cron_paused, TaskStatus.PAUSED, 1)
    set_status(store, finished_old, TaskStatus.FINISHED)
    set_status(store, failed_new, TaskStatus.FAILED)
    set_status(store, inter_running, TaskStatus.RUNNING, 1)
    set_status(store, cron_starting, TaskStatus.STARTING, 1)

    listed = [t.id for t in store.list_tasks()]
    assert listed == [
        inter_running,
        inter_created,
        cron_starting,
        cron_paused,
        cron_created,
        cron_created_2,
        failed_new,
        finished_old,
    ]
    assert [t.id for t in store.list_tasks(limit=3)] == listed[:3]
    assert [t.id for t in store.list_tasks(limit=7)] == listed[:7]
    assert [t.id for t in store.list_tasks(TaskFilter(statuses=frozenset(["created"])))] == [
        inter_created,
        cron_created,
        cron_created_2,
    ]
    assert [
        t.id
        for t in store.list_tasks(TaskFilter(statuses=frozenset(["finished", "failed", "paused"])))
    ] == [
        cron_paused,
        failed_new,
        finished_old,
    ]
    assert store.list_tasks(TaskFilter(statuses=frozenset(["recovering"]))) == []
    assert all(len(t.actions) == 1 for t in store.list_tasks())


def test_list_tasks_empty(store: Store) -> None:
    assert store.list_tasks() == []


# -- apply ----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", list(TaskType))
def test_apply_sets_status_and_run_order(store: Store, type_: TaskType) -> None:
    tid = enqueue(store, type_=type_)
    for status in (
        TaskStatus.STARTING,
        TaskStatus.RUNNING,
        TaskStatus.RECOVERING,
        TaskStatus.PAUSED,
        TaskStatus.CREATED,
    ):
        set_status(store, tid, status, 1)
        task = store.get_task(tid)
        assert task.status == status
        assert task.ended_at is None
        assert raw_run_order(store, tid) == run_order(type_, status)
    for status in (TaskStatus.FINISHED, TaskStatus.FAILED):
        other = enqueue(store, type_=type_)
        set_status(store, other, status)
        task = store.get_task(other)
        assert task.status == status
        assert raw_run_order(store, other) is None
        assert recent(task.ended_at)
        assert task.updated_at >= task.created_at


def test_apply_current_rank_kept_unless_given(store: Store) -> None:
    tid = enqueue(store, n=2)
    set_status(store, tid, TaskStatus.RUNNING, 2)
    assert store.get_task(tid).current_rank == 2
    set_status(store, tid, TaskStatus.PAUSED)
    task = store.get_task(tid)
    assert task.current_rank == 2
    assert task.current_action is not None and task.current_action.rank == 2


def test_apply_action_changes(store: Store) -> None:
    tid = enqueue(store, n=2)
    store.apply(Change(tid, "r1", actions=(ActionChange(1, status=ActionStatus.ACTIVE),)))
    first = store.get_task(tid).actions[0]
    assert first.status == ActionStatus.ACTIVE
    assert recent(first.started_at) and first.ended_at is None
    store.apply(Change(tid, "r1", actions=(ActionChange(1, attempts=2),)))
    store.apply(Change(tid, "r2", actions=(ActionChange(1, status=ActionStatus.ACTIVE),)))
    again = store.get_task(tid).actions[0]
    assert again.started_at == first.started_at  # the first start is kept
    assert again.attempts == 2
    assert again.status == ActionStatus.ACTIVE
    store.apply(
        Change(tid, "r2", actions=(ActionChange(1, status=ActionStatus.DONE, params={"k": 1}),))
    )
    done = store.get_task(tid).actions[0]
    assert done.status == ActionStatus.DONE
    assert done.params == {"k": 1}
    assert done.attempts == 2
    assert done.ended_at is not None and done.started_at is not None
    assert done.started_at <= done.ended_at
    second = store.get_task(tid).actions[1]
    assert (second.status, second.params, second.started_at) == (
        ActionStatus.PENDING,
        {"i": 1},
        None,
    )
    for status in (ActionStatus.SKIPPED, ActionStatus.FAILED):
        other = enqueue(store)
        store.apply(Change(other, "r", actions=(ActionChange(1, status=status),)))
        action = store.get_task(other).actions[0]
        assert action.status == status
        assert recent(action.ended_at)
        assert action.started_at is None


def test_apply_params_round_trip(store: Store) -> None:
    tid = enqueue(store)
    store.apply(Change(tid, "r", actions=(ActionChange(1, params=ODD_PARAMS),)))
    assert store.get_task(tid).actions[0].params == ODD_PARAMS
    store.apply(Change(tid, "r", actions=(ActionChange(1, params={}),)))
    assert store.get_task(tid).actions[0].params == {}


def test_values_come_back_exactly_on_every_backend(store: Store) -> None:
    """Microseconds, double-precision floats, and names that differ only in case (MySQL's
    DATETIME, FLOAT and default collation would lose or merge them)."""
    upper = store.enqueue("Report", TaskType.CRON, "Reports", [NewAction(NOOP)])
    lower = store.enqueue("report", TaskType.CRON, "reports", [NewAction(NOOP)])
    progress = Progress(1 / 3, 2**40 + 0.5, "a third")
    store.apply(
        Change(upper, "r", actions=(ActionChange(1, progress=progress, elapsed=1234.567891),))
    )
    task = store.get_task(upper)
    assert task.actions[0].progress == progress
    assert task.actions[0].elapsed == 1234.567891
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with store._engine.begin() as conn:
        conn.execute(update(tables.tasks).where(tables.tasks.c.id == upper).values(created_at=at))
    assert store.get_task(upper).created_at == at
    assert {t.id for t in store.list_tasks(TaskFilter(queues=frozenset({"reports"})))} == {lower}
    assert {t.id for t in store.list_tasks(TaskFilter(queues=frozenset({"Reports"})))} == {upper}
    assert store.next_task(routing=Routing(("reports",))).id == lower  # type: ignore[union-attr]
    by_glob = store.list_tasks(TaskFilter(name_glob="REP*"))  # globs ignore case everywhere
    assert {t.id for t in by_glob} == {upper, lower}


@pytest.mark.mariadb
def test_mariadb_keeps_any_text_in_a_latin1_database(mariadb_database_url: str) -> None:
    """The database's default character set (latin1 on many servers) does not apply to
    bgtaskex's columns, and an error longer than TEXT's 64 KiB fits."""
    admin = create_engine(mariadb_database_url)
    with admin.connect() as conn:
        conn.execute(text("ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci"))
    admin.dispose()
    store = Store(mariadb_database_url)
    try:
        store.ensure_schema()
        tid = store.enqueue("日本語 🎉", TaskType.CRON, "é✓", [NewAction(NOOP, {"x": "🎉"})])
        error = "✓ Traceback\n" * 20_000  # 240 000 characters, 280 000 bytes
        store.apply(Change(tid, "r", events=(NewEvent(1, "a", "b", "… 🎉", error),)))
        task = store.get_task(tid)
        assert (task.name, task.queue, task.actions[0].params) == ("日本語 🎉", "é✓", {"x": "🎉"})
        assert (store.events(tid)[-1].message, store.events(tid)[-1].error) == ("… 🎉", error)
    finally:
        store.close()


def test_apply_writes_events_in_order(store: Store) -> None:
    tid = enqueue(store, n=2)
    store.apply(
        Change(
            tid,
            "run-1",
            status=TaskStatus.RUNNING,
            current_rank=1,
            events=(
                NewEvent(1, "pending", "active", "action one"),
                NewEvent(None, "created", "running", "task", None),
            ),
        )
    )
    store.apply(
        Change(tid, "run-2", events=(NewEvent(1, "running", "running", "boom", "Traceback\n…"),))
    )
    events = store.events(tid)
    assert [(e.run_id, e.rank, e.old_status, e.new_status, e.message, e.error) for e in events] == [
        (None, None, None, "created", events[0].message, None),
        ("run-1", 1, "pending", "active", "action one", None),
        ("run-1", None, "created", "running", "task", None),
        ("run-2", 1, "running", "running", "boom", "Traceback\n…"),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.task_id == tid and recent(e.at) for e in events)


def test_apply_is_one_transaction(store: Store) -> None:
    """A change that cannot be written in full (an event without its NOT NULL message)
    leaves nothing behind."""
    tid = enqueue(store)
    bad_event = NewEvent(None, "created", "running", None)  # type: ignore[arg-type]
    change = Change(
        tid,
        "r",
        status=TaskStatus.RUNNING,
        current_rank=1,
        actions=(ActionChange(1, status=ActionStatus.ACTIVE, params={"half": "written"}),),
        events=(bad_event,),
    )
    with pytest.raises(StorageError):
        store.apply(change)
    task = store.get_task(tid)
    assert task.status == TaskStatus.CREATED
    assert task.actions[0].status == ActionStatus.PENDING
    assert task.actions[0].params == {"i": 0}
    assert len(store.events(tid)) == 1


# -- concurrency on SQLite -------------------------------------------------------------------


def test_concurrent_enqueue_and_run_on_sqlite(tmp_path: Path) -> None:
    """Writers in several threads (some sharing one Store, some with their own) and a
    runner in another, on one real SQLite file: nobody sees "database is locked"."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'shared.db'}",
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted",),
    )
    client = connect(settings=settings)
    writers, per_writer = 4, 25
    errors: list[BaseException] = []
    enqueued: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(writers + 1)
    writers_done = threading.Event()
    shared = Store(settings.url)

    def write(n: int) -> None:
        own = Store(settings.url) if n % 2 else None  # half share one store, half own one
        store = own or shared
        try:
            start.wait(timeout=30)
            for i in range(per_writer):
                tid = store.enqueue(f"w{n}-{i}", TaskType.CRON, "q", [NewAction(NOOP, {})])
                with lock:
                    enqueued.append(tid)
        except BaseException as err:
            errors.append(err)
        finally:
            if own is not None:
                own.close()

    runs: list[int] = []

    def run() -> None:
        runner = Client(Store(settings.url), Registry(["tests.scripted"]), settings)
        try:
            start.wait(timeout=30)
            while not writers_done.is_set():
                runs.append(runner.run_once().finished)
            runs.append(runner.run_once().finished)
        except BaseException as err:
            errors.append(err)
        finally:
            runner.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    runner_thread = threading.Thread(target=run)
    for thread in [*threads, runner_thread]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    writers_done.set()
    runner_thread.join(timeout=60)
    shared.close()
    assert not any(t.is_alive() for t in [*threads, runner_thread])
    assert errors == [], [repr(e) for e in errors]
    assert len(enqueued) == len(set(enqueued)) == writers * per_writer
    assert sum(runs) == writers * per_writer
    listed = client.store.list_tasks(limit=1000)
    assert len(listed) == writers * per_writer
    assert {t.status for t in listed} == {TaskStatus.FINISHED}
    client.close()
