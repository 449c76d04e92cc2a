"""Writes on a connection inside a transaction that `Store` or `Admin` opened: inserting
a task, locking a task's row, ending a task as cancelled (the run's and the operators'
side of a cancel share it), and telling why a write of the run matched no row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import tables as t
from ..exceptions import ClaimLost, StorageError, TaskInterrupted, TaskNotFound
from ..models import (
    ActionStatus,
    Change,
    Enqueued,
    NewAction,
    NewEvent,
    TaskStatus,
    TaskType,
    run_order,
)
from .lease_statements import CLAIM_OF
from .statements import INSERT_EVENT, NOTIFY_UNLESS_PAUSED, UNFINISHED_ACTIONS, event_row


def add_task(
    conn: Connection,
    new: tuple[str, TaskType, str, Sequence[NewAction]],
    now: datetime,
    *,
    not_before: datetime | None = None,
    unique_key: str | None = None,
) -> Enqueued:
    """Insert the task `new` (name, type, queue, actions) as `insert_task` does, and on
    PostgreSQL tell the daemons about an interactive one due now (a NOTIFY, delivered
    at commit: see `Store.wake_ups`), unless its queue is paused (`resume` NOTIFYs).
    With a `unique_key` that a task not ended holds already, insert nothing and return
    that task's id (created False).

    The unique index decides between concurrent enqueues: the loser's INSERT fails (on
    PostgreSQL and MySQL / MariaDB once the winner has committed) and it reads the
    winner's id. The INSERTs run in a savepoint, so that a failure leaves neither half a
    task nor (PostgreSQL) an aborted transaction, also inside a caller's transaction.
    Not on SQLite, where a caller's connection may have no BEGIN yet (the savepoint
    would then commit at its release); there a failed statement is undone alone, and
    the task's row, which holds the key, is the first one inserted."""
    added = _insert_unique(conn, new, now, not_before, unique_key)
    _name, type_, queue, _actions = new
    due = not_before is None or not_before <= now
    interactive = type_ is TaskType.INTERACTIVE and conn.dialect.name == "postgresql"
    if added.created and due and interactive:
        conn.execute(NOTIFY_UNLESS_PAUSED, {"v_queue": queue})
    return added


def _insert_unique(
    conn: Connection,
    new: tuple[str, TaskType, str, Sequence[NewAction]],
    now: datetime,
    not_before: datetime | None,
    unique_key: str | None,
) -> Enqueued:
    if unique_key is None:
        return Enqueued(insert_task(conn, *new, now, not_before), True)
    for attempt in range(5):
        holder = _key_holder(conn, unique_key, latest=attempt > 0)
        if holder is not None:
            return Enqueued(holder, False)
        if attempt > 0:
            _check_snapshot_sees_holder(conn, unique_key)
        savepoint = conn.begin_nested() if conn.dialect.name != "sqlite" else None
        try:
            task_id = insert_task(conn, *new, now, not_before, unique_key)
        except IntegrityError:
            if savepoint is not None:
                savepoint.rollback()
            continue  # another transaction holds the key now: read its task
        if savepoint is not None:
            savepoint.commit()
        return Enqueued(task_id, True)
    raise StorageError(f"cannot enqueue with unique key {unique_key!r}: it keeps changing hands")


def _key_holder(conn: Connection, key: str, *, latest: bool) -> int | None:
    """The task that holds `key`, if any. `latest`: after a unique violation, where
    InnoDB's repeatable read would still show the snapshot without the winner's row, a
    locking read sees it (that row only: no gap lock, which would deadlock inserts)."""
    query = select(t.tasks.c.id).where(t.tasks.c.unique_key == key)
    if latest and conn.dialect.name in t.MYSQL:
        query = query.with_for_update(read=True)
    found = conn.execute(query).scalar()
    return None if found is None else int(found)


