"""The operators' queries: cancel, retry, purge, stats and health (`bgtaskex cancel /
retry / purge / stats / check`).

`Admin` is composed by `Store` as `store.admin`, on the store's transactions: the run's
path stays in `core`. Each public method is one transaction (purge: one per batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select

from .. import tables as t
from ..models import ActionStatus, BulkResult, Event, Stats, TaskFilter
from . import reads
from .bulk import CHANGED, apply_where, cancel_row, retry_row
from .cluster_lock import cluster_lock_held
from .engine import now as _now
from .engine import retrying_deadlocks
from .filters import conditions, ended_ids, terminal_only, waiting_actions
from .lease_statements import not_paused
from .queues import queue_pauses
from .rows import event_record
from .writes import locked_task

if TYPE_CHECKING:
    from .core import Store


class Admin:
    """The operators' queries of one `Store` (its `admin`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- cancel and retry ------------------------------------------------------------

    def cancel(self, task_id: int, *, executing: Callable[[], bool]) -> bool:
        """Cancel a task: at once (True) unless a run may be executing one of its hooks
        right now (a worker holds a live claim on it, or `executing()` says a run is
        alive), in which case the run ends it at its next checkpoint or hook return
        (False). A deadlock with the run's own writes (InnoDB picks a victim) is tried
        again."""
        reads.check_id(task_id)
        return retrying_deadlocks(lambda: self._cancel(task_id, executing))

    def _cancel(self, task_id: int, executing: Callable[[], bool]) -> bool:
        now = _now()
        with self._store._write() as conn:
            return cancel_row(conn, locked_task(conn, task_id), executing, now) == CHANGED

    def retry(self, task_id: int, *, from_start: bool = False) -> None:
        """Put a failed task back in the queue: its failed actions (with `from_start`,
        all of them, with the params they were enqueued with) become pending again with
        their attempts reset."""
        reads.check_id(task_id)
        now = _now()
        with self._store._write() as conn:
            retry_row(conn, locked_task(conn, task_id), from_start, now)

    def cancel_where(
        self, where: TaskFilter, *, expect: int, executing: Callable[[], bool]
    ) -> BulkResult:
        """`cancel` each task `where` selects (see `bulk`); InvalidState, and nothing
        changed, when more than `expect` match."""
        return apply_where(
            self._store, where, expect, lambda conn, row, now: cancel_row(conn, row, executing, now)
        )

    def retry_where(self, where: TaskFilter, *, expect: int, from_start: bool) -> BulkResult:
        """`retry` each task `where` selects (see `bulk`); InvalidState, and nothing
        changed, when more than `expect` match."""
        return apply_where(
            self._store, where, expect, lambda conn, row, now: retry_row(conn, row, from_start, now)
        )

    # -- purge -----------------------------------------------------------------------

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
        where = terminal_only(where)
        purged = 0
        while deadline is None or time.time() < deadline:
            with self._store._write() as conn:
                # In the order of ix_status_ended_at: a batch reads `batch` index entries
                # instead of sorting every purgeable task. Locked as selected, passing
                # over rows another writer holds: a task a concurrent retry puts back in
                # the queue is re-read (not ended: left) or skipped, never deleted.
                batch_ids = ended_ids(where, batch).with_for_update(skip_locked=True)
                ids = list(conn.execute(batch_ids).scalars())
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
        where = terminal_only(where)
        with self._store._read() as conn:
            count = conn.execute(
                select(func.count()).select_from(t.tasks).where(*conditions(where))
            ).scalar_one()
            ids = conn.execute(ended_ids(where, sample)).scalars()
            return int(count), list(ids)

    # -- stats and health ------------------------------------------------------------

    def stats(self) -> Stats:
        """Tasks by queue, type and status; the oldest waiting; actions ended lately; the
        paused queues."""
        now = _now()
        c, a = t.tasks.c, t.actions.c
        with self._store._read() as conn:
            counts = conn.execute(
                select(c.queue, c.type, c.status, func.count())
                .group_by(c.queue, c.type, c.status)
                .order_by(c.queue, c.type, c.status)
            ).all()
            # Waiting since it was due: since created, or since its not_before.
            first_due = conn.execute(
                select(func.min(func.coalesce(c.not_before, c.created_at))).where(
                    c.run_order.isnot(None), or_(c.not_before.is_(None), c.not_before <= now)
                )
            ).scalar()
            ended: list[tuple[str, str, int]] = []
            for window, span in (("1h", timedelta(hours=1)), ("1d", timedelta(days=1))):
                for status in (ActionStatus.DONE, ActionStatus.FAILED):
                    n = conn.execute(
                        select(func.count())
                        .select_from(t.actions)
                        .where(a.status == status.value, a.ended_at >= now - span)
                    ).scalar_one()
                    ended.append((window, status.value, int(n)))
            paused = tuple(queue_pauses(conn))
            mean = conn.execute(
                select(func.avg(a.elapsed)).where(
                    a.status == ActionStatus.DONE.value, a.ended_at >= now - timedelta(days=1)
                )
            ).scalar()
        return Stats(
            counts=tuple((q, ty, st, int(n)) for q, ty, st, n in counts),
            oldest_waiting=first_due,
            actions_ended=tuple(ended),
            mean_action_seconds=float(mean) if mean is not None else None,
            paused=paused,
        )

    def stuck_tasks(self, untouched_since: datetime, limit: int = 10) -> tuple[int, list[int]]:
        """Tasks not ended and not written since `untouched_since`, and due since then
        (a task delayed to later is not stuck), of queues not paused (an operator's
        pause is told apart, not as stuck tasks): (count, some ids)."""
        c = t.tasks.c
        due = or_(c.not_before.is_(None), c.not_before < untouched_since)
        cond = (c.run_order.isnot(None), c.updated_at < untouched_since, due, not_paused())
        with self._store._read() as conn:
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
        with self._store._read() as conn:
            query = waiting_actions(select(t.actions.c.ref).distinct())
            return list(conn.execute(query).scalars())

    def count_tasks_waiting_on(self, refs: Collection[str]) -> int:
        """How many tasks not ended have an unfinished action of one of `refs`."""
        if not refs:
            return 0
        query = waiting_actions(select(func.count(t.actions.c.task_id.distinct())))
        with self._store._read() as conn:
            return int(conn.execute(query.where(t.actions.c.ref.in_(sorted(refs)))).scalar_one())

    def recent_events(self, task_id: int, limit: int) -> tuple[list[Event], int]:
        """The latest `limit` events of a task, oldest first, and how many it has."""
        reads.check_id(task_id)
        e = t.events.c
        with self._store._read() as conn:
            reads.require_task(conn, task_id)
            latest = select(t.events).where(e.task_id == task_id).order_by(e.id.desc())
            rows = list(conn.execute(latest.limit(max(0, limit))))
            count = conn.execute(
                select(func.count()).select_from(t.events).where(e.task_id == task_id)
            ).scalar_one()
        return [event_record(row) for row in reversed(rows)], int(count)

    def cluster_lock_held(self) -> bool:
        """Whether some run holds the cluster lock (`Store.cluster_lock`) of this schema
        or database right now; always False where there is none (SQLite)."""
        if self._store.dialect not in ("postgresql", *t.MYSQL):
            return False
        with self._store._read(single=True) as conn:
            return cluster_lock_held(conn)
