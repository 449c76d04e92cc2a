"""The operators' cancel and retry: the rules for one task (`cancel_row`, `retry_row`,
which `admin.Admin.cancel` and `retry` apply to the task they lock), and the same rules
applied to every task a filter selects (`where`: the web dashboard's bulk buttons).

A bulk command acts on the tasks the filter selects when it runs, at most the count the
operator confirmed (`expect`: more than that, and nothing is changed). They are taken
by id in batches of `BATCH`, one transaction per batch: each task of a batch is locked
and read again with the filter, so that a task that no longer matches (a run started
it, a purge deleted it) is left alone, and the single task's rules decide the rest:
refused with the single command's reason, cancelled at once, or, being executed, given a
cancel request that its run honours at the next checkpoint. Each task gets the event
the single command writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, func, select, update

from .. import tables as t
from ..exceptions import InvalidState
from ..inputs import whole_number
from ..models import (
    TERMINAL,
    ActionStatus,
    BulkResult,
    NewEvent,
    TaskFilter,
    TaskStatus,
)
from ..models import run_order as run_order_of
from ..owner import holder_is_gone
from .engine import now as _now
from .engine import retrying_deadlocks
from .filters import conditions
from .rows import task_type
from .statements import INSERT_EVENT, event_row
from .writes import end_as_cancelled

if TYPE_CHECKING:
    from .core import Store

#: Tasks per transaction of a bulk command.
BATCH = 200
#: The most tasks one bulk command acts on.
MOST = 1_000_000

_EXECUTING = (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.RECOVERING)
_RESET_ACTION: dict[str, Any] = {
    "status": ActionStatus.PENDING.value,
    "attempts": 0,
    "started_at": None,
    "ended_at": None,
    "progress_done": None,
    "progress_total": None,
    "progress_message": None,
    "elapsed": 0.0,
}
#: What `Apply` returns: the task changed now, or a cancel request (cancel only).
CHANGED, PENDING = "changed", "pending"
Apply = Callable[[Connection, Row[Any], datetime], str]


def cancel_row(
    conn: Connection, row: Row[Any], executing: Callable[[], bool], now: datetime
) -> str:
    """Cancel the task of `row` (locked): CHANGED when it ended now, PENDING when a run
    may be executing one of its hooks (a live claim, or `executing()`), which the run
    ends at its next checkpoint or hook return. InvalidState when it has ended."""
    if row.status in TERMINAL:
        raise InvalidState(f"task {row.id} is already {row.status}")
    claimed = (
        row.lease_until is not None and row.lease_until > now and not holder_is_gone(row.claimed_by)
    )
    if row.status in _EXECUTING and (claimed or executing()):
        if row.cancel_requested_at is None:
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.id == row.id)
                .values(cancel_requested_at=now, updated_at=now)
            )
            message = "cancel requested: the run ends it at its next checkpoint"
            event = NewEvent(None, row.status, row.status, message)
            conn.execute(INSERT_EVENT, event_row(row.id, now, None, event))
        return PENDING
    end_as_cancelled(conn, row.id, row.status, None, now, "cancelled")
    return CHANGED


def retry_row(conn: Connection, row: Row[Any], from_start: bool, now: datetime) -> str:
    """Put the failed task of `row` (locked) back in the queue: its failed actions (with
    `from_start`, all of them, with their enqueue-time params) pending again, attempts
    reset. InvalidState when it is not failed."""
    task_id = row.id
    if row.status != TaskStatus.FAILED:
        raise InvalidState(f"task {task_id} is {row.status}, not failed: nothing to retry")
    actions = update(t.actions).where(t.actions.c.task_id == task_id)
    reset = dict(_RESET_ACTION)
    if from_start:
        reset["params"] = t.actions.c.initial_params
    else:
        actions = actions.where(t.actions.c.status == ActionStatus.FAILED.value)
    conn.execute(actions.values(reset))
    conn.execute(
        update(t.tasks)
        .where(t.tasks.c.id == task_id)
        .values(
            status=TaskStatus.CREATED.value,
            run_order=run_order_of(task_type(row.type), TaskStatus.CREATED),
            current_rank=None,
            ended_at=None,
            cancel_requested_at=None,
            not_before=None,  # retried now: no delay, no backoff
            updated_at=now,
        )
    )
    how = "from the start" if from_start else "its failed actions"
    event = NewEvent(None, row.status, TaskStatus.CREATED.value, f"retried: {how}")
    conn.execute(INSERT_EVENT, event_row(task_id, now, None, event))
    return CHANGED


def apply_where(store: Store, where: TaskFilter, expect: int, apply: Apply) -> BulkResult:
    """`apply` to each task `where` selects now, by id, BATCH per transaction; nothing
    at all (InvalidState) when more than `expect` tasks match."""
    whole_number("expect", expect, 0, MOST)
    matching = select(t.tasks.c.id).where(*conditions(where))
    with store._read() as conn:
        ids = list(conn.execute(matching.order_by(t.tasks.c.id).limit(expect + 1)).scalars())
        if len(ids) > expect:
            now = conn.execute(select(func.count()).select_from(matching.subquery())).scalar()
            raise InvalidState(
                f"{now} task(s) match the filter now, more than the {expect} confirmed: "
                "nothing was changed"
            )
    changed = pending = 0
    refused: list[tuple[int, str]] = []
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        write = functools.partial(_batch, store, where, batch, apply)
        for task_id, outcome in retrying_deadlocks(write):
            if outcome == CHANGED:
                changed += 1
            elif outcome == PENDING:
                pending += 1
            else:
                refused.append((task_id, outcome))
    return BulkResult(len(ids), changed, pending, tuple(refused))


def _batch(
    store: Store, where: TaskFilter, batch: list[int], apply: Apply
) -> list[tuple[int, str]]:
    """One transaction: the tasks of `batch` that `where` still selects, locked, each
    given to `apply`; (id, CHANGED, PENDING or why it was refused) for each."""
    now = _now()
    with store._write() as conn:
        query = select(t.tasks).where(t.tasks.c.id.in_(batch), *conditions(where))
        if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises
            query = query.with_for_update()
        rows = {row.id: row for row in conn.execute(query.order_by(t.tasks.c.id))}
        outcomes = []
        for task_id in batch:
            row = rows.get(task_id)
            if row is None:
                outcomes.append((task_id, f"task {task_id} is no longer selected by the filter"))
                continue
            try:
                outcomes.append((task_id, apply(conn, row, now)))
            except InvalidState as err:
                outcomes.append((task_id, str(err)))
        return outcomes
