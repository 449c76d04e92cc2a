"""Pages of the tasks a filter selects, newest first, fast on a million tasks
(`Store.page_tasks`: the web dashboard's task list).

A page is a keyset page on id (`id < before_id ORDER BY id DESC LIMIT n`), read from an
index that yields the filter's tasks in id order, so that the page reads about `n`
index entries whatever the table's size:

- with `queues`: one range of ix_queue_type_status_id per (queue, type, status) the
  filter allows, merged (a UNION ALL of ranges of `n` rows each); the types and statuses
  a filter leaves open are those present in the table, found by a few index seeks
  (`distinct`: a loose index scan), so a status this release does not know is listed
  too;
- with `types` or `statuses` only: one range of ix_type_status_id per (type, status);
- with neither: the primary key;
- with `since` / `until` selecting at most `SMALL_TIME_RANGE` tasks: that range of
  ix_created_at_id (every other condition checked on its rows), sorted by id.

What no index serves is checked on the rows the ranges yield: the name glob (matched
case-insensitively on the three backends, which no index of theirs serves, with or
without a leading `*`), and a time range over `SMALL_TIME_RANGE` tasks, read in id
order unless that would pass over more tasks outside it than it holds
(`_time_driven`): both within SCAN_BUDGET tasks a page (below).

PostgreSQL takes no index hint and plans each range from its statistics: a range its
statistics think empty (a queue that never had interactive tasks, say) may be read
from ix_type_status_id, filtering the queue, which reads every task of that type and
status; the other backends are told the index.

The total is counted up to `count_up_to` (+1, to tell whether it stopped): a bounded
read of the same ranges, newest first (oldest first for an `until` alone), which stops
early when many tasks match.

Conditions checked task by task on ranges read in id order (a name glob; a time range
over SMALL_TIME_RANGE with a status, type or queue, or alone) could read the whole
table when few tasks match. So a page reads at most SCAN_BUDGET tasks of its ranges
(below the id of the SCAN_BUDGET-th one, found index-only): it holds the matches among
them, perhaps fewer than `limit`, and its `next_before` (`searched_to`) goes on below
them; and the count reads at most SCAN_BUDGET tasks too, newest first (oldest first
for an `until` alone): a lower bound then (`count_searched`). A time range alone is
counted from its own index instead: exact up to `count_up_to`. The count is always the
first page's (a deep page counts as page 1 would).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, literal, select, tuple_, union_all

from .. import tables as t
from ..models import TaskFilter, TaskPage
from .filters import checked_conditions, conditions
from .listed import listed_tasks

#: A time range (since / until) of at most this many tasks drives the page: its index
#: range is read whole and sorted by id (a few milliseconds).
SMALL_TIME_RANGE = 5000
#: A filter checked task by task on its ranges (a name glob, which no index serves; a
#: time range read in id order) reads at most this many tasks of them for a page, and
#: as many for its count: the page then holds the matches among them (perhaps fewer
#: than `limit`, its `next_before` goes on below them), the count is a lower bound.
SCAN_BUDGET = 5000
#: More ranges than this (many queues given) are read as one statement the database
#: plans itself.
MAX_RANGES = 64

_QUEUE_INDEX = "ix_bgtaskex_tasks_queue_type_status_id"
_TYPE_INDEX = "ix_bgtaskex_tasks_type_status_id"
_TIME_INDEX = "ix_bgtaskex_tasks_created_at_id"


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read a filter's tasks in id order: `ranges`, each the values of the
    leading columns of `index` (one range each; `[{}]`: one range, no equality), and
    the conditions checked on the rows of each range."""

    index: str | None  # None: the primary key
    ranges: Sequence[dict[str, str]]
    checked: Sequence[ColumnElement[bool]]


def page(
    conn: Connection, where: TaskFilter | None, before_id: int | None, limit: int, up_to: int
) -> TaskPage:
    """See `Store.page_tasks`."""
    plan = _plan(conn, where or TaskFilter(), before_id, limit)
    if not plan.ranges:  # an empty set of statuses, types or queues selects nothing
        return TaskPage((), 0, False, None)
    searched = _searched(plan)
    floor = _bound(conn, plan, before_id, newest=True) if searched else None
    query = _ids(conn, plan, before_id, limit + 1, newest=True, bound=floor)
    ids = list(conn.execute(query).scalars())
    more, ids = len(ids) > limit, ids[:limit]
    query = select(t.tasks).where(t.tasks.c.id.in_(ids)).order_by(t.tasks.c.id.desc())
    tasks = tuple(listed_tasks(conn, list(conn.execute(query))))
    searched_to = None if more else floor  # stopped searching there: go on below it
    # Counted from the end where the time range lies: newest first unless only `until`.
    newest = where is None or where.since is not None or where.until is None
    # The count is the first page's, whatever page this is (the same total on each).
    counted = plan if before_id is None else _plan(conn, where or TaskFilter(), None, limit)
    if counted.index is None and counted.checked and _time_only(where):
        # A time range alone: counted from its index, exact up to `up_to`, index-only.
        counted = _Plan(_TIME_INDEX, [{}], counted.checked)
    bound = None
    if _searched(counted):
        reuse = before_id is None and newest
        bound = floor if reuse else _bound(conn, counted, None, newest=newest)
    counting = _ids(conn, counted, None, up_to + 1, newest=newest, merged=False, bound=bound)
    total = int(conn.execute(select(func.count()).select_from(counting.subquery())).scalar_one())
    return TaskPage(
        tasks=tasks,
        total=min(total, up_to),
        total_is_lower_bound=total > up_to or bound is not None,
        next_before=ids[-1] if more and ids else searched_to,
        searched_to=searched_to,
        count_searched=SCAN_BUDGET if bound is not None else None,
    )


