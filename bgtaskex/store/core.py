"""The storage layer: every query and every transaction of bgtaskex lives here.

The runner, the client and the CLI talk to `Store` in domain words and get the frozen
dataclasses of `models` back. Each public method is one transaction; driver errors are
translated to `StorageError` / `DatabaseUnavailable` with secrets masked.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    Row,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc

from .. import tables as t
from ..exceptions import (
    ClaimLost,
    ConfigError,
    LockBusy,
    SchemaOutdated,
    TaskInterrupted,
    TaskNotFound,
)
from ..files import file_error, private_dir
from ..models import (
    ACTIVE_STATUSES,
    TERMINAL,
    ActionChange,
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
from ..owner import holder_is_gone
from ..urls import mask_secrets, sqlite_path
from .admin import AdminQueries, check_id, event_record
from .admin import conditions as _conditions
from .engine import make_engine, mysql_lock_name, retrying_deadlocks
from .engine import now as _now
from .engine import translated as _translated
from .probe import HEAD_REVISION, LEGACY_REVISIONS, LEGACY_VERSION_TABLE, VERSION_TABLE

log = logging.getLogger("bgtaskex.store")  # a stable name, for log filters


_TASK_TYPES = frozenset(t.value for t in TaskType)
_TASK_STATUSES = frozenset(s.value for s in TaskStatus)
_ACTION_STATUSES = frozenset(s.value for s in ActionStatus)


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
        claimed_by=row.claimed_by,
        claim_token=row.claim_token or 0,
        lease_until=row.lease_until,
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
    """Every read and write of bgtaskex's own tables, on SQLite, PostgreSQL or
    MySQL / MariaDB."""

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        create_dirs: bool = False,
        idle_in_transaction: float | None = None,
    ) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None and create_dirs:
            try:
                private_dir(path.parent)  # 0700 whatever the umask (the file: make_engine)
            except OSError as err:
                raise file_error(f"cannot create {path.parent}", err) from None
        self._engine = make_engine(
            url, sqlite_synchronous, busy_timeout, idle_in_transaction=idle_in_transaction
        )
        self._local = threading.local()  # the connection `bound()` holds, per thread

    @property
    def display_url(self) -> str:
        return mask_secrets(self._engine.url.render_as_string(hide_password=True))

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    # -- transactions --------------------------------------------------------------

    @contextmanager
    def bound(self) -> Iterator[None]:
        """Run every transaction of this thread, inside the block, on one connection.

        A run does thousands of short transactions: taking one connection for all of
        them saves a pool checkout each, and on PostgreSQL the liveness ping
        (`pool_pre_ping`) that comes with every checkout.
        """
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with _translated(unavailable=True), self._engine.connect() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def _connection(self, kind: str) -> Iterator[Connection]:
        """The thread's bound connection, or a new one; `kind` (write, read or
        statement) tells the SQLite begin hook (engine.py) how to open the transaction."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._engine.connect() as conn:
                conn.execution_options(bgtaskex_txn=kind)
                yield conn
        else:
            conn.execution_options(bgtaskex_txn=kind)
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _translated(), self._connection("write") as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self, *, single: bool = False) -> Iterator[Connection]:
        """A read transaction; `single`: for one statement, which on SQLite then needs no
        BEGIN (one statement is consistent on its own)."""
        kind = "statement" if single else "read"
        with _translated(), self._connection(kind) as conn, conn.begin():
            yield conn

    @contextmanager
    def cluster_lock(self, wait: float = 0.0) -> Iterator[Callable[[], bool]]:
        """One run at a time across every host (`lock = "database"`): on PostgreSQL a
        session advisory lock, per schema; on MySQL / MariaDB a user lock (GET_LOCK), per
        database; held on a connection of its own for the block. If the client vanishes,
        the server drops the lock with its connection. Raises LockBusy when another run
        holds it (after `wait` seconds).

        It needs a session of its own: behind PgBouncer in transaction pooling (or a
        MySQL proxy multiplexing sessions), point bgtaskex at the server or at a
        session-pooling port.

        The block gets a function telling whether the lock is still held: False once
        the server ended the lock's session (a restart, a failover,
        `pg_terminate_backend`, an idle timeout, a proxy). Only the caller's thread or
        one watcher may call it: it uses the lock's connection."""
        if self.dialect == "postgresql":
            try_lock, holder_of, unlock = _TRY_CLUSTER_LOCK, _CLUSTER_LOCK_HOLDER, _CLUSTER_UNLOCK
            mine = _CLUSTER_LOCK_MINE
        elif self.dialect in t.MYSQL:
            try_lock, holder_of, unlock = _MY_TRY_LOCK, _MY_LOCK_HOLDER, _MY_UNLOCK
            mine = _MY_LOCK_MINE
        else:
            raise ConfigError(
                f'lock = "database" needs PostgreSQL or MySQL / MariaDB, not {self.dialect}'
            )
        give_up = time.monotonic() + wait
        with _translated(unavailable=True), self._engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql":
                # A host cut off (not closed) would keep its session, and so the lock,
                # until TCP gives up (hours by default): probe the client within a minute.
                conn.execute(_KEEPALIVES)
            while not conn.execute(try_lock).scalar():
                if time.monotonic() >= give_up:
                    holder = conn.execute(holder_of).first()
                    who = f" ({holder.what} {holder.pid}{holder.client})" if holder else ""
                    raise LockBusy(f"another run{who} holds the database lock; nothing done")
                time.sleep(0.2)

            def still_held() -> bool:
                try:
                    return bool(conn.execute(mine).scalar())
                except sa_exc.SQLAlchemyError:
                    return False

            try:
                yield still_held
            finally:
                try:
                    conn.execute(unlock)
                except sa_exc.SQLAlchemyError:
                    # Not back to the pool still holding the lock: closing the
                    # connection makes the server drop it.
                    with suppress(sa_exc.SQLAlchemyError):
                        conn.invalidate()

    def cluster_lock_held(self) -> bool:
        """Whether some run holds the cluster lock (`cluster_lock`) of this schema or
        database right now; always False where there is none (SQLite)."""
        if self.dialect not in ("postgresql", *t.MYSQL):
            return False
        with self._read(single=True) as conn:
            if self.dialect == "postgresql":
                return conn.execute(_CLUSTER_LOCK_HOLDER).first() is not None
            return conn.execute(_MY_LOCK_USED_BY).scalar() is not None

    # -- schema --------------------------------------------------------------------

    #: True on the stand-in of `Store.empty`: the database has no bgtaskex schema yet.
    no_schema = False

    @classmethod
    def empty(cls) -> Store:
        """An empty queue in memory, at this release's schema, refusing writes: what the
        commands that only read get for a database without bgtaskex's schema, so that
        they answer as for an empty queue and create nothing there."""
        store = cls("sqlite://")
        store.no_schema = True
        with store._engine.connect() as conn:  # the one connection of this thread
            conn.execution_options(bgtaskex_txn="statement")
            t.metadata.create_all(conn)
            conn.exec_driver_sql("PRAGMA query_only=ON")
            conn.commit()
        return store

    def schema_revision(self) -> str | None:
        """The Alembic revision of bgtaskex's schema, None when the database has none.

        An install of an earlier release keeps it in Alembic's `alembic_version`: that
        counts too, until the next upgrade moves it to bgtaskex's own table."""
        return self.schema_state()[0]

    def schema_state(self) -> tuple[str | None, bool]:
        """(`schema_revision()`, True when an earlier release wrote it in
        `alembic_version`, where the next upgrade moves it from); reads only."""
        where = f"database {self.display_url}"
        select_revision = text(f"SELECT version_num FROM {VERSION_TABLE}")
        with _translated(unavailable=True, where=where), self._engine.connect() as conn:
            conn.execution_options(bgtaskex_txn="statement")  # SQLite: no write lock to read
            for attempt in (1, 2):
                try:
                    revision = conn.execute(select_revision).scalar()
                except sa_exc.DBAPIError:
                    conn.rollback()
                    if self._engine.dialect.has_table(conn, VERSION_TABLE):
                        if attempt == 2:
                            raise
                        continue  # another process created it since our SELECT: read again
                    revision = None
                if revision is not None:
                    return revision, False
                legacy = self.legacy_revision(conn)
                return legacy, legacy is not None
            raise AssertionError("unreachable")

    @staticmethod
    def legacy_revision(conn: Connection) -> str | None:
        """The revision an earlier release of bgtaskex wrote in `alembic_version`: only a
        bgtaskex revision, alone there, beside bgtaskex's tables. An application's
        Alembic history in the same database gives None."""
        has_table = conn.dialect.has_table
        if not has_table(conn, LEGACY_VERSION_TABLE) or not has_table(conn, t.tasks.name):
            return None
        rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).scalars().all()
        return rows[0] if len(rows) == 1 and rows[0] in LEGACY_REVISIONS else None

    def ensure_schema(self, upgrade: bool = True) -> None:
        """Create or upgrade the schema when it is not at this release's revision.

        The cheap check (one query) runs every time; Alembic is imported only when the
        schema actually needs work. `upgrade=False` (the commands that only read):
        SchemaOutdated instead, and a current schema whose revision an earlier release
        wrote in `alembic_version` is fine as it is.
        """
        revision, legacy = self.schema_state()
        if revision == HEAD_REVISION and (not legacy or not upgrade):
            return
        if not upgrade:
            found = f"at revision {revision}" if revision else "not created yet"
            raise SchemaOutdated(
                f"the database schema is {found}, this release needs {HEAD_REVISION}: "
                "run 'bgtaskex db upgrade' (or a newer bgtaskex, if the schema is newer)"
            )
        self.upgrade()

    def upgrade(self, revision: str = "head") -> None:
        """Migrate to `revision` (moving the revision of an earlier release's install to
        bgtaskex's own version table); concurrent callers serialise (migrate.upgrade)."""
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
            if type is TaskType.INTERACTIVE and self.dialect == "postgresql":
                # Delivered at commit to the daemons listening (see `wake_ups`).
                conn.execute(_NOTIFY, {"v_queue": queue})
        return task_id

    def waiting_interactive_queues(self) -> list[str]:
        """The queues of interactive tasks queued and not yet started (an index range):
        the daemon's cheap poll for work that should not wait for the next tick."""
        new = run_order(TaskType.INTERACTIVE, TaskStatus.CREATED)
        with self._read(single=True) as conn:
            return list(conn.execute(_WAITING_INTERACTIVE, {"v_order": new}).scalars())

    def wake_ups(self, timeout: float) -> Iterator[str | None]:
        """On PostgreSQL, the queues named by `enqueue` of interactive tasks, as they come
        (LISTEN on a connection of its own); None every `timeout` seconds without one.
        Elsewhere, only None every `timeout` seconds: poll `waiting_interactive_queues`."""
        if self.dialect != "postgresql":
            while True:
                time.sleep(timeout)
                yield None
        raw = self._engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            channel = driver.execute(_CHANNEL).fetchone()[0]
            driver.execute(f'LISTEN "{channel}"')
            while True:
                got = False
                for note in driver.notifies(timeout=timeout):
                    got = True
                    yield note.payload
                if not got:
                    yield None
        finally:
            # Autocommit and LISTEN stay with the driver's connection: never back to the
            # pool, where a run would take it for one that has transactions.
            with suppress(Exception):
                raw.invalidate()
            raw.close()

    def _actions_of(self, conn: Connection, task_ids: Collection[int]) -> dict[int, list[Any]]:
        found: dict[int, list[Any]] = {task_id: [] for task_id in task_ids}
        if len(task_ids) == 1:  # get_task: one cached statement
            rows = conn.execute(_ACTIONS_OF_TASK, {"v_task_id": next(iter(task_ids))})
        elif task_ids:
            rows = conn.execute(
                select(t.actions)
                .where(t.actions.c.task_id.in_(list(task_ids)))
                .order_by(t.actions.c.task_id, t.actions.c.rank)
            )
        else:
            return found
        for row in rows:
            found[row.task_id].append(_action(row))
        return found

    def get_task(self, task_id: int) -> Task:
        check_id(task_id)
        with self._read() as conn:
            row = conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).first()
            if row is None:
                raise TaskNotFound(task_id)
            return _task(row, self._actions_of(conn, [task_id])[task_id])

    def get_task_page(self, task_id: int, max_actions: int) -> tuple[Task, int]:
        """The task with its first `max_actions` actions by rank (plus its current action
        when that lies further), and how many actions it has: `show` of a task of
        100,000 actions reads a page of the index on (task_id, rank), not the chain."""
        check_id(task_id)
        a = t.actions.c
        with self._read() as conn:
            row = conn.execute(select(t.tasks).where(t.tasks.c.id == task_id)).first()
            if row is None:
                raise TaskNotFound(task_id)
            page = select(t.actions).where(a.task_id == task_id).order_by(a.rank)
            found = [_action(r) for r in conn.execute(page.limit(max(0, max_actions)))]
            current = row.current_rank
            if current is not None and all(r.rank != current for r in found):
                at = conn.execute(select(t.actions).where(a.task_id == task_id, a.rank == current))
                found.extend(_action(r) for r in at)
            count = conn.execute(
                select(func.count()).select_from(t.actions).where(a.task_id == task_id)
            ).scalar_one()
            return _task(row, found), int(count)

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
        check_id(task_id)
        with self._read() as conn:
            if conn.execute(select(t.tasks.c.id).where(t.tasks.c.id == task_id)).first() is None:
                raise TaskNotFound(task_id)
            rows = conn.execute(
                select(t.events).where(t.events.c.task_id == task_id).order_by(t.events.c.id)
            )
            return [event_record(row) for row in rows]

    def next_task(
        self,
        *,
        skip_run: str | None = None,
        skip_task: int | None = None,
        exclude: Collection[int] = (),
        queues: Collection[str] | None = None,
        exclude_queues: Collection[str] = (),
    ) -> Task | None:
        """The task the run should process next (see `models.run_order`), with its
        actions, from `queues` (None: any) but not `exclude_queues`. Tasks last written
        by run `skip_run` (already handled by it), `skip_task` (handled, not yet written)
        and those in `exclude` are passed over, and so are tasks that another run holds
        under a live lease (it is executing them)."""
        first = _next_task_id(self.dialect)
        due = _narrowed(first, exclude, queues, exclude_queues)
        params = self._lease_params(0.0)
        params.update(v_skip_run=skip_run or "", v_skip_task=-1 if skip_task is None else skip_task)
        query = _next_task(due) if due is not first else _next_task_of(self.dialect)
        with self._read(single=True) as conn:
            return _task_of_rows(conn.execute(query, params).all())

    def claim(
        self,
        worker: str,
        run_id: str,
        lease: float,
        *,
        exclude: Collection[int] = (),
        queues: Collection[str] | None = None,
        exclude_queues: Collection[str] = (),
    ) -> Task | None:
        """Claim the next due task for `worker`, in one short transaction, and return it
        with its new `claim_token`; None when no task is free.

        A task is free when no lease holds it: never claimed, released, or its lease
        (`lease` seconds from the claim, extended by `heartbeat`) has run out, which is
        how a dead worker's task is taken over. Rows that another worker is claiming at
        the same instant are skipped (SKIP LOCKED), not waited for. The order is the
        run's (`next_task`), and run `run_id` does not take a task twice.
        """
        due, claim, _beat = _claim_statements(self.dialect)
        due = _narrowed(due, exclude, queues, exclude_queues)
        params = self._lease_params(lease)
        params.update(v_skip_run=run_id, v_worker=worker[:100])
        with self._write() as conn:
            task_id = conn.execute(due, params).scalar()
            if task_id is None:
                return None
            conn.execute(claim, {**params, "v_task_id": task_id})
            return _task_of_rows(conn.execute(_TASK_BY_ID, {"v_task_id": task_id}).all())

    def heartbeat(self, task_id: int, token: int, lease: float) -> bool:
        """Extend the lease of a claimed task to `lease` seconds from now; False when the
        claim is lost (another worker claimed the task since: nothing was written)."""
        beat = _claim_statements(self.dialect)[2]
        params = self._lease_params(lease)
        params.update(v_task_id=task_id, v_token=token)
        with self._write() as conn:
            return bool(conn.execute(beat, params).rowcount == 1)

    def release(self, task_id: int, token: int) -> None:
        """End a claim without any other write (the task may be claimed again at once);
        nothing happens if another worker claimed the task since."""
        with self._write() as conn:
            conn.execute(_RELEASE, {"v_task_id": task_id, "v_token": token})

    def reap_dead_claims(self) -> list[int]:
        """End the live claims held by processes of this host that are certainly dead
        (killed with SIGKILL, say: see `owner.holder_is_gone`), so that their tasks are
        recovered at once instead of when the lease runs out; returns their ids. A read,
        and a write only when there is a claim to end."""
        params = self._lease_params(0.0)
        with self._read(single=True) as conn:
            held = conn.execute(_leases_held(self.dialect), params).all()
        dead = [row for row in held if holder_is_gone(row.claimed_by)]
        if dead:
            with self._write() as conn:
                for row in dead:
                    conn.execute(_RELEASE, {"v_task_id": row.id, "v_token": row.claim_token})
        return [row.id for row in dead]

    def _lease_params(self, lease: float) -> dict[str, Any]:
        if self.dialect == "postgresql":
            return {"v_lease": float(lease)}
        if self.dialect in t.MYSQL:
            return {"v_lease_us": round(lease * 1_000_000)}
        now = _now()
        return {"v_now": now, "v_until": now + timedelta(seconds=lease)}

    def has_due_tasks(self) -> bool:
        with self._read() as conn:
            query = select(t.tasks.c.id).where(t.tasks.c.run_order.isnot(None)).limit(1)
            return conn.execute(query).first() is not None

    def apply(self, *changes: Change) -> None:
        """Write state changes of tasks (status, actions, events) in one transaction.

        Each write only happens while its task is neither ended nor asked to cancel;
        otherwise nothing at all is written and TaskInterrupted names the first such
        task, so a run never overwrites a `bgtaskex cancel`. A transaction lost to a
        deadlock (e.g. with a `cancel`) is tried again.
        """
        retrying_deadlocks(lambda: self._apply(changes))

    def _apply(self, changes: Sequence[Change]) -> None:
        now = _now()
        with self._write() as conn:
            events: list[dict[str, Any]] = []
            for change in changes:
                lease = self._lease_params(change.lease) if change.claim_as else {}
                statement, values = _task_update(change, now, self.dialect, lease)
                if conn.execute(statement, values).rowcount != 1:
                    raise _refused(conn, change)
                for action in change.actions:
                    statement, values = _action_update(change.task_id, action, now)
                    if statement is not None:
                        conn.execute(statement, values)
                events.extend(
                    _event_values(change.task_id, change.run_id, now, e) for e in change.events
                )
            if events:
                conn.execute(_INSERT_EVENT, events)


