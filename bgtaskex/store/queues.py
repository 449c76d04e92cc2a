"""The operators' queries of queues: pause, resume, the pauses, and the per-queue summary
(`bgtaskex pause / resume / queues`).

`Queues` is composed by `Store` as `store.queues`, on the store's transactions, like
`admin.Admin`. Each public method is one transaction. How the run honours a pause is
the due query's business (`lease_statements.not_paused`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import tables as t
from ..exceptions import StorageError
from ..models import QueuePause, QueueSummary, TaskStatus, TaskType, run_order
from .engine import now as _now
from .engine import retrying_deadlocks
from .pages import distinct
from .statements import NOTIFY

if TYPE_CHECKING:
    from .core import Store

_WAITING = (TaskStatus.CREATED, TaskStatus.PAUSED)
_RUNNING = (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.RECOVERING)
# The run orders of the waiting statuses: the oldest waiting task of each queue is then
# found in a range of a due index (the waiting tasks only), not among the ended ones.
_WAITING_ORDERS = sorted(
    order for ty in TaskType for st in _WAITING if (order := run_order(ty, st)) is not None
)


def pause_of(row: Any) -> QueuePause:
    return QueuePause(row.queue, row.paused_at, row.reason, row.paused_by)


class Queues:
    """The queue queries of one `Store` (its `queues`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def pause(self, queue: str, reason: str | None, by: str | None) -> tuple[QueuePause, bool]:
        """Pause `queue`: no run takes a task of it from its next pick on. Returns the
        pause and True when it is new. A queue paused already stays paused since its
        first pause (`check` counts from then): `reason`, when given, replaces its
        reason, and `by` its author. Two operators pausing at once: one inserts, the
        other finds the pause and updates it (its INSERT lost the primary key: it
        tries again; so it does after a deadlock)."""
        for attempt in range(3):
            try:
                return retrying_deadlocks(lambda: self._pause(queue, reason, by))
            except StorageError as err:  # the other one's INSERT won the primary key
                if attempt == 2 or not isinstance(err.__cause__, IntegrityError):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, queue: str, reason: str | None, by: str | None) -> tuple[QueuePause, bool]:
        p = t.queue_pauses.c
        with self._store._write() as conn:
            found = _locked_pause(conn, queue)
            if found is None:
                values = {"queue": queue, "paused_at": _now(), "reason": reason, "paused_by": by}
                conn.execute(insert(t.queue_pauses).values(values))
            else:
                changed: dict[str, Any] = {"paused_by": by}
                if reason is not None:
                    changed["reason"] = reason
                conn.execute(update(t.queue_pauses).where(p.queue == queue).values(changed))
            pause = _locked_pause(conn, queue)
            assert pause is not None
            return pause, found is None

    def resume(self, queue: str) -> QueuePause | None:
        """Lift the pause of `queue`; the pause it had, None when it was not paused
        (nothing is written then). On PostgreSQL the daemons are woken (NOTIFY, at
        commit, as `enqueue` does) so that its tasks run without waiting for a tick."""
        with self._store._write() as conn:
            found = _locked_pause(conn, queue)
            if found is None:
                return None
            conn.execute(delete(t.queue_pauses).where(t.queue_pauses.c.queue == queue))
            if conn.dialect.name == "postgresql":
                conn.execute(NOTIFY, {"v_queue": queue})
            return found

    def names(self) -> list[str]:
        """The queues that have tasks or a pause, by name: a few index seeks (a loose
        index scan of ix_bgtaskex_tasks_queue_type_status_id), where `summary` counts
        every task (the Tasks page's list of queues, read at each refresh)."""
        with self._store._read() as conn:
            found = set(distinct(conn, t.tasks.c.queue))
            return sorted(found | {pause.queue for pause in queue_pauses(conn)})

    def pauses(self) -> list[QueuePause]:
        """Every paused queue, by name."""
        with self._store._read(single=True) as conn:
            return queue_pauses(conn)

    def summary(self) -> list[QueueSummary]:
        """Each queue that has tasks or a pause, by name: its tasks waiting, running and
        failed, its oldest waiting task, its pause."""
        c = t.tasks.c
        with self._store._read() as conn:
            counts = conn.execute(
                select(c.queue, c.status, func.count()).group_by(c.queue, c.status)
            ).all()
            firsts = conn.execute(
                select(func.min(c.id)).where(c.run_order.in_(_WAITING_ORDERS)).group_by(c.queue)
            ).scalars()
            ids = [i for i in firsts if i is not None]
            oldest = conn.execute(select(c.queue, c.id, c.created_at).where(c.id.in_(ids))).all()
            pauses = {pause.queue: pause for pause in queue_pauses(conn)}
        by_queue: dict[str, dict[str, Any]] = {q: {} for q in pauses}
        for queue, status, count in counts:
            fields = by_queue.setdefault(queue, {})
            key = "waiting" if status in _WAITING else "running" if status in _RUNNING else status
            if key in ("waiting", "running", "failed"):
                fields[key] = fields.get(key, 0) + int(count)
        for queue, task_id, created_at in oldest:
            by_queue[queue].update(oldest_waiting_id=task_id, oldest_waiting_at=created_at)
        return [
            QueueSummary(queue, pause=pauses.get(queue), **fields)
            for queue, fields in sorted(by_queue.items())
        ]


def _locked_pause(conn: Connection, queue: str) -> QueuePause | None:
    """The pause of `queue`, its row locked for the transaction (PostgreSQL, MySQL /
    MariaDB; SQLite's write transaction holds the whole database)."""
    query = select(t.queue_pauses).where(t.queue_pauses.c.queue == queue)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else pause_of(row)


def queue_pauses(conn: Connection) -> list[QueuePause]:
    """Every paused queue, by name, read on `conn`."""
    rows = conn.execute(select(t.queue_pauses).order_by(t.queue_pauses.c.queue))
    return [pause_of(row) for row in rows]
