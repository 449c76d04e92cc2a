"""The actions a listing of tasks reads (`Store.list_tasks`, `Store.page_tasks`): what
`list` and the dashboard show of each task, whatever its number of actions.

A listed task gets its actions whole when it has at most `WHOLE` of them; a longer one
gets only those a listing shows (`taskstate.shown_action`, `Task.current_action`): its
current action, its first failed one, its first pending and first active ones (the
first unfinished), with `Task.action_count` set. Two statements for the whole listing:

- per task, its count and those ranks: correlated subqueries, each one seek of
  ix_bgtaskex_actions_task_id_status_rank (task_id, status, rank), or of the unique
  (task_id, rank) for the count. The count is the highest rank: ranks are 1..n, given at
  enqueue (`writes.insert_task`) and never renumbered; no action is ever deleted alone;
- the actions of those ranks (and every action of the short tasks).

So a page of 50 tasks reads at most 4 actions of each long one, be it of 100,000. An
action status this release does not know (a newer release's) counts as unfinished for
`shown_action` when the task is read whole; of a long task it is not looked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Select, and_, or_, select

from .. import tables as t
from ..models import ActionRecord, ActionStatus, Task
from .rows import action_record, task_record

#: A task of at most this many actions is listed with all of them: a listing shows no
#: fewer, and what reads the listed tasks (a retention rule's last task, the tests)
#: sees them whole, as before.
WHOLE = 20

_INDEX = "ix_bgtaskex_actions_task_id_status_rank"
_SHOWN_STATUSES = (ActionStatus.FAILED, ActionStatus.PENDING, ActionStatus.ACTIVE)


def listed_tasks(conn: Connection, rows: Sequence[Any]) -> list[Task]:
    """The Tasks of `rows` (rows of the tasks table), in their order, each with the
    actions a listing shows (see the module)."""
    if not rows:
        return []
    counts, wanted = _wanted(conn, rows)
    found = _actions(conn, wanted)
    tasks = []
    for row in rows:
        actions = found.get(row.id, [])
        count = counts.get(row.id, 0)
        task = task_record(row, actions)
        tasks.append(replace(task, action_count=count) if count > len(actions) else task)
    return tasks


def _wanted(conn: Connection, rows: Sequence[Any]) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Each task's count, and the ranks to read of it."""
    a, c = t.actions.c, t.tasks.c

    def first(status: ActionStatus) -> Any:
        ranks = select(a.rank).where(a.task_id == c.id, a.status == status.value)
        return _hinted(conn, ranks.order_by(a.rank).limit(1)).scalar_subquery()

    last = select(a.rank).where(a.task_id == c.id).order_by(a.rank.desc()).limit(1)
    query = select(c.id, last.scalar_subquery(), *(first(s) for s in _SHOWN_STATUSES))
    current = {row.id: row.current_rank for row in rows}
    counts: dict[int, int] = {}
    wanted: dict[int, list[int]] = {}
    for task_id, count, *firsts in conn.execute(query.where(c.id.in_(list(current)))):
        counts[task_id] = int(count or 0)
        if counts[task_id] <= WHOLE:
            wanted[task_id] = list(range(1, counts[task_id] + 1))
        else:
            wanted[task_id] = sorted({r for r in (current[task_id], *firsts) if r is not None})
    return counts, wanted


def _hinted(conn: Connection, query: Select[Any]) -> Select[Any]:
    """`query` told to read ix_task_id_status_rank on SQLite and MariaDB / MySQL: MariaDB
    otherwise reads every action of that status in the database (ix_status_ended_at,
    sorted), or the task's actions in rank order up to the first of that status."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return query.with_hint(t.actions, f"INDEXED BY {_INDEX}", "sqlite")
    if dialect in t.MYSQL:
        return query.with_hint(t.actions, f"FORCE INDEX ({_INDEX})", dialect)
    return query


def _actions(conn: Connection, wanted: dict[int, list[int]]) -> dict[int, list[ActionRecord]]:
    """The actions of the ranks `wanted` names, by task, by rank: every part of the
    statement names both columns of the unique (task_id, rank) with equalities, which
    every planner reads by that index, whatever its statistics say (PostgreSQL scanned
    the table for `task_id IN (...)` just after a long chain was enqueued). Tasks wanting
    the same ranks (the short ones of a length) share a part."""
    a = t.actions.c
    tasks_of: dict[tuple[int, ...], list[int]] = {}
    for task_id, ranks in wanted.items():
        if ranks:
            tasks_of.setdefault(tuple(ranks), []).append(task_id)
    found: dict[int, list[ActionRecord]] = {}
    if not tasks_of:
        return found
    parts = [and_(a.task_id.in_(ids), a.rank.in_(ranks)) for ranks, ids in tasks_of.items()]
    query = select(t.actions).where(or_(*parts)).order_by(a.task_id, a.rank)
    for row in conn.execute(query):
        found.setdefault(row.task_id, []).append(action_record(row))
    return found