def _refused(conn: Connection, change: Change) -> Exception:
    """Why the write of `change` matched no row: ClaimLost when another run claimed the
    task since (or holds a live lease on a task this write meant to claim),
    TaskInterrupted when it was ended or asked to cancel."""
    row = conn.execute(_CLAIM_OF, {"v_task_id": change.task_id}).first()
    if row is not None and change.token is not None and row.claim_token != change.token:
        return ClaimLost(change.task_id, change.token)
    runnable = row is not None and row.run_order is not None and row.cancel_requested_at is None
    if change.claim_as is not None and runnable:
        return ClaimLost(change.task_id, change.token or 0)
    return TaskInterrupted(change.task_id)


# The run's statements are built once per shape and reused: SQLAlchemy then finds their
# compiled form by a cache key it computed once, instead of rebuilding both every write.
_INSERT_EVENT = insert(t.events)
_ACTIONS_OF_TASK = (
    select(t.actions)
    .where(t.actions.c.task_id == bindparam("v_task_id"))
    .order_by(t.actions.c.rank)
)
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


def _narrowed(
    due: Any,
    exclude: Collection[int],
    queues: Collection[str] | None,
    exclude_queues: Collection[str],
) -> Any:
    """`due` without the tasks of `exclude`, from `queues` (None: any) but not from
    `exclude_queues`; `due` itself when nothing narrows it (its cached statement)."""
    if exclude:
        due = due.where(t.tasks.c.id.not_in(list(exclude)))
    if queues is not None:
        due = due.where(t.tasks.c.queue.in_(sorted(queues)))
    if exclude_queues:
        due = due.where(t.tasks.c.queue.not_in(sorted(exclude_queues)))
    return due