def _check_snapshot_sees_holder(conn: Connection, key: str) -> None:
    """After a unique violation the holder's row is committed, yet the re-read found none:
    on PostgreSQL a caller's transaction at REPEATABLE READ (or SERIALIZABLE) reads its
    snapshot, older than that commit, and would see no holder however often it tried.
    Only retrying the whole transaction (a new snapshot) can: say so, at once."""
    if conn.dialect.name != "postgresql":
        return
    level = str(conn.exec_driver_sql("SHOW transaction_isolation").scalar())
    if level in ("repeatable read", "serializable"):
        raise StorageError(
            f"unique key {key!r} is held by a task committed after this transaction's "
            f"snapshot ({level.upper()}): retry the transaction"
        )


def insert_task(
    conn: Connection,
    name: str,
    type_: TaskType,
    queue: str,
    actions: Sequence[NewAction],
    now: datetime,
    not_before: datetime | None = None,
    unique_key: str | None = None,
) -> int:
    """Insert a task with its actions, in the `created` status; returns its id."""
    created = TaskStatus.CREATED
    result = conn.execute(
        insert(t.tasks).values(
            name=name,
            type=type_.value,
            queue=queue,
            status=created.value,
            run_order=run_order(type_, created),
            created_at=now,
            updated_at=now,
            not_before=not_before,
            unique_key=unique_key,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    task_id = int(key[0])
    conn.execute(
        insert(t.actions),
        [
            {
                "task_id": task_id,
                "rank": rank,
                "ref": action.ref,
                "status": ActionStatus.PENDING.value,
                "attempts": 0,
                "params": action.params,
                "initial_params": action.params,
                "elapsed": 0.0,
            }
            for rank, action in enumerate(actions, start=1)
        ],
    )
    message = f"enqueued with {len(actions)} action(s)"
    if not_before is not None:
        message += f", not due before {not_before.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if unique_key is not None:
        message += f", unique key {unique_key!r}"
    event = NewEvent(None, None, created.value, message)
    conn.execute(INSERT_EVENT, event_row(task_id, now, None, event))
    return task_id


def locked_task(conn: Connection, task_id: int) -> Row[Any]:
    """The row of task `task_id`, locked for the transaction; TaskNotFound if none."""
    query = select(t.tasks).where(t.tasks.c.id == task_id)
    if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise TaskNotFound(task_id)
    return row


def end_as_cancelled(
    conn: Connection, task_id: int, old: str, run_id: str | None, now: datetime, message: str
) -> None:
    """End a task as cancelled with its unfinished actions."""
    conn.execute(
        update(t.actions)
        .where(t.actions.c.task_id == task_id, t.actions.c.status.in_(UNFINISHED_ACTIONS))
        .values(status=ActionStatus.CANCELLED.value, ended_at=now)
    )
    conn.execute(
        update(t.tasks)
        .where(t.tasks.c.id == task_id)
        .values(
            status=TaskStatus.CANCELLED.value,
            run_order=None,
            ended_at=now,
            updated_at=now,
            cancel_requested_at=func.coalesce(t.tasks.c.cancel_requested_at, now),
            unique_key=None,  # an ended task frees its key
            last_run_id=run_id if run_id else t.tasks.c.last_run_id,
        )
    )
    event = NewEvent(None, old, TaskStatus.CANCELLED.value, message)
    conn.execute(INSERT_EVENT, event_row(task_id, now, run_id, event))


def refused(conn: Connection, change: Change) -> Exception:
    """Why the write of `change` matched no row: ClaimLost when another run claimed the
    task since (or holds a live lease on a task this write meant to claim),
    TaskInterrupted when it was ended or asked to cancel."""
    row = conn.execute(CLAIM_OF, {"v_task_id": change.task_id}).first()
    if row is not None and change.token is not None and row.claim_token != change.token:
        return ClaimLost(change.task_id, change.token)
    runnable = row is not None and row.run_order is not None and row.cancel_requested_at is None
    if change.claim_as is not None and runnable:
        return ClaimLost(change.task_id, change.token or 0)
    return TaskInterrupted(change.task_id)
