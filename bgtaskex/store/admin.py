"""The operators' queries of the store: cancel, retry, purge, retention, stats, health.

A mixin of `store.Store`, kept apart so each file stays one concept: store.py is the
run's path, this is what `bgtaskex cancel/retry/purge/stats/check` need. Each public
method is one transaction (purge: one per batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, func, insert, select, update

from .. import tables as t
from ..exceptions import InvalidState, TaskNotFound
from ..models import (
    ACTIVE_STATUSES,
    TERMINAL,
    ActionStatus,
    Event,
    Stats,
    TaskFilter,
    TaskStatus,
    TaskType,
    run_order,
)
from ..owner import holder_is_gone
from .engine import now as _now
from .engine import retrying_deadlocks

_ACTIVE_VALUES = sorted(s.value for s in ACTIVE_STATUSES)
_EXECUTING = (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.RECOVERING)


def glob_to_like(pattern: str) -> str:
    """Shell-style * and ? to a LIKE pattern with \\ as the escape character."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def conditions(where: TaskFilter | None) -> list[ColumnElement[bool]]:
    """The SQL conditions of a filter on the tasks table."""
    if where is None:
        return []
    c = t.tasks.c
    found: list[ColumnElement[bool]] = []
    if where.statuses is not None:
        found.append(c.status.in_(sorted(where.statuses)))
    if where.types:
        found.append(c.type.in_(sorted(where.types)))
    if where.queues:
        found.append(c.queue.in_(sorted(where.queues)))
    if where.name_glob:
        found.append(c.name.ilike(glob_to_like(where.name_glob), escape="\\"))
    if where.since is not None:
        found.append(c.created_at >= where.since)
    if where.until is not None:
        found.append(c.created_at < where.until)
    if where.ended_before is not None:
        found.append(c.ended_at < where.ended_before)
    return found


def _event(task_id: int, at: datetime, old: str, new: str, message: str) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "run_id": None,
        "rank": None,
        "old_status": old,
        "new_status": new,
        "message": message,
        "error": None,
    }


def check_id(task_id: int) -> None:
    """Ids are positive 64-bit integers: anything else names no task (and would make
    the driver fail)."""
    if not 0 < task_id < 2**63:
        raise TaskNotFound(task_id)