def _time_only(where: TaskFilter | None) -> bool:
    """Whether `where` is a since and/or until and nothing else."""
    return (
        where is not None
        and (where.since is not None or where.until is not None)
        and (where == TaskFilter(since=where.since, until=where.until))
    )


def _searched(plan: _Plan) -> bool:
    """Whether the plan's ranges are checked task by task (a name glob, a time range in
    id order, ended_before): then a page reads at most SCAN_BUDGET tasks of them."""
    return bool(plan.checked) and plan.index not in (_TIME_INDEX, "")


def _bound(conn: Connection, plan: _Plan, before_id: int | None, *, newest: bool) -> int | None:
    """The id of the SCAN_BUDGET-th task of the plan's ranges below `before_id` (newest
    first; oldest first when not `newest`), None when they hold fewer: an index-only
    read, the conditions to check left aside."""
    ranges = _Plan(plan.index, plan.ranges, ())
    read = _ids(conn, ranges, before_id, SCAN_BUDGET, newest=newest).subquery()
    last = func.min(read.c.id) if newest else func.max(read.c.id)
    count, found = conn.execute(select(func.count(), last).select_from(read)).one()
    return int(found) if count >= SCAN_BUDGET else None


def _bounded(
    conn: Connection, equal: dict[str, str], bound: int, newest: bool
) -> ColumnElement[bool]:
    """`id >= bound` (`<=` when not `newest`) in a range of `equal`. On PostgreSQL, which
    takes no index hint, as one row comparison with the range's columns, which only the
    range's index serves: `id >= n` alone made it read the primary key instead,
    filtering the range's columns (every task newer than the bound)."""
    c = t.tasks.c
    if conn.dialect.name != "postgresql" or not equal:
        return c.id >= bound if newest else c.id <= bound
    row = tuple_(*(c[k] for k in equal), c.id)
    value = tuple_(*(literal(v) for v in equal.values()), literal(bound))
    return row >= value if newest else row <= value


def _plan(conn: Connection, where: TaskFilter, before_id: int | None, limit: int) -> _Plan:
    c = t.tasks.c
    every = conditions(where)
    if _time_driven(conn, where, before_id, limit):
        return _Plan(_TIME_INDEX, [{}], every)
    checked = checked_conditions(where)
    if not where.queues and not where.types and where.statuses is None:
        return _Plan(None, [{}], checked)
    types = sorted(where.types) if where.types else distinct(conn, c.type)
    statuses = sorted(where.statuses) if where.statuses is not None else distinct(conn, c.status)
    keys: tuple[str, ...] = ("type", "status")
    values: Iterable[tuple[str, ...]] = product(types, statuses)
    index = _TYPE_INDEX
    if where.queues:
        index, keys = _QUEUE_INDEX, ("queue", *keys)
        values = product(sorted(where.queues), types, statuses)
    ranges = [dict(zip(keys, v, strict=True)) for v in values]
    if len(ranges) > MAX_RANGES:  # one statement with IN lists, planned by the database
        return _Plan("", [{}], every)
    return _Plan(index, ranges, checked)


