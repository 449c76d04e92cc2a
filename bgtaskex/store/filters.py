"""The SQL of a `TaskFilter`: which tasks an operator's command is about.

Used by the client's reads (`list`, `count`) and the operators' queries (`purge`,
`check`); the run's statements are in `statements`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, select

from .. import tables as t
from ..models import TERMINAL, TaskFilter
from .statements import UNFINISHED_ACTIONS


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
    return found + checked_conditions(where)


def checked_conditions(where: TaskFilter) -> list[ColumnElement[bool]]:
    """The conditions of a filter on a task's name and times: those no index range on
    (queue, type, status) serves, checked on the rows read (`pages`)."""
    c = t.tasks.c
    found: list[ColumnElement[bool]] = []
    if where.name_glob:
        found.append(c.name.ilike(glob_to_like(where.name_glob), escape="\\"))
    if where.since is not None:
        found.append(c.created_at >= where.since)
    if where.until is not None:
        found.append(c.created_at < where.until)
    if where.ended_before is not None:
        found.append(c.ended_at < where.ended_before)
    return found


def terminal_only(where: TaskFilter | None) -> TaskFilter:
    """`where` narrowed to the ended tasks (`models.TERMINAL`)."""
    where = where or TaskFilter()
    wanted = where.statuses
    statuses = frozenset(s.value for s in TERMINAL if wanted is None or s in wanted)
    return replace(where, statuses=statuses)


def ended_ids(where: TaskFilter, limit: int) -> Any:
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


def waiting_actions(query: Any) -> Any:
    """`query` narrowed to the unfinished actions of tasks not ended."""
    a, c = t.actions.c, t.tasks.c
    return query.select_from(t.actions.join(t.tasks, a.task_id == c.id)).where(
        c.run_order.isnot(None), a.status.in_(UNFINISHED_ACTIONS)
    )
