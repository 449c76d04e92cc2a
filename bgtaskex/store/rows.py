"""Rows of bgtaskex's tables read back as the frozen dataclasses of `models`."""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from .. import tables as t
from ..models import (
    ActionRecord,
    ActionStatus,
    Event,
    Progress,
    Task,
    TaskStatus,
    TaskType,
)

_TASK_TYPES = frozenset(k.value for k in TaskType)
_TASK_STATUSES = frozenset(s.value for s in TaskStatus)
_ACTION_STATUSES = frozenset(s.value for s in ActionStatus)


def task_type(value: str) -> TaskType:
    """The type of a task row (cron for a value this release does not know)."""
    return TaskType(value) if value in _TASK_TYPES else TaskType.CRON


def task_record(row: Any, actions: Sequence[ActionRecord] = ()) -> Task:
    """The Task of a row of the tasks table, with `actions`."""
    return Task(
        id=row.id,
        name=row.name,
        type=TaskType(row.type) if row.type in _TASK_TYPES else row.type,
        queue=row.queue,
        status=TaskStatus(row.status) if row.status in _TASK_STATUSES else row.status,
        current_rank=row.current_rank,
        last_run_id=row.last_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        actions=tuple(actions),
        cancel_requested_at=row.cancel_requested_at,
        claimed_by=row.claimed_by,
        claim_token=row.claim_token or 0,
        lease_until=row.lease_until,
        not_before=row.not_before,
        unique_key=row.unique_key,
    )


def action_record(row: Any) -> ActionRecord:
    """The ActionRecord of a row of the actions table."""
    params = row.params
    if isinstance(params, str):  # JSON stored as text by some drivers
        params = json.loads(params)
    return ActionRecord(
        id=row.id,
        task_id=row.task_id,
        rank=row.rank,
        ref=row.ref,
        status=ActionStatus(row.status) if row.status in _ACTION_STATUSES else row.status,
        attempts=row.attempts,
        params=params,
        started_at=row.started_at,
        ended_at=row.ended_at,
        progress=(
            None
            if row.progress_done is None
            else Progress(row.progress_done, row.progress_total, row.progress_message)
        ),
        elapsed=row.elapsed or 0.0,
        last_failure=row.last_failure,
    )


def event_record(row: Row[Any]) -> Event:
    """The Event of a row of the events table."""
    return Event(
        id=row.id,
        task_id=row.task_id,
        at=row.at,
        run_id=row.run_id,
        rank=row.rank,
        old_status=row.old_status,
        new_status=row.new_status,
        message=row.message,
        error=row.error,
    )


# The columns of each table in a row of `statements.joined`: the task's, then its action's.
_TaskRow = namedtuple("_TaskRow", [c.name for c in t.tasks.c])  # type: ignore[misc]
_ActionRow = namedtuple("_ActionRow", [c.name for c in t.actions.c])  # type: ignore[misc]
_SPLIT = len(t.tasks.c)


def task_of_joined(rows: Sequence[Sequence[Any]]) -> Task | None:
    """The task of the rows of `statements.joined` (None: no row)."""
    if not rows:
        return None
    split, make = _SPLIT, _ActionRow._make
    actions = [action_record(make(row[split:])) for row in rows if row[split] is not None]
    return task_record(_TaskRow._make(rows[0][:split]), actions)