def _joined(which: Any) -> Any:
    """The task `which` selects, joined to its actions (if any), in one statement."""
    columns = [c.label(f"t_{c.name}") for c in t.tasks.c]
    columns += [c.label(f"a_{c.name}") for c in t.actions.c]
    return (
        select(*columns)
        .outerjoin_from(t.tasks, t.actions, t.actions.c.task_id == t.tasks.c.id)
        .where(which)
        .order_by(t.actions.c.rank)
    )


def _next_task(due: Any) -> Any:
    return _joined(t.tasks.c.id == due.scalar_subquery())


def _task_of_rows(rows: Sequence[Row[Any]]) -> Task | None:
    if not rows:
        return None
    actions = [_action(_Prefixed(row, "a_")) for row in rows if row.a_id is not None]  # type: ignore[arg-type]
    return _task(_Prefixed(rows[0], "t_"), actions)  # type: ignore[arg-type]


_TASK_BY_ID = _joined(t.tasks.c.id == bindparam("v_task_id"))


@functools.cache
def _lease_clock(dialect: str) -> tuple[Any, Any]:
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


def _lease_free(dialect: str) -> Any:
    c = t.tasks.c
    return or_(c.lease_until.is_(None), c.lease_until < _lease_clock(dialect)[0])


@functools.cache
def _next_task_id(dialect: str) -> Any:
    """The id of the next due task that no live lease holds."""
    return _NEXT_TASK_ID.where(_lease_free(dialect))


