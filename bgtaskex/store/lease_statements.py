"""The clock of leases and the claim's statements: what "now" and "now + the lease" are
on each backend, when a task is due and its lease free, the claim a worker of
`lock = "none"` makes before reading a task, its heartbeat, and the release.

On PostgreSQL the claim is one statement (`claim_in_one`): the UPDATE of the row the
SELECT ... FOR UPDATE SKIP LOCKED picks, returning the claimed row joined to its actions.
MySQL / MariaDB have no UPDATE ... RETURNING (nor a subquery of the updated table), and
SQLite no UPDATE in a WITH: there the claim stays a SELECT, an UPDATE and a read.

The due-task queries and the run's writes in `statements` build on these filters (a
run's first write of a task takes its claim there, `Change.claim_as`). Cached per
dialect like them; parameters are named `v_*`.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, literal_column, or_, select, update

from .. import tables as t


@functools.cache
def lease_clock(dialect: str) -> tuple[Any, Any]:
    """The SQL for "now" and "now + the lease", as leases are read and written.

    On PostgreSQL and MySQL / MariaDB that is the server's clock, so the clocks of the
    workers' hosts need not agree; on SQLite (one host) the run's (v_now, v_until)."""
    if dialect == "postgresql":
        now: Any = func.clock_timestamp()
        return now, now + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("v_lease"))
    if dialect in t.MYSQL:
        # Naive UTC with microseconds, as bgtaskex stores timestamps there.
        now = func.utc_timestamp(literal_column("6"), type_=t.UTCDateTime())
        until = func.timestampadd(
            literal_column("MICROSECOND"), bindparam("v_lease_us"), now, type_=t.UTCDateTime()
        )
        return now, until
    return bindparam("v_now", type_=t.UTCDateTime()), bindparam("v_until", type_=t.UTCDateTime())


def lease_params(dialect: str, lease: float, now: datetime) -> dict[str, Any]:
    """The parameters of `lease_clock` for a lease of `lease` seconds."""
    if dialect == "postgresql":
        return {"v_lease": float(lease)}
    if dialect in t.MYSQL:
        return {"v_lease_us": round(lease * 1_000_000)}
    return {"v_now": now, "v_until": now + timedelta(seconds=lease)}


def lease_free(dialect: str) -> Any:
    c = t.tasks.c
    return or_(c.lease_until.is_(None), c.lease_until < lease_clock(dialect)[0])


def due_now(dialect: str) -> Any:
    """A waiting task is due unless its not_before (delayed, snoozed, a retry's backoff)
    is still ahead, on the clock of `lease_clock`. not_before is the last column of the
    due indexes: the filter is read from the index range, no row is needed for it."""
    c = t.tasks.c
    return or_(c.not_before.is_(None), c.not_before <= lease_clock(dialect)[0])


def not_paused() -> Any:
    """The task's queue is not paused (`bgtaskex pause`): read from the pauses table by
    the very statement that picks a task, so every run honours a pause from its next
    pick on. An uncorrelated subquery of a table of a few rows, read once per statement
    (SQLite: a list subquery; PostgreSQL: a hashed subplan); the due query keeps its
    index, and the queue is read with the row it reads anyway."""
    return t.tasks.c.queue.not_in(select(t.queue_pauses.c.queue))


@functools.cache
def leases_held(dialect: str) -> Any:
    c = t.tasks.c
    return select(c.id, c.claimed_by, c.claim_token).where(
        c.run_order.isnot(None), c.lease_until >= lease_clock(dialect)[0]
    )


@functools.cache
def claim_statements(dialect: str) -> tuple[Any, Any, Any]:
    """The claim's SELECT (the next due task whose lease is free, skipping rows another
    worker is claiming right now), its UPDATE, and the heartbeat's UPDATE (which never
    revives a released claim)."""
    c = t.tasks.c
    until = lease_clock(dialect)[1]
    due = (
        select(c.id)
        .where(
            c.run_order.isnot(None),
            or_(c.last_run_id.is_(None), c.last_run_id != bindparam("v_skip_run")),
            due_now(dialect),
            lease_free(dialect),
            not_paused(),
        )
        .order_by(c.run_order, c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    claim = _claim_update(dialect).where(c.id == bindparam("v_task_id"))
    beat = (
        update(t.tasks)
        .where(
            c.id == bindparam("v_task_id"),
            c.claim_token == bindparam("v_token"),
            c.lease_until.isnot(None),
        )
        .values(lease_until=until)
    )
    return due, claim, beat


@functools.cache
def _claim_update(dialect: str) -> Any:
    """The claim's UPDATE, of no row yet."""
    c = t.tasks.c
    return update(t.tasks).values(
        claimed_by=bindparam("v_worker"),
        claim_token=c.claim_token + 1,
        lease_until=lease_clock(dialect)[1],
        last_run_id=bindparam("v_skip_run"),
    )


def claim_in_one(dialect: str, due: Any) -> Any | None:
    """The claim of the task `due` selects (`claim_statements`' SELECT, maybe narrowed)
    and the read of it, in one statement, with the columns of `statements.joined` (the
    task's as claimed, then its actions'); None where the backend cannot
    (`claim_statements` then). Cached for the SELECT as `claim_statements` gives it."""
    if dialect != "postgresql":
        return None
    if due is claim_statements(dialect)[0]:
        return _claim_in_one(dialect)
    return _claim_returning(dialect, due)


@functools.cache
def _claim_in_one(dialect: str) -> Any:
    return _claim_returning(dialect, claim_statements(dialect)[0])


def _claim_returning(dialect: str, due: Any) -> Any:
    claimed = (
        _claim_update(dialect)
        .where(t.tasks.c.id == due.scalar_subquery())
        .returning(*t.tasks.c)
        .cte("claimed")
    )
    actions = t.actions.c
    columns = [claimed.c[c.name].label(f"t_{c.name}") for c in t.tasks.c]
    columns += [c.label(f"a_{c.name}") for c in actions]
    return (
        select(*columns)
        .outerjoin_from(claimed, t.actions, actions.task_id == claimed.c.id)
        .order_by(actions.rank)
    )


RELEASE = (
    update(t.tasks)
    .where(t.tasks.c.id == bindparam("v_task_id"), t.tasks.c.claim_token == bindparam("v_token"))
    .values(lease_until=None)
)
CLAIM_OF = select(t.tasks.c.claim_token, t.tasks.c.run_order, t.tasks.c.cancel_requested_at).where(
    t.tasks.c.id == bindparam("v_task_id")
)
PAUSE_OF = select(t.queue_pauses.c.queue).where(t.queue_pauses.c.queue == bindparam("v_queue"))
