"""The storage layer: every query and every transaction of bgtaskex lives here.

The runner, the client and the CLI talk to `Store` in domain words and get the frozen
dataclasses of `models` back. Each public method is one transaction; driver errors are
translated to `StorageError` / `DatabaseUnavailable` with secrets masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc

from . import tables as t
from .engine import make_engine
from .engine import now as _now
from .engine import translated as _translated
from .exceptions import SchemaOutdated, TaskInterrupted, TaskNotFound
from .models import (
    ACTIVE_STATUSES,
    TERMINAL,
    ActionRecord,
    ActionStatus,
    Change,
    Event,
    NewAction,
    NewEvent,
    Progress,
    Task,
    TaskFilter,
    TaskStatus,
    TaskType,
    run_order,
)
from .probe import HEAD_REVISION
from .store_admin import AdminQueries
from .store_admin import conditions as _conditions
from .urls import sqlite_path

log = logging.getLogger(__name__)


_TASK_TYPES = frozenset(t.value for t in TaskType)
_TASK_STATUSES = frozenset(s.value for s in TaskStatus)
_ACTION_STATUSES = frozenset(s.value for s in ActionStatus)


def _check_id(task_id: int) -> None:
    """Ids are positive 64-bit integers: anything else names no task (and would make
    the driver fail)."""
    if not 0 < task_id < 2**63:
        raise TaskNotFound(task_id)


def _task(row: Row[Any], actions: Sequence[ActionRecord] = ()) -> Task:
    return Task(
        id=row.id,
        name=row.name,
        type=TaskType(row.type) if row.type in _TASK_TYPES else row.type,
        queue=row.queue,
        status=TaskStatus(row.status) if row.status in _TASK_STATUSES else row.status,
        current_rank=row.current_rank,
        last_run_id=row.last_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        ended_at=row.ended_at,
        actions=tuple(actions),
        cancel_requested_at=row.cancel_requested_at,
    )


def _action(row: Row[Any]) -> ActionRecord:
    params = row.params
    if isinstance(params, str):  # JSON stored as text by some drivers
        params = json.loads(params)
    return ActionRecord(
        id=row.id,
        task_id=row.task_id,
        rank=row.rank,
        ref=row.ref,
        status=ActionStatus(row.status) if row.status in _ACTION_STATUSES else row.status,
        attempts=row.attempts,
        params=params,
        started_at=row.started_at,
        ended_at=row.ended_at,
        progress=(
            None
            if row.progress_done is None
            else Progress(row.progress_done, row.progress_total, row.progress_message)
        ),
        elapsed=row.elapsed or 0.0,
    )


class Store(AdminQueries):
    """Every read and write of bgtaskex's own tables, on SQLite or PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        create_dirs: bool = False,
    ) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None and create_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = make_engine(url, sqlite_synchronous, busy_timeout)

    @property
    def display_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    # -- transactions --------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _translated(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _translated(), self._engine.connect() as conn:
            conn.execution_options(bgtaskex_readonly=True)
            with conn.begin():
                yield conn

    # -- schema --------------------------------------------------------------------

    def schema_revision(self) -> str | None:
        """The Alembic revision of the database, None when it has no bgtaskex schema."""
        where = f"database {self.display_url}"
        with _translated(unavailable=True, where=where), self._engine.connect() as conn:
            for attempt in (1, 2):
                try:
                    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                except sa_exc.DBAPIError:
                    conn.rollback()
                    if not self._engine.dialect.has_table(conn, "alembic_version"):
                        return None
                    if attempt == 2:
                        raise
                    # another process created the schema since our SELECT: read again
            raise AssertionError("unreachable")

    def ensure_schema(self, upgrade: bool = True) -> None:
        """Create or upgrade the schema when it is not at this release's revision.

        The cheap check (one query) runs every time; Alembic is imported only when the
        schema actually needs work.
        """
        if self.schema_revision() == HEAD_REVISION:
            return
        if not upgrade:
            raise SchemaOutdated("the database schema is not current: run 'bgtaskex db upgrade'")
        self.upgrade()

    def upgrade(self, revision: str = "head") -> None:
        from alembic.util import CommandError

        from .migrate import upgrade

        with _translated():
            try:
                upgrade(self._engine, revision)
            except CommandError as err:  # e.g. a revision written by a newer release
                raise SchemaOutdated(
                    f"cannot upgrade the schema of {self.display_url}: {err} "
                    "(was it created by a newer bgtaskex?)"
                ) from None

    # -- tasks ---------------------------------------------------------------------

    def enqueue(self, name: str, type: TaskType, queue: str, actions: Sequence[NewAction]) -> int:
        """Persist a new task with its actions, in the `created` status; returns its id."""
        now = _now()
        with self._write() as conn:
            result = conn.execute(
                insert(t.tasks).values(
                    name=name,
                    type=type.value,
                    queue=queue,
                    status=TaskStatus.CREATED.value,
                    run_order=run_order(type, TaskStatus.CREATED),
                    created_at=now,
                    updated_at=now,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            task_id = int(key[0])
            conn.execute(
                insert(t.actions),
                [
                    {
                        "task_id": task_id,
                        "rank": rank,
                        "ref": action.ref,
                        "status": ActionStatus.PENDING.value,
                        "attempts": 0,
                        "params": action.params,
                        "initial_params": action.params,
                        "elapsed": 0.0,
                    }
                    for rank, action in enumerate(actions, start=1)
                ],
            )
            conn.execute(
                insert(t.events).values(
                    task_id=task_id,
                    at=now,
                    old_status=None,
                    new_status=TaskStatus.CREATED.value,
                    message=f"enqueued with {len(actions)} action(s)",
                )
            )
        return task_id

    def _actions_of(self, conn: Connection, task_ids: Collection[int]) -> dict[int, list[Any]]:
        found: dict[int, list[Any]] = {task_id: [] for task_id in task_ids}
        if task_ids:
            rows = conn.execute(
                select(t.actions)
                .where(t.actions.c.task_id.in_(list(task_ids)))
                .order_by(t.actions.c.task_id, t.actions.c.rank)
            )
            for row in rows:
                found[row.task_id].append(_action(row))
        return found

    def get_task(self, task_id: int) -> Task:
        _check_id(task_id)
        with self._read() as conn:
            row = conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).first()
            if row is None:
                raise TaskNotFound(task_id)
            return _task(row, self._actions_of(conn, [task_id])[task_id])

    def list_tasks(self, where: TaskFilter | None = None, *, limit: int = 50) -> list[Task]:
        """Tasks still to run first, in the order the run takes them; then ended ones,
        newest first. Each part is a range scan of its own partial index."""
        where = where or TaskFilter()
        conds = _conditions(where)
        wanted = where.statuses
        with self._read() as conn:
            rows: list[Row[Any]] = []
            if wanted is None or wanted & ACTIVE_STATUSES:
                waiting = select(t.tasks).where(t.tasks.c.run_order.isnot(None), *conds)
                rows.extend(
                    conn.execute(waiting.order_by(t.tasks.c.run_order, t.tasks.c.id).limit(limit))
                )
            if len(rows) < limit and (wanted is None or wanted & TERMINAL):
                ended = select(t.tasks).where(t.tasks.c.run_order.is_(None), *conds)
                rows.extend(
                    conn.execute(ended.order_by(t.tasks.c.id.desc()).limit(limit - len(rows)))
                )
            found = self._actions_of(conn, [row.id for row in rows])
            return [_task(row, found[row.id]) for row in rows]

    def count_tasks(self, where: TaskFilter | None = None, *, up_to: int | None = None) -> int:
        """How many tasks `where` selects; with `up_to`, stop counting there (a filter no
        index serves, like --name, would otherwise read the whole table)."""
        with self._read() as conn:
            matching = select(t.tasks.c.id).where(*_conditions(where))
            if up_to is not None:
                matching = matching.limit(up_to)
            query = select(func.count()).select_from(matching.subquery())
            return int(conn.execute(query).scalar_one())

    def events(self, task_id: int) -> list[Event]:
        _check_id(task_id)
        with self._read() as conn:
            if conn.execute(select(t.tasks.c.id).where(t.tasks.c.id == task_id)).first() is None:
                raise TaskNotFound(task_id)
            rows = conn.execute(
                select(t.events).where(t.events.c.task_id == task_id).order_by(t.events.c.id)
            )
            return [
                Event(
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
                for row in rows
            ]

    def next_task(
        self,
        *,
        skip_run: str | None = None,
        exclude: Collection[int] = (),
        queues: Collection[str] | None = None,
    ) -> Task | None:
        """The task the run should process next (see `models.run_order`), with its
        actions. Tasks last written by run `skip_run` (already handled by it) and those
        in `exclude` are passed over."""
        query = (
            select(t.tasks)
            .where(t.tasks.c.run_order.isnot(None))
            .order_by(t.tasks.c.run_order, t.tasks.c.id)
            .limit(1)
        )
        if skip_run is not None:
            query = query.where(
                or_(t.tasks.c.last_run_id.is_(None), t.tasks.c.last_run_id != skip_run)
            )
        if exclude:
            query = query.where(t.tasks.c.id.not_in(list(exclude)))
        if queues is not None:
            query = query.where(t.tasks.c.queue.in_(sorted(queues)))
        with self._read() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            return _task(row, self._actions_of(conn, [row.id])[row.id])

    def has_due_tasks(self) -> bool:
        with self._read() as conn:
            query = select(t.tasks.c.id).where(t.tasks.c.run_order.isnot(None)).limit(1)
            return conn.execute(query).first() is not None

    def apply(self, change: Change) -> None:
        """Write one state change of a task (status, actions, events) in one transaction.

        The write only happens while the task is neither ended nor asked to cancel;
        otherwise nothing is written and TaskInterrupted is raised, so a run never
        overwrites a `bgtaskex cancel`.
        """
        now = _now()
        values: dict[str, Any] = {"updated_at": now, "last_run_id": change.run_id}
        if change.status is not None:
            values["status"] = change.status.value
            values["run_order"] = _run_order_sql(change.status)
            if change.status.terminal:
                values["ended_at"] = now
        if change.current_rank is not None:
            values["current_rank"] = change.current_rank
        with self._write() as conn:
            updated = conn.execute(
                update(t.tasks)
                .where(
                    t.tasks.c.id == change.task_id,
                    t.tasks.c.run_order.isnot(None),
                    t.tasks.c.cancel_requested_at.is_(None),
                )
                .values(values)
            )
            if updated.rowcount != 1:
                raise TaskInterrupted(change.task_id)
            for action in change.actions:
                action_values: dict[str, Any] = {}
                if action.status is not None:
                    action_values["status"] = action.status.value
                    if action.status is ActionStatus.ACTIVE:
                        action_values["started_at"] = func.coalesce(t.actions.c.started_at, now)
                    elif action.status.ended:
                        action_values["ended_at"] = now
                if action.params is not None:
                    action_values["params"] = action.params
                if action.attempts is not None:
                    action_values["attempts"] = action.attempts
                if action.progress is not None:
                    action_values["progress_done"] = action.progress.done
                    action_values["progress_total"] = action.progress.total
                    action_values["progress_message"] = action.progress.message
                if action.elapsed:
                    action_values["elapsed"] = t.actions.c.elapsed + action.elapsed
                if action_values:
                    conn.execute(
                        update(t.actions)
                        .where(t.actions.c.task_id == change.task_id)
                        .where(t.actions.c.rank == action.rank)
                        .values(action_values)
                    )
            if change.events:
                conn.execute(
                    insert(t.events),
                    [_event_values(change.task_id, change.run_id, now, e) for e in change.events],
                )


def _run_order_sql(status: TaskStatus) -> Any:
    """models.run_order computed in SQL from the row's type, so an update needs no read."""
    if status.terminal:
        return None
    interactive = run_order(TaskType.INTERACTIVE, status)
    cron = run_order(TaskType.CRON, status)
    return case((t.tasks.c.type == TaskType.INTERACTIVE.value, interactive), else_=cron)


def _event_values(task_id: int, run_id: str, at: datetime, new: NewEvent) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "run_id": run_id,
        "rank": new.rank,
        "old_status": new.old_status,
        "new_status": new.new_status,
        "message": new.message,
        "error": new.error,
    }
