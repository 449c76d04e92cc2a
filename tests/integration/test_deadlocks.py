"""Real deadlocks between two connections, forced into `Store.apply` (every task-state
write of a run) and into `cancel`, on PostgreSQL and MariaDB: the write is tried again
and lands; a deadlock on every attempt still surfaces, as `Deadlock` (exit code 4).

How the deadlock is made, the same on both servers: a trigger on `bgtaskex_tasks` has
every UPDATE of a task lock every row of a gate table, in order. The store's transaction
locks the task's row (its UPDATE, or cancel's SELECT ... FOR UPDATE), then waits in the
trigger for a gate row that a holder session locked beforehand; the holder then asks for
the task's row: each waits for the other. The server rolls back the store's transaction
(the victim: on PostgreSQL the holder's deadlock_timeout is the longer, which the test
role must be allowed to set, as postgres is; on MariaDB the holder's transaction is the
heavier), and the holder commits, which frees its gate row. One holder
per gate row: with one, the second attempt passes; with three, every attempt is a victim.
That the holder got the task's row at all proves the store's transaction was rolled back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import text

from bgtaskex.exceptions import Deadlock
from bgtaskex.models import (
    ActionChange,
    ActionStatus,
    Change,
    NewAction,
    NewEvent,
    TaskStatus,
    TaskType,
)
from bgtaskex.store import Store
from bgtaskex.store.engine import retrying_deadlocks

ATTEMPTS = retrying_deadlocks.__defaults__[0]  # type: ignore[index]
WAIT = 20.0  # seconds: a bound on every wait of these tests, never reached when they pass

PG_SETUP = (
    "CREATE TABLE deadlock_gate (id INT PRIMARY KEY)",
    "CREATE FUNCTION deadlock_gate() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM id FROM deadlock_gate ORDER BY id FOR UPDATE; RETURN NULL; END $$",
    "CREATE TRIGGER deadlock_gate AFTER UPDATE ON bgtaskex_tasks "
    "FOR EACH ROW EXECUTE FUNCTION deadlock_gate()",
)
MARIADB_SETUP = (
    "CREATE TABLE deadlock_gate (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE deadlock_ballast (id INT) ENGINE=InnoDB",
    "CREATE TRIGGER deadlock_gate AFTER UPDATE ON bgtaskex_tasks FOR EACH ROW "
    "SELECT SUM(id) INTO @deadlock_gate FROM deadlock_gate FOR UPDATE",
)
# The sessions the holder blocks (it runs this inside its own transaction).
PG_BLOCKED = (
    "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
)
# Whether the task's row is free, on MariaDB: skipped when a transaction holds it for an
# update, else share-locked for the moment of this one statement (autocommit). InnoDB's
# own view of its lock waits (information_schema.innodb_lock_waits, innodb_trx) is a
# cache refreshed only when nobody read it for 0.1 s: another session polling it, in this
# test run or another on the same server, kept it on "no waiter" for 20 s.
MARIADB_ROW_FREE = "SELECT id FROM bgtaskex_tasks WHERE id = :id LOCK IN SHARE MODE SKIP LOCKED"


@pytest.fixture
def gated(server_url: str) -> Iterator[tuple[Store, int, sqlalchemy.Engine]]:
    """A store, a task of two actions, the trigger and its gate rows 1..ATTEMPTS, and an
    engine for the holder sessions."""
    store = Store(server_url)
    store.ensure_schema()
    task_id = store.enqueue(
        "gated", TaskType.CRON, "default", [NewAction("tests.scripted:Noop")] * 2
    )
    holders = sqlalchemy.create_engine(server_url, pool_size=ATTEMPTS)
    with holders.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        for statement in PG_SETUP if postgres else MARIADB_SETUP:
            conn.exec_driver_sql(statement)
        for gate in range(1, ATTEMPTS + 1):
            conn.execute(text("INSERT INTO deadlock_gate VALUES (:g)"), {"g": gate})
    try:
        yield store, task_id, holders
    finally:
        store.close()
        holders.dispose()


def deadlocked(
    holders: sqlalchemy.Engine, task_id: int, write: Callable[[], Any], gates: int
) -> tuple[int, BaseException | None]:
    """Run `write` in a thread while `gates` holders, one after the other, each make it
    the victim of a deadlock; (how many times it was, what it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            write()
        except BaseException as err:  # handed to the test
            outcome.append(err)
        else:
            outcome.append(None)

    probe = holders.connect().execution_options(isolation_level="AUTOCOMMIT")
    with probe, holders.connect() as first:
        sessions = [first] + [holders.connect() for _ in range(gates - 1)]
        try:
            for gate, conn in enumerate(sessions, start=1):
                hold(conn, gate)
            writer = threading.Thread(target=run, daemon=True)
            writer.start()
            victims = 0
            for conn in sessions:
                if not writer_waits(conn, probe, task_id, writer):
                    break
                lock_task_row(conn, task_id)  # returns once the writer was rolled back
                conn.commit()
                victims += 1
        finally:
            for conn in sessions:
                conn.rollback()
                conn.close()
    writer.join(WAIT)
    assert not writer.is_alive(), f"the write did not end within {WAIT}s"
    return victims, outcome[0]


def hold(conn: sqlalchemy.Connection, gate: int) -> None:
    """Lock gate row `gate` in `conn`'s transaction, and make that transaction the one a
    deadlock must not roll back."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET deadlock_timeout = '30s'")  # the store's: 1 s
        conn.exec_driver_sql(f"SET lock_timeout = '{WAIT:.0f}s'")
    else:
        conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {WAIT:.0f}")
        # InnoDB rolls back the lighter transaction (rows written, locks held).
        conn.exec_driver_sql(
            "INSERT INTO deadlock_ballast SELECT seq FROM seq_1_to_200"  # MariaDB's Sequence
        )
    conn.execute(text("SELECT id FROM deadlock_gate WHERE id = :g FOR UPDATE"), {"g": gate})


def writer_waits(
    conn: sqlalchemy.Connection,
    probe: sqlalchemy.Connection,
    task_id: int,
    writer: threading.Thread,
) -> bool:
    """Wait until the writer waits for the gate row of `conn`, or is about to (True), or
    has ended. PostgreSQL says who waits for `conn`'s locks. On MariaDB, a transaction
    holds the task's row: the writer's, as the holders lock it only once the writer's
    transaction was rolled back, and commit then; its gates before this holder's are
    free, so it waits for this one's next, and the holder closes the cycle either way."""

    def waits() -> bool:
        if conn.dialect.name == "postgresql":
            return bool(conn.execute(text(PG_BLOCKED)).scalar())
        return probe.execute(text(MARIADB_ROW_FREE), {"id": task_id}).first() is None

    give_up = time.monotonic() + WAIT
    while not waits():
        if not writer.is_alive():
            return False
        assert time.monotonic() < give_up, f"the write did not wait for the gate in {WAIT}s"
        time.sleep(0.005)
    return True


def lock_task_row(conn: sqlalchemy.Connection, task_id: int) -> None:
    query = text("SELECT id FROM bgtaskex_tasks WHERE id = :id FOR UPDATE")
    try:
        conn.execute(query, {"id": task_id})
    except sqlalchemy.exc.DBAPIError as err:
        pytest.fail(f"the holder, not the store's write, was rolled back: {err}")


def start(store: Store, task_id: int) -> None:
    """The run's first write of a task: starting, its first action active, the history."""
    store.apply(
        Change(
            task_id,
            "run-1",
            status=TaskStatus.STARTING,
            current_rank=1,
            actions=(ActionChange(1, status=ActionStatus.ACTIVE, attempts=1),),
            events=(NewEvent(None, "created", "starting"), NewEvent(1, "pending", "active")),
        )
    )


def cancel(store: Store, task_id: int) -> None:
    assert store.admin.cancel(task_id, executing=lambda: False) is True


@pytest.mark.parametrize("write", [start, cancel], ids=["apply", "cancel"])
def test_a_write_that_loses_a_deadlock_is_tried_again_and_lands(
    gated: tuple[Store, int, sqlalchemy.Engine], write: Callable[[Store, int], None]
) -> None:
    store, task_id, holders = gated
    victims, raised = deadlocked(holders, task_id, lambda: write(store, task_id), gates=1)
    assert victims == 1, (
        f"the write was never a deadlock victim (the test proves nothing): {raised!r}"
    )
    assert raised is None, f"a write that lost one deadlock failed: {raised!r}"
    task = store.get_task(task_id)
    if write is start:
        assert (task.status, task.current_rank) == (TaskStatus.STARTING, 1)
        assert [a.status for a in task.actions] == [ActionStatus.ACTIVE, ActionStatus.PENDING]
        assert [(e.old_status, e.new_status) for e in store.events(task_id)][-2:] == [
            ("created", "starting"),
            ("pending", "active"),
        ]
    else:
        assert task.status == TaskStatus.CANCELLED
        assert [a.status for a in task.actions] == [ActionStatus.CANCELLED] * 2


@pytest.mark.parametrize("write", [start, cancel], ids=["apply", "cancel"])
def test_a_deadlock_at_every_attempt_surfaces(
    gated: tuple[Store, int, sqlalchemy.Engine], write: Callable[[Store, int], None]
) -> None:
    store, task_id, holders = gated
    events = len(store.events(task_id))
    victims, raised = deadlocked(holders, task_id, lambda: write(store, task_id), gates=ATTEMPTS)
    assert victims == ATTEMPTS, f"tried {victims} time(s), not {ATTEMPTS}: {raised!r}"
    assert isinstance(raised, Deadlock), f"expected Deadlock, got {raised!r}"
    assert raised.exit_code == 4 and "deadlock" in str(raised).lower(), str(raised)
    task = store.get_task(task_id)
    assert task.status == TaskStatus.CREATED, "a write rolled back left something behind"
    assert [a.status for a in task.actions] == [ActionStatus.PENDING] * 2
    assert len(store.events(task_id)) == events