class AdminQueries:
    """Mixed into Store: expects `_read()` and `_write()` transaction helpers."""

    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]

    def _locked_task(self, conn: Connection, task_id: int) -> Row[Any]:
        query = select(t.tasks).where(t.tasks.c.id == task_id)
        if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already serialises
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise TaskNotFound(task_id)
        return row

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, task_id: int, *, executing: Callable[[], bool]) -> bool:
        """Cancel a task: at once (True) unless a run may be executing one of its hooks
        right now (a worker holds a live claim on it, or `executing()` says a run is
        alive), in which case the run ends it at its next checkpoint or hook return
        (False). A deadlock with the run's own writes (InnoDB picks a victim) is tried
        again."""
        check_id(task_id)
        return retrying_deadlocks(lambda: self._cancel(task_id, executing))

    def _cancel(self, task_id: int, executing: Callable[[], bool]) -> bool:
        now = _now()
        with self._write() as conn:
            row = self._locked_task(conn, task_id)
            if row.status in {s.value for s in TERMINAL}:
                raise InvalidState(f"task {task_id} is already {row.status}")
            claimed = (
                row.lease_until is not None
                and row.lease_until > now
                and not holder_is_gone(row.claimed_by)
            )
            if row.status in _EXECUTING and (claimed or executing()):
                if row.cancel_requested_at is None:
                    conn.execute(
                        update(t.tasks)
                        .where(t.tasks.c.id == task_id)
                        .values(cancel_requested_at=now, updated_at=now)
                    )
                    conn.execute(
                        insert(t.events).values(
                            _event(
                                task_id,
                                now,
                                row.status,
                                row.status,
                                "cancel requested: the run ends it at its next checkpoint",
                            )
                        )
                    )
                return False
            end_cancelled(conn, task_id, row.status, None, now, "cancelled")
            return True

    def end_cancelled(self, task_id: int, run_id: str, rank: int | None, params: Any) -> None:
        """The run's side of a cancel: end the task, saving the current action's params."""
        now = _now()
        with self._write() as conn:
            row = self._locked_task(conn, task_id)
            if row.status in {s.value for s in TERMINAL}:
                return
            if rank is not None and params is not None:
                conn.execute(
                    update(t.actions)
                    .where(t.actions.c.task_id == task_id, t.actions.c.rank == rank)
                    .values(params=params)
                )
            end_cancelled(conn, task_id, row.status, run_id, now, "cancelled by request")

    # -- retry ---------------------------------------------------------------------------

    def retry(self, task_id: int, *, from_start: bool = False) -> None:
        """Put a failed task back in the queue: its failed actions (with `from_start`,
        all of them, with the params they were enqueued with) become pending again with
        their attempts reset."""
        check_id(task_id)
        now = _now()
        with self._write() as conn:
            row = self._locked_task(conn, task_id)
            if row.status != TaskStatus.FAILED:
                raise InvalidState(f"task {task_id} is {row.status}, not failed: nothing to retry")
            actions = update(t.actions).where(t.actions.c.task_id == task_id)
            if not from_start:
                actions = actions.where(t.actions.c.status == ActionStatus.FAILED.value)
            reset: dict[str, Any] = {
                "status": ActionStatus.PENDING.value,
                "attempts": 0,
                "started_at": None,
                "ended_at": None,
                "progress_done": None,
                "progress_total": None,
                "progress_message": None,
                "elapsed": 0.0,
            }
            if from_start:
                reset["params"] = t.actions.c.initial_params
            conn.execute(actions.values(reset))
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.id == task_id)
                .values(
                    status=TaskStatus.CREATED.value,
                    run_order=run_order(_type(row.type), TaskStatus.CREATED),
                    current_rank=None,
                    ended_at=None,
                    cancel_requested_at=None,
                    updated_at=now,
                )
            )
            how = "from the start" if from_start else "its failed actions"
            conn.execute(
                insert(t.events).values(
                    _event(task_id, now, row.status, TaskStatus.CREATED.value, f"retried: {how}")
                )
            )

    # -- purge and retention -------------------------------------------------------------

    def purge(
        self,
        where: TaskFilter | None = None,
        *,
        batch: int = 500,
        deadline: float | None = None,
    ) -> int:
        """Delete the ended tasks that `where` selects (only terminal ones, whatever it
        says), with their actions and events, `batch` tasks per transaction, until none
        is left or `deadline` (a time.time() stamp) passes. Returns how many went."""
        where = _terminal_only(where)
        purged = 0
        while deadline is None or time.time() < deadline:
            with self._write() as conn:
                # In the order of ix_status_ended_at: a batch reads `batch` index entries
                # instead of sorting every purgeable task.
                ids = list(conn.execute(_ended_ids(where, batch)).scalars())
                if not ids:
                    break
                conn.execute(delete(t.events).where(t.events.c.task_id.in_(ids)))
                conn.execute(delete(t.actions).where(t.actions.c.task_id.in_(ids)))
                conn.execute(delete(t.tasks).where(t.tasks.c.id.in_(ids)))
            purged += len(ids)
            if len(ids) < batch:
                break
        return purged

    def purge_preview(
        self, where: TaskFilter | None = None, sample: int = 20
    ) -> tuple[int, list[int]]:
        """How many tasks `purge(where)` would delete, and a few of their ids."""
        where = _terminal_only(where)
        with self._read() as conn:
            count = conn.execute(
                select(func.count()).select_from(t.tasks).where(*conditions(where))
            ).scalar_one()
            ids = conn.execute(_ended_ids(where, sample)).scalars()
            return int(count), list(ids)

    def apply_retention(self, keep: Mapping[str, float], *, deadline: float) -> int:
        """Delete ended tasks older than their status's retention (seconds)."""
        purged = 0
        for status, seconds in keep.items():
            cutoff = _now() - timedelta(seconds=seconds)
            where = TaskFilter(statuses=frozenset({str(status)}), ended_before=cutoff)
            if seconds == 0:
                where = TaskFilter(statuses=frozenset({str(status)}))
            purged += self.purge(where, deadline=deadline)
        return purged

    # -- stats and health ----------------------------------------------------------------

    def stats(self) -> Stats:
        now = _now()
        c = t.tasks.c
        with self._read() as conn:
            counts = conn.execute(
                select(c.queue, c.type, c.status, func.count())
                .group_by(c.queue, c.type, c.status)
                .order_by(c.queue, c.type, c.status)
            ).all()
            first_due = conn.execute(
                select(func.min(c.created_at)).where(c.run_order.isnot(None))
            ).scalar()
            ended: list[tuple[str, str, int]] = []
            for window, span in (("1h", timedelta(hours=1)), ("1d", timedelta(days=1))):
                for status in (ActionStatus.DONE, ActionStatus.FAILED):
                    n = conn.execute(
                        select(func.count())
                        .select_from(t.actions)
                        .where(
                            t.actions.c.status == status.value,
                            t.actions.c.ended_at >= now - span,
                        )
                    ).scalar_one()
                    ended.append((window, status.value, int(n)))
            mean = conn.execute(
                select(func.avg(t.actions.c.elapsed)).where(
                    t.actions.c.status == ActionStatus.DONE.value,
                    t.actions.c.ended_at >= now - timedelta(days=1),
                )
            ).scalar()
        return Stats(
            counts=tuple((q, ty, st, int(n)) for q, ty, st, n in counts),
            oldest_waiting=first_due,
            actions_ended=tuple(ended),
            mean_action_seconds=float(mean) if mean is not None else None,
        )

    def stuck_tasks(self, untouched_since: datetime, limit: int = 10) -> tuple[int, list[int]]:
        """Tasks not ended and not written since `untouched_since`: (count, some ids)."""
        c = t.tasks.c
        cond = (c.run_order.isnot(None), c.updated_at < untouched_since)
        with self._read() as conn:
            count = conn.execute(
                select(func.count()).select_from(t.tasks).where(*cond)
            ).scalar_one()
            ids = conn.execute(
                select(c.id).where(*cond).order_by(c.run_order, c.id).limit(limit)
            ).scalars()
            return int(count), list(ids)

    def waiting_refs(self) -> list[str]:
        """The distinct refs of the unfinished actions (pending or active) of tasks not
        ended: the modules the next runs will need (`check`)."""
        with self._read() as conn:
            query = _waiting_actions(select(t.actions.c.ref).distinct())
            return list(conn.execute(query).scalars())

    def count_tasks_waiting_on(self, refs: Collection[str]) -> int:
        """How many tasks not ended have an unfinished action of one of `refs`."""
        if not refs:
            return 0
        query = _waiting_actions(select(func.count(t.actions.c.task_id.distinct())))
        with self._read() as conn:
            return int(conn.execute(query.where(t.actions.c.ref.in_(sorted(refs)))).scalar_one())

    def recent_events(self, task_id: int, limit: int) -> tuple[list[Event], int]:
        """The latest `limit` events of a task, oldest first, and how many it has."""
        check_id(task_id)
        e = t.events.c
        with self._read() as conn:
            if conn.execute(select(t.tasks.c.id).where(t.tasks.c.id == task_id)).first() is None:
                raise TaskNotFound(task_id)
            latest = select(t.events).where(e.task_id == task_id).order_by(e.id.desc())
            rows = list(conn.execute(latest.limit(max(0, limit))))
            count = conn.execute(
                select(func.count()).select_from(t.events).where(e.task_id == task_id)
            ).scalar_one()
        return [event_record(row) for row in reversed(rows)], int(count)