@functools.cache
def _next_task_of(dialect: str) -> Any:
    return _next_task(_next_task_id(dialect))


@functools.cache
def _leases_held(dialect: str) -> Any:
    c = t.tasks.c
    return select(c.id, c.claimed_by, c.claim_token).where(
        c.run_order.isnot(None), c.lease_until >= _lease_clock(dialect)[0]
    )


@functools.cache
def _claim_statements(dialect: str) -> tuple[Any, Any, Any]:
    """The claim's SELECT (the next due task whose lease is free, skipping rows another
    worker is claiming right now), its UPDATE, and the heartbeat's UPDATE (which never
    revives a released claim)."""
    c = t.tasks.c
    until = _lease_clock(dialect)[1]
    due = (
        select(c.id)
        .where(
            c.run_order.isnot(None),
            or_(c.last_run_id.is_(None), c.last_run_id != bindparam("v_skip_run")),
            _lease_free(dialect),
        )
        .order_by(c.run_order, c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(t.tasks)
        .where(c.id == bindparam("v_task_id"))
        .values(
            claimed_by=bindparam("v_worker"),
            claim_token=c.claim_token + 1,
            lease_until=until,
            last_run_id=bindparam("v_skip_run"),
        )
    )
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


class _Prefixed:
    """The columns of one table in a joined row, by their plain names."""

    __slots__ = ("_mapping", "_prefix")

    def __init__(self, row: Row[Any], prefix: str) -> None:
        self._mapping = row._mapping
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return self._mapping[self._prefix + name]


def _task_update(
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
    statement = _task_statement(
        dialect,
        status is not None,
        status is not None and status.terminal,
        "v_rank" in values,
        change.token is not None,
        change.release,
        change.claim_as is not None,
    )
    return statement, values


@functools.cache
def _task_statement(
    dialect: str,
    has_status: bool,
    terminal: bool,
    has_rank: bool,
    fenced: bool,
    release: bool,
    claim: bool,
) -> Any:
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
    if has_rank:
        values["current_rank"] = bindparam("v_rank")
    statement = update(t.tasks).where(
        c.id == bindparam("v_task_id"),
        c.run_order.isnot(None),
        c.cancel_requested_at.is_(None),
    )
    if fenced:
        statement = statement.where(c.claim_token == bindparam("v_token"))
    if claim:  # the token read with the task, and no other run's live lease
        statement = statement.where(_lease_free(dialect))
        values["claim_token"] = c.claim_token + 1
        values["claimed_by"] = bindparam("v_worker")
        values["lease_until"] = _lease_clock(dialect)[1]
    if release:
        values["lease_until"] = None
    return statement.values(values)


# The cluster lock: two int4 keys, bgtaskex's and the schema's, so that installations in
# several schemas of one database do not exclude each other.
_CLUSTER_KEYS = "hashtext('bgtaskex'), hashtext(current_schema())"
_KEEPALIVES = text(
    "SELECT set_config('tcp_keepalives_idle', '30', false), "
    "set_config('tcp_keepalives_interval', '10', false), "
    "set_config('tcp_keepalives_count', '3', false)"
)
_TRY_CLUSTER_LOCK = text(f"SELECT pg_try_advisory_lock({_CLUSTER_KEYS})")
_CLUSTER_UNLOCK = text(f"SELECT pg_advisory_unlock({_CLUSTER_KEYS})")
_CLUSTER_LOCK_HOLDER = text(
    "SELECT 'backend pid' AS what, l.pid, coalesce(' on ' || host(a.client_addr), '') AS client "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.classid = hashtext('bgtaskex')::oid AND l.objid = hashtext(current_schema())::oid "
    "LIMIT 1"
)
_CLUSTER_LOCK_MINE = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND pid = pg_backend_pid() "
    "AND classid = hashtext('bgtaskex')::oid AND objid = hashtext(current_schema())::oid"
)
# MySQL / MariaDB: a user lock per database (see engine.mysql_lock_name).
_MY_LOCK = mysql_lock_name("run")
_MY_TRY_LOCK = text(f"SELECT GET_LOCK({_MY_LOCK}, 0)")
_MY_UNLOCK = text(f"SELECT RELEASE_LOCK({_MY_LOCK})")
_MY_LOCK_USED_BY = text(f"SELECT IS_USED_LOCK({_MY_LOCK})")  # its connection id, or NULL
_MY_LOCK_MINE = text(f"SELECT IS_USED_LOCK({_MY_LOCK}) = CONNECTION_ID()")
_MY_LOCK_HOLDER = text(
    "SELECT 'connection id' AS what, p.id AS pid, "
    "COALESCE(CONCAT(' on ', SUBSTRING_INDEX(p.host, ':', 1)), '') AS client "
    f"FROM information_schema.processlist p WHERE p.id = IS_USED_LOCK({_MY_LOCK})"
)
# Wake-ups: a channel per schema, so that installations in several schemas of one
# database wake only their own daemons.
_CHANNEL = "SELECT 'bgtaskex_' || current_schema()"
_NOTIFY = text("SELECT pg_notify('bgtaskex_' || current_schema(), :v_queue)")
_WAITING_INTERACTIVE = (
    select(t.tasks.c.queue).where(t.tasks.c.run_order == bindparam("v_order")).distinct()
)
_RELEASE = (
    update(t.tasks)
    .where(t.tasks.c.id == bindparam("v_task_id"), t.tasks.c.claim_token == bindparam("v_token"))
    .values(lease_until=None)
)
_CLAIM_OF = select(t.tasks.c.claim_token, t.tasks.c.run_order, t.tasks.c.cancel_requested_at).where(
    t.tasks.c.id == bindparam("v_task_id")
)


def _action_update(task_id: int, change: ActionChange, now: datetime) -> tuple[Any, dict[str, Any]]:
    """The cached UPDATE for the fields `change` sets, and its parameters."""
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
        values["v_message"] = change.progress.message
    if change.elapsed:
        values["v_elapsed"] = change.elapsed
    if len(values) == 2:
        return None, values
    shape = (
        kind,
        "v_params" in values,
        "v_attempts" in values,
        "v_done" in values,
        "v_elapsed" in values,
    )
    return _action_statement(*shape), values


@functools.cache
def _action_statement(
    kind: str | None, params: bool, attempts: bool, progress: bool, elapsed: bool
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
    return (
        update(t.actions)
        .where(c.task_id == bindparam("v_task_id"), c.rank == bindparam("v_rank"))
        .values(values)
    )


def _event_values(task_id: int, run_id: str, at: datetime, new: NewEvent) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "at": at,
        "run_id": run_id,
        "rank": new.rank,
        "old_status": new.old_status,
        "new_status": new.new_status,
        # History leaves the process (show, --json): no password in it, whoever wrote it.
        "message": mask_secrets(new.message) if new.message else new.message,
        "error": mask_secrets(new.error) if new.error else new.error,
    }