def _time_driven(conn: Connection, where: TaskFilter, before_id: int | None, limit: int) -> bool:
    """Whether the page is read from the time range of `where` (ix_created_at_id,
    sorted by id) rather than in id order: when the range holds at most
    SMALL_TIME_RANGE tasks (a bounded count), or when reading in id order would pass
    over more tasks outside the range than the range holds: the newer ones above an
    `until`, or, once fewer than a page of the range is left below `before_id`, every
    older one below a `since`. Those are estimated from the ids at the range's bounds
    (one index seek each): an estimate for the choice only, the page reads the same
    tasks either way."""
    c = t.tasks.c
    if where.since is None and where.until is None:
        return False
    bounds = [c.created_at >= where.since] if where.since is not None else []
    if where.until is not None:
        bounds.append(c.created_at < where.until)
    inside = _hinted(select(c.id).where(*bounds), conn, _TIME_INDEX)
    counted = inside.limit(SMALL_TIME_RANGE + 1).subquery()
    if conn.execute(select(func.count()).select_from(counted)).scalar_one() <= SMALL_TIME_RANGE:
        return True
    top = int(conn.execute(select(func.max(c.id))).scalar() or 0) + 1
    before = min(before_id, top) if before_id is not None else top
    low = _id_at(conn, c.created_at >= where.since) if where.since is not None else 0
    high = _id_at(conn, c.created_at >= where.until) if where.until is not None else None
    high = top if high is None else high
    passed = max(0, before - high)  # newer tasks, read first
    left = min(before, high) - (low or 0)  # the range's tasks below the page's start
    tail = (low or 0) if left <= limit else 0  # then every older task, to the first
    return passed + tail > high - (low or 0)


def _id_at(conn: Connection, bound: ColumnElement[bool]) -> int | None:
    """The id of the first task (by created_at) within `bound`, a lower bound of it."""
    c = t.tasks.c
    query = _hinted(select(c.id).where(bound).order_by(c.created_at), conn, _TIME_INDEX)
    found = conn.execute(query.limit(1)).scalar()
    return None if found is None else int(found)


def distinct(conn: Connection, column: Any) -> list[str]:
    """The distinct values of an indexed column (the leading column of an index), in
    order, one index seek each (a loose index scan: no backend skips through an index
    by itself without statistics). On SQLite and PostgreSQL the seeks are one
    statement (a recursive CTE: one round trip); MySQL and MariaDB allow no reference
    to a recursive CTE in a subquery: one statement per seek there."""
    if conn.dialect.name in ("sqlite", "postgresql"):
        seen = select(func.min(column).label("value")).cte("seen", recursive=True)
        following = select(func.min(column)).where(column > seen.c.value).scalar_subquery()
        seen = seen.union_all(select(following).where(seen.c.value.is_not(None)))
        query = select(seen.c.value).where(seen.c.value.is_not(None))
        return [str(v) for v in conn.execute(query).scalars()]
    found: list[str] = []
    while True:
        step = select(func.min(column))
        if found:
            step = step.where(column > found[-1])
        value = conn.execute(step).scalar()
        if value is None:
            return found
        found.append(value)


def _ids(
    conn: Connection,
    plan: _Plan,
    before_id: int | None,
    n: int,
    *,
    newest: bool,
    merged: bool = True,
    bound: int | None = None,
) -> Select[Any]:
    """The first `n` ids of the plan's ranges, newest first (`newest` False: oldest
    first, what a count of the oldest tasks reads first); `merged` False: `n` of them
    in no order (a count); `bound`: none beyond this id (see `_bounded`)."""
    c = t.tasks.c
    parts = []
    for equal in plan.ranges:
        part = select(c.id).where(*(c[k] == v for k, v in equal.items()), *plan.checked)
        if bound is not None:
            part = part.where(_bounded(conn, equal, bound, newest))
        if before_id is not None:
            part = part.where(c.id < before_id)
        key: Any = c.id
        if plan.index == _TIME_INDEX:
            # Not the primary key's order: PostgreSQL, which takes no index hint, would
            # otherwise read the primary key, passing over the tasks outside the range.
            key = c.id + 0
        if merged or plan.index != _TIME_INDEX:  # a count of a time range reads it whole
            part = part.order_by(key.desc() if newest else key)
        parts.append(_hinted(part, conn, plan.index).limit(n))
    if len(parts) == 1:
        return parts[0]
    # Each range in a subquery of its own: SQLite allows no ORDER BY / LIMIT in the
    # members of a compound select.
    union = union_all(*(select(p.subquery().c.id) for p in parts)).subquery()
    query = select(union.c.id)
    if merged:
        query = query.order_by(union.c.id.desc() if newest else union.c.id)
    return query.limit(n)


def _hinted(query: Select[Any], conn: Connection, index: str | None) -> Select[Any]:
    """`query` told to read `index` (None: the primary key; "": no hint) on SQLite and
    MariaDB: their planners, without statistics (SQLite) or with a range on another
    index in sight, may otherwise sort every match to find the first `n`. PostgreSQL
    plans these ranges well from its statistics."""
    if index == "":
        return query
    dialect = conn.dialect.name
    if dialect == "sqlite":
        hint = f"INDEXED BY {index}" if index else "NOT INDEXED"
        return query.with_hint(t.tasks, hint, "sqlite")
    if dialect in t.MYSQL:
        return query.with_hint(t.tasks, f"FORCE INDEX ({index or 'PRIMARY'})", dialect)
    return query
