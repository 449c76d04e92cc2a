"""Every statement the store sends, and the builders that fit one to a dialect.

The run's statements are built once per shape and reused (`functools.cache`):
SQLAlchemy then finds their compiled form by a cache key it computed once, instead of
rebuilding both on every write. Parameters are named `v_*`. The clock of leases, the
"due now" and "lease free" filters and the claim's statements are in `lease_statements`.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from .. import tables as t
from ..config import text_problem
from ..models import (
    ActionChange,
    ActionStatus,
    Change,
    NewEvent,
    TaskType,
    run_order,
)
from ..plan import Routing
from ..urls import mask_secrets
from .engine import mysql_lock_name
from .lease_statements import due_now, lease_clock, lease_free, not_paused

# -- rows ------------------------------------------------------------------------------

INSERT_EVENT = insert(t.events)
#: The most event rows one `insert_events` statement carries.
EVENTS_PER_INSERT = 16
_EVENT_COLUMNS = ("task_id", "at", "run_id", "rank", "old_status", "new_status", "message", "error")


def storable(text: str) -> str:
    """`text` as every backend stores it (`config.text_problem`): a NUL (PostgreSQL
    refuses it in text) written as `\\x00`, a lone surrogate (it has no UTF-8) as
    U+FFFD. An action's error or note holding one would otherwise fail the run's own
    write at every run."""
    if text_problem(text) is None:  # nearly always, and at once for ASCII
        return text
    text = text.replace("\x00", "\\x00")
    if text_problem(text) is not None:  # lone surrogates are left
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def event_row(task_id: int, at: datetime, run_id: str | None, new: NewEvent) -> dict[str, Any]:
    """The row of the events table for `new`: the one place an event row is built."""
    return {
        "task_id": task_id,
        "at": at,
        "run_id": run_id,
        "rank": new.rank,
        "old_status": new.old_status,
        "new_status": new.new_status,
        # History leaves the process (show, --json): no password in it, whoever wrote it.
        "message": storable(mask_secrets(new.message)) if new.message else new.message,
        "error": storable(mask_secrets(new.error)) if new.error else new.error,
    }


@functools.cache
def insert_events(count: int) -> Any:
    """One INSERT of `count` rows of `event_row` (their parameters: `events_values`):
    the run's events in one statement, with no executemany."""
    types = {"at": t.UTCDateTime()}
    return insert(t.events).values(
        [
            {k: bindparam(f"v_{k}_{i}", type_=types.get(k)) for k in _EVENT_COLUMNS}
            for i in range(count)
        ]
    )


@functools.cache
def _event_keys(i: int) -> tuple[str, ...]:
    return tuple(f"v_{k}_{i}" for k in _EVENT_COLUMNS)


