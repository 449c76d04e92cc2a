"""The client's reads of tasks and their history, each inside a transaction that
`Store` opens (these functions take its connection)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Row, func, select

from .. import tables as t
from ..exceptions import TaskNotFound
from ..models import ACTIVE_STATUSES, TERMINAL, ActionRecord, Event, Task, TaskFilter
from .filters import conditions
from .listed import listed_tasks
from .rows import action_record, event_record, task_record
from .statements import ACTIONS_OF_TASK


def check_id(task_id: int) -> None:
    """Ids are positive 64-bit integers: anything else names no task (and would make
    the driver fail)."""
    if not 0 < task_id < 2**63:
        raise TaskNotFound(task_id)


def task_row(conn: Connection, task_id: int) -> Row[Any]:
    """The row of task `task_id`; TaskNotFound when there is none."""
    row = conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).first()
    if row is None:
        raise TaskNotFound(task_id)
    return row


def actions_of(conn: Connection, task_ids: Collection[int]) -> dict[int, list[ActionRecord]]:
    """The actions of each task of `task_ids`, by rank."""
    found: dict[int, list[ActionRecord]] = {task_id: [] for task_id in task_ids}
    if len(task_ids) == 1:  # get_task: one cached statement
        rows = conn.execute(ACTIONS_OF_TASK, {"v_task_id": next(iter(task_ids))})
    elif task_ids:
        rows = conn.execute(
            select(t.actions)
            .where(t.actions.c.task_id.in_(list(task_ids)))
            .order_by(t.actions.c.task_id, t.actions.c.rank)
        )
    else:
        return found
    for row in rows:
        found[row.task_id].append(action_record(row))
    return found


def task(conn: Connection, task_id: int) -> Task:
    """Task `task_id` with all its actions."""
    return task_record(task_row(conn, task_id), actions_of(conn, [task_id])[task_id])


def task_page(conn: Connection, task_id: int, max_actions: int) -> tuple[Task, int]:
    """See `Store.get_task_page`."""
    a = t.actions.c
    row = task_row(conn, task_id)
    page = select(t.actions).where(a.task_id == task_id).order_by(a.rank)
    found = [action_record(r) for r in conn.execute(page.limit(max(0, max_actions)))]
    current = row.current_rank
    if current is not None and all(r.rank != current for r in found):
        at = conn.execute(select(t.actions).where(a.task_id == task_id, a.rank == current))
        found.extend(action_record(r) for r in at)
    count = conn.execute(
        select(func.count()).select_from(t.actions).where(a.task_id == task_id)
    ).scalar_one()
    task = task_record(row, found)
    return (replace(task, action_count=int(count)) if count > len(found) else task), int(count)


def tasks(conn: Connection, where: TaskFilter | None, limit: int) -> list[Task]:
    """See `Store.list_tasks`."""
    where = where or TaskFilter()
    conds = conditions(where)
    wanted = where.statuses
    rows: list[Row[Any]] = []
    if wanted is None or wanted & ACTIVE_STATUSES:
        waiting = select(t.tasks).where(t.tasks.c.run_order.isnot(None), *conds)
        rows.extend(conn.execute(waiting.order_by(t.tasks.c.run_order, t.tasks.c.id).limit(limit)))
    if len(rows) < limit and (wanted is None or wanted & TERMINAL):
        ended = select(t.tasks).where(t.tasks.c.run_order.is_(None), *conds)
        rows.extend(conn.execute(ended.order_by(t.tasks.c.id.desc()).limit(limit - len(rows))))
    return listed_tasks(conn, rows)


def count(conn: Connection, where: TaskFilter | None, up_to: int | None) -> int:
    """See `Store.count_tasks`."""
    matching = select(t.tasks.c.id).where(*conditions(where))
    if up_to is not None:
        matching = matching.limit(up_to)
    return int(conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one())


def require_task(conn: Connection, task_id: int) -> None:
    """TaskNotFound unless task `task_id` exists (reads its id only)."""
    if conn.execute(select(t.tasks.c.id).where(t.tasks.c.id == task_id)).first() is None:
        raise TaskNotFound(task_id)


def events(conn: Connection, task_id: int) -> list[Event]:
    """Every event of task `task_id`, oldest first."""
    require_task(conn, task_id)
    rows = conn.execute(
        select(t.events).where(t.events.c.task_id == task_id).order_by(t.events.c.id)
    )
    return [event_record(row) for row in rows]
