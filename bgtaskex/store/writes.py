"""Writes on a connection inside a transaction that `Store` or `Admin` opened: inserting
a task, locking a task's row, ending a task as cancelled (the run's and the operators'
side of a cancel share it), and telling why a write of the run matched no row."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from .. import tables as t
from ..exceptions import ClaimLost, TaskInterrupted, TaskNotFound
from ..models import (
    ActionStatus,
    Change,
    NewAction,
    NewEvent,
    TaskStatus,
    TaskType,
    run_order,
)
from .statements import CLAIM_OF, INSERT_EVENT, UNFINISHED_ACTIONS, event_row


def insert_task(
    conn: Connection,
    name: str,
    type_: TaskType,
    queue: str,
    actions: Sequence[NewAction],
    now: datetime,
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
    event = NewEvent(None, None, created.value, f"enqueued with {len(actions)} action(s)")
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