def events_values(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The parameters of `insert_events(len(rows))` for `rows` (of `event_row`)."""
    values: dict[str, Any] = {}
    for i, row in enumerate(rows):
        values.update(zip(_event_keys(i), map(row.__getitem__, _EVENT_COLUMNS), strict=True))
    return values


ACTIONS_OF_TASK = (
    select(t.actions)
    .where(t.actions.c.task_id == bindparam("v_task_id"))
    .order_by(t.actions.c.rank)
)
UNFINISHED_ACTIONS = (ActionStatus.PENDING.value, ActionStatus.ACTIVE.value)

# -- the due tasks ---------------------------------------------------------------------

# A run does not take again a task it already wrote (last_run_id), so paused and
# errored tasks wait for the next run.
_NEXT_TASK_ID = (
    select(t.tasks.c.id)
    .where(
        t.tasks.c.run_order.isnot(None),
        or_(t.tasks.c.last_run_id.is_(None), t.tasks.c.last_run_id != bindparam("v_skip_run")),
        t.tasks.c.id != bindparam("v_skip_task"),
    )
    .order_by(t.tasks.c.run_order, t.tasks.c.id)
    .limit(1)
)


def narrowed(due: Any, exclude: Collection[int], routing: Routing | None) -> Any:
    """`due` without the tasks of `exclude`, from the queues `routing` serves (None:
    any); `due` itself when nothing narrows it (its cached statement)."""
    c = t.tasks.c
    if exclude:
        due = due.where(c.id.not_in(list(exclude)))
    if routing is not None and routing.queues is not None:
        due = due.where(c.queue.in_(sorted(routing.queues)))
    if routing is not None and routing.excluded:
        due = due.where(c.queue.not_in(sorted(routing.excluded)))
    return due


def joined(which: Any) -> Any:
    """The task `which` selects, joined to its actions (if any), in one statement."""
    columns = [c.label(f"t_{c.name}") for c in t.tasks.c]
    columns += [c.label(f"a_{c.name}") for c in t.actions.c]
    return (
        select(*columns)
        .outerjoin_from(t.tasks, t.actions, t.actions.c.task_id == t.tasks.c.id)
        .where(which)
        .order_by(t.actions.c.rank)
    )


def next_task(due: Any) -> Any:
    """The task of the id `due` selects, with its actions."""
    return joined(t.tasks.c.id == due.scalar_subquery())


TASK_BY_ID = joined(t.tasks.c.id == bindparam("v_task_id"))


@functools.cache
def next_task_id(dialect: str) -> Any:
    """The id of the next due task that no live lease holds."""
    return _NEXT_TASK_ID.where(due_now(dialect), lease_free(dialect), not_paused())


@functools.cache
def has_due(dialect: str) -> Any:
    """Whether a task of a queue not paused is due now, whoever holds it."""
    c = t.tasks.c
    return select(c.id).where(c.run_order.isnot(None), due_now(dialect), not_paused()).limit(1)


@functools.cache
def next_due_at(dialect: str) -> Any:
    """When the next waiting task that is not due yet becomes due, in the queues not
    paused (None: none waits)."""
    c = t.tasks.c
    later = c.not_before > lease_clock(dialect)[0]
    return select(func.min(c.not_before)).where(c.run_order.isnot(None), later, not_paused())


@functools.cache
def next_task_of(dialect: str) -> Any:
    return next_task(next_task_id(dialect))


# -- the run's writes ------------------------------------------------------------------


def task_update(
    change: Change, now: datetime, dialect: str, lease_params: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The cached UPDATE of the task row for `change`, and its parameters."""
    status = change.status
    values: dict[str, Any] = {"v_task_id": change.task_id, "v_now": now, "v_run_id": change.run_id}
    if status is not None:
        values["v_status"] = status.value
        if not status.terminal:
            values["v_order_interactive"] = run_order(TaskType.INTERACTIVE, status)
            values["v_order_cron"] = run_order(TaskType.CRON, status)
    if change.current_rank is not None:
        values["v_rank"] = change.current_rank
    if change.token is not None:
        values["v_token"] = change.token
    if change.claim_as is not None:
        values["v_worker"] = change.claim_as[:100]
        values.update(lease_params)
    if status is not None or change.not_before is not None:
        values["v_not_before"] = change.not_before  # a new status clears a delay
    statement = task_statement(
        dialect,
        status is not None,
        status is not None and status.terminal,
        "v_rank" in values,
        change.token is not None,
        change.release,
        change.claim_as is not None,
        "v_not_before" in values,
    )
    return statement, values


@functools.cache
def task_statement(
    dialect: str,
    has_status: bool,
    terminal: bool,
    has_rank: bool,
    fenced: bool,
    release: bool,
    claim: bool,
    not_before: bool = False,
) -> Any:
    """The UPDATE of a task row by the run, for one shape of change; it matches no row
    once the task is ended or asked to cancel (or, `fenced`, claimed by another run)."""
    c = t.tasks.c
    values: dict[str, Any] = {
        "updated_at": bindparam("v_now", type_=t.UTCDateTime()),
        "last_run_id": bindparam("v_run_id"),
    }
    if has_status:
        values["status"] = bindparam("v_status")
        # models.run_order computed from the row's own type: no read needed.
        values["run_order"] = (
            None
            if terminal
            else case(
                (c.type == TaskType.INTERACTIVE.value, bindparam("v_order_interactive")),
                else_=bindparam("v_order_cron"),
            )
        )
        if terminal:
            values["ended_at"] = bindparam("v_now", type_=t.UTCDateTime())
            values["unique_key"] = None  # an ended task frees its key
    if has_rank:
        values["current_rank"] = bindparam("v_rank")
    if not_before:
        values["not_before"] = bindparam("v_not_before", type_=t.UTCDateTime())
    statement = update(t.tasks).where(
        c.id == bindparam("v_task_id"),
        c.run_order.isnot(None),
        c.cancel_requested_at.is_(None),
    )
    if fenced:
        statement = statement.where(c.claim_token == bindparam("v_token"))
    if claim:  # the token read with the task, and no other run's live lease
        statement = statement.where(lease_free(dialect))
        values["claim_token"] = c.claim_token + 1
        values["claimed_by"] = bindparam("v_worker")
        values["lease_until"] = lease_clock(dialect)[1]
    if release:
        values["lease_until"] = None
    return statement.values(values)


def action_update(task_id: int, change: ActionChange, now: datetime) -> tuple[Any, dict[str, Any]]:
    """The cached UPDATE for the fields `change` sets (None: it sets none), and its
    parameters."""
    values: dict[str, Any] = {"v_task_id": task_id, "v_rank": change.rank}
    kind = None
    if change.status is not None:
        values["v_status"] = change.status.value
        kind = (
            "active"
            if change.status is ActionStatus.ACTIVE
            else ("ended" if change.status.ended else "other")
        )
        values["v_now"] = now
    if change.params is not None:
        values["v_params"] = change.params
    if change.attempts is not None:
        values["v_attempts"] = change.attempts
    if change.progress is not None:
        values["v_done"] = change.progress.done
        values["v_total"] = change.progress.total
        message = change.progress.message
        values["v_message"] = storable(message) if message else message
    if change.elapsed:
        values["v_elapsed"] = change.elapsed
    if change.last_failure is not None:  # "" clears it; no password leaves in it
        values["v_failure"] = storable(mask_secrets(change.last_failure))[:2000] or None
    if len(values) == 2:
        return None, values
    shape = (
        kind,
        "v_params" in values,
        "v_attempts" in values,
        "v_done" in values,
        "v_elapsed" in values,
        "v_failure" in values,
    )
    return action_statement(*shape), values


@functools.cache
def action_statement(
    kind: str | None,
    params: bool,
    attempts: bool,
    progress: bool,
    elapsed: bool,
    failure: bool = False,
) -> Any:
    c = t.actions.c
    now = bindparam("v_now", type_=t.UTCDateTime())
    values: dict[str, Any] = {}
    if kind is not None:
        values["status"] = bindparam("v_status")
        if kind == "active":
            values["started_at"] = func.coalesce(c.started_at, now)
        elif kind == "ended":
            values["ended_at"] = now
    if params:
        values["params"] = bindparam("v_params", type_=t.Params())
    if attempts:
        values["attempts"] = bindparam("v_attempts")
    if progress:
        values["progress_done"] = bindparam("v_done")
        values["progress_total"] = bindparam("v_total")
        values["progress_message"] = bindparam("v_message")
    if elapsed:
        values["elapsed"] = c.elapsed + bindparam("v_elapsed", type_=Float())
    if failure:
        values["last_failure"] = bindparam("v_failure")
    return (
        update(t.actions)
        .where(c.task_id == bindparam("v_task_id"), c.rank == bindparam("v_rank"))
        .values(values)
    )


# -- wake-ups --------------------------------------------------------------------------

# A channel per schema, so that installations in several schemas of one database wake
# only their own daemons.
CHANNEL = "SELECT 'bgtaskex_' || current_schema()"
NOTIFY = text("SELECT pg_notify('bgtaskex_' || current_schema(), :v_queue)")
# enqueue's: not for a paused queue (read by this very statement), whose task no run
# would take: a daemon woken for it would make an empty run per enqueue.
NOTIFY_UNLESS_PAUSED = text(
    "SELECT pg_notify('bgtaskex_' || current_schema(), :v_queue)"
    f" WHERE NOT EXISTS (SELECT 1 FROM {t.queue_pauses.name} WHERE queue = :v_queue)"
)


@functools.cache
def waiting_interactive(dialect: str) -> Any:
    """The queues, not paused, of interactive tasks queued, not yet started, and due now."""
    c = t.tasks.c
    due = (c.run_order == bindparam("v_order"), due_now(dialect), not_paused())
    return select(c.queue).where(*due).distinct()


# -- the cluster lock ------------------------------------------------------------------

# PostgreSQL: two int4 keys, bgtaskex's and the schema's, so that installations in
# several schemas of one database do not exclude each other.
_CLUSTER_KEYS = "hashtext('bgtaskex'), hashtext(current_schema())"
KEEPALIVES = text(
    "SELECT set_config('tcp_keepalives_idle', '30', false), "
    "set_config('tcp_keepalives_interval', '10', false), "
    "set_config('tcp_keepalives_count', '3', false)"
)
PG_TRY_LOCK = text(f"SELECT pg_try_advisory_lock({_CLUSTER_KEYS})")
PG_UNLOCK = text(f"SELECT pg_advisory_unlock({_CLUSTER_KEYS})")
PG_LOCK_HOLDER = text(
    "SELECT 'backend pid' AS what, l.pid, coalesce(' on ' || host(a.client_addr), '') AS client "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.classid = hashtext('bgtaskex')::oid AND l.objid = hashtext(current_schema())::oid "
    "LIMIT 1"
)
PG_LOCK_MINE = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() "
    "AND classid = hashtext('bgtaskex')::oid AND objid = hashtext(current_schema())::oid"
)
# MySQL / MariaDB: a user lock per database (see engine.mysql_lock_name).
_MY_LOCK = mysql_lock_name("run")
MY_TRY_LOCK = text(f"SELECT GET_LOCK({_MY_LOCK}, 0)")
MY_UNLOCK = text(f"SELECT RELEASE_LOCK({_MY_LOCK})")
MY_LOCK_USED_BY = text(f"SELECT IS_USED_LOCK({_MY_LOCK})")  # its connection id, or NULL
MY_LOCK_MINE = text(f"SELECT IS_USED_LOCK({_MY_LOCK}) = CONNECTION_ID()")
MY_LOCK_HOLDER = text(
    "SELECT 'connection id' AS what, p.id AS pid, "
    "COALESCE(CONCAT(' on ', SUBSTRING_INDEX(p.host, ':', 1)), '') AS client "
    f"FROM information_schema.processlist p WHERE p.id = IS_USED_LOCK({_MY_LOCK})"
)