def _waiting_actions(query: Any) -> Any:
    """`query` narrowed to the unfinished actions of tasks not ended."""
    a, c = t.actions.c, t.tasks.c
    return query.select_from(t.actions.join(t.tasks, a.task_id == c.id)).where(
        c.run_order.isnot(None),
        a.status.in_([ActionStatus.PENDING.value, ActionStatus.ACTIVE.value]),
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


def _ended_ids(where: TaskFilter, limit: int) -> Any:
    """The first `limit` ended tasks that `where` selects, in the order of
    ix_status_ended_at. SQLite is told to use that index: with ANALYZE statistics it may
    otherwise scan the table, which reads all of it when few tasks match."""
    return (
        select(t.tasks.c.id)
        .where(*conditions(where))
        .order_by(t.tasks.c.status, t.tasks.c.ended_at)
        .limit(limit)
        .with_hint(t.tasks, "INDEXED BY ix_bgtaskex_tasks_status_ended_at", "sqlite")
    )


def _type(value: str) -> TaskType:
    return TaskType(value) if value in {k.value for k in TaskType} else TaskType.CRON


def _terminal_only(where: TaskFilter | None) -> TaskFilter:
    terminal = frozenset(s.value for s in TERMINAL)
    where = where or TaskFilter()
    statuses = terminal if where.statuses is None else where.statuses & terminal
    return replace(where, statuses=statuses)


def end_cancelled(
    conn: Connection, task_id: int, old: str, run_id: str | None, now: datetime, message: str
) -> None:
    """End a task as cancelled with its unfinished actions (inside a transaction)."""
    conn.execute(
        update(t.actions)
        .where(
            t.actions.c.task_id == task_id,
            t.actions.c.status.in_([ActionStatus.PENDING.value, ActionStatus.ACTIVE.value]),
        )
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
    event = _event(task_id, now, old, TaskStatus.CANCELLED.value, message)
    event["run_id"] = run_id
    conn.execute(insert(t.events).values(event))
