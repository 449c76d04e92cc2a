"""`Store`: the one object the layers above talk to about bgtaskex's own tables.

The runner, the client and the CLI talk to it in domain words and get the frozen
dataclasses of `models` back. Each public method is one transaction; driver errors are
translated to `StorageError` / `DatabaseUnavailable` with secrets masked. What the run
needs of it is written down in `contract.RunStorage` and served by the mixin
`run_queries.RunQueries`; the operators' queries are its `admin` (`admin.Admin`); its
statements are in `statements` and `lease_statements`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from ..exceptions import DatabaseUnavailable, UsageError
from ..files import file_error, private_dir
from ..models import (
    Enqueued,
    Event,
    HourActivity,
    NewAction,
    Task,
    TaskFilter,
    TaskPage,
    TaskStatus,
    TaskType,
    run_order,
)
from ..urls import mask_secrets, sqlite_path
from . import activity, pages, reads, schema
from . import statements as sql
from .admin import Admin
from .caller_connection import check_same_database
from .cluster_lock import hold_cluster_lock
from .direct import Direct
from .engine import access_hint, make_engine, retrying_deadlocks, sqlite_file
from .engine import now as _now
from .engine import translated as _translated
from .queues import Queues
from .run_queries import RunQueries
from .runs import Runs
from .wake_ups import listen
from .writes import add_task


@contextmanager
def _autocommit(conn: Connection) -> Iterator[None]:
    """psycopg's connection in autocommit for the block (SQLite's always is: see
    engine.make_engine); SQLAlchemy holds no transaction meanwhile."""
    if conn.dialect.name != "postgresql":
        yield
        return
    driver: Any = conn.connection.driver_connection
    driver.autocommit = True
    try:
        yield
    finally:
        if not driver.closed:
            driver.autocommit = False


class Store(RunQueries):
    """Every read and write of bgtaskex's own tables, on SQLite, PostgreSQL or
    MySQL / MariaDB."""

    #: True on the stand-in of `Store.empty`: the database has no bgtaskex schema yet.
    no_schema = False

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        create_dirs: bool = False,
        idle_in_transaction: float | None = None,
        history: str = "ALL",
    ) -> None:
        self.url = url
        if history.upper() not in ("ALL", "FAILURES"):
            raise UsageError(f"history must be all or failures, not {history!r}")
        #: False with `history = "failures"`: the run's routine events are not written.
        self.routine_events = history.upper() == "ALL"
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
        self._direct = Direct(self._engine.dialect)  # the run's statements, compiled once
        #: The operators' queries (cancel, retry, purge, stats, health).
        self.admin = Admin(self)
        #: The operators' queries of queues (pause, resume, the per-queue summary).
        self.queues = Queues(self)
        #: The record of runs (`bgtaskex runs`, `check`).
        self.runs = Runs(self)

    @property
    def display_url(self) -> str:
        return mask_secrets(self._engine.url.render_as_string(hide_password=True))

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def close(self) -> None:
        self._engine.dispose()

    def forked(self) -> None:
        """In a child process just forked: drop the parent's pooled connections without
        closing them (they stay the parent's), so that the child opens its own."""
        self._engine.dispose(close=False)

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
        if single and self.dialect in ("sqlite", "postgresql"):
            with self._one_statement() as conn:
                yield conn
            return
        kind = "statement" if single else "read"
        with _translated(), self._connection(kind) as conn, conn.begin():
            yield conn

    @contextmanager
    def _single_write(self) -> Iterator[Connection]:
        """For one write statement sent with `store/direct.py`, a transaction of its
        own: in autocommit on SQLite and PostgreSQL, else in `_write`."""
        if self.dialect in ("sqlite", "postgresql"):
            with self._one_statement() as conn:
                yield conn
            return
        with self._write() as conn:
            yield conn

    @contextmanager
    def _one_statement(self) -> Iterator[Connection]:
        """No transaction to open and end (on PostgreSQL two round trips of three):
        the driver runs the statement in autocommit (store/direct.py sends it)."""
        with _translated(), self._connection("statement") as conn, _autocommit(conn):
            try:
                yield conn
            finally:
                if conn.in_transaction():  # one SQLAlchemy began for its own execute
                    conn.rollback()

    @contextmanager
    def cluster_lock(self, wait: float = 0.0) -> Iterator[Callable[[], bool]]:
        """One run at a time across every host (`lock = "database"`): on PostgreSQL a
        session advisory lock, per schema; on MySQL / MariaDB a user lock (GET_LOCK), per
        database; held on a connection of its own for the block. If the client vanishes,
        the server drops the lock with its connection. Raises LockBusy when another run
        holds it (after `wait` seconds), ConfigError on SQLite.

        It needs a session of its own: behind PgBouncer in transaction pooling (or a
        MySQL proxy multiplexing sessions), point bgtaskex at the server or at a
        session-pooling port.

        The block gets a function telling whether the lock is still held: False once
        the server ended the lock's session (a restart, a failover,
        `pg_terminate_backend`, an idle timeout, a proxy). Only the caller's thread or
        one watcher may call it: it uses the lock's connection."""
        with hold_cluster_lock(self._engine, wait) as still_held:
            yield still_held

    # -- schema --------------------------------------------------------------------

    @classmethod
    def empty(cls) -> Store:
        """An empty queue in memory, at this release's schema, refusing writes: what the
        commands that only read get for a database without bgtaskex's schema, so that
        they answer as for an empty queue and create nothing there."""
        store = cls("sqlite://")
        store.no_schema = True
        schema.create_read_only(store._engine)
        return store

    def schema_revision(self) -> str | None:
        """The Alembic revision of bgtaskex's schema, None when the database has none.

        An install of an earlier release keeps it in Alembic's `alembic_version`: that
        counts too, until the next upgrade moves it to bgtaskex's own table."""
        return self.schema_state()[0]

    def schema_state(self) -> tuple[str | None, bool]:
        """(`schema_revision()`, True when an earlier release wrote it in
        `alembic_version`, where the next upgrade moves it from); reads only."""
        try:
            return schema.schema_state(self._engine, f"database {self.display_url}")
        except DatabaseUnavailable as err:
            hint = access_hint(sqlite_file(self._engine.url))
            if not hint:
                raise
            raise DatabaseUnavailable(f"{err}{hint}") from err

    def ensure_schema(self, upgrade: bool = True) -> None:
        """Create or upgrade the schema when it is not at this release's revision.

        The cheap check (one query) runs every time; Alembic is imported only when the
        schema actually needs work. `upgrade=False` (the commands that only read):
        SchemaOutdated instead, and a current schema whose revision an earlier release
        wrote in `alembic_version` is fine as it is.
        """
        if schema.needs_upgrade(*self.schema_state(), upgrade):
            self.upgrade()

    def upgrade(self, revision: str = "head") -> None:
        """Migrate to `revision` (moving the revision of an earlier release's install to
        bgtaskex's own version table); concurrent callers serialise (migrate.upgrade)."""
        schema.upgrade_schema(self._engine, revision, self.display_url)

    # -- enqueue and wake-ups --------------------------------------------------------

    def enqueue(self, name: str, type: TaskType, queue: str, actions: Sequence[NewAction]) -> int:
        """Persist a new task with its actions, in the `created` status; returns its id."""
        return self.enqueue_task(name, type, queue, actions).id

    def enqueue_task(
        self,
        name: str,
        type: TaskType,
        queue: str,
        actions: Sequence[NewAction],
        *,
        not_before: datetime | None = None,
        unique_key: str | None = None,
        connection: Connection | None = None,
    ) -> Enqueued:
        """`enqueue`, not due before `not_before`; with a `unique_key` a task not ended
        holds, nothing is inserted and the result names that task (see `add_task`).
        `connection`: an application's, on this database, inside its transaction: the
        rows are written there, uncommitted. Otherwise one transaction of our own."""
        now = _now()  # when it was asked, not when the write lock came
        new = (name, type, queue, actions)
        add = functools.partial(
            add_task, new=new, now=now, not_before=not_before, unique_key=unique_key
        )
        if connection is not None:
            check_same_database(self._engine, connection)
            with _translated():
                return add(connection)

        def own() -> Enqueued:
            with self._write() as conn:
                return add(conn)

        return retrying_deadlocks(own)

    def waiting_interactive_queues(self) -> list[str]:
        """The queues of interactive tasks queued and not yet started (an index range),
        paused queues aside: the daemon's cheap poll for work that should not wait for
        the next tick."""
        new = run_order(TaskType.INTERACTIVE, TaskStatus.CREATED)
        with self._read(single=True) as conn:
            params = {"v_order": new, **self._lease_params(0.0)}
            return list(conn.execute(sql.waiting_interactive(self.dialect), params).scalars())

    def wake_ups(self, timeout: float) -> Iterator[str | None]:
        """On PostgreSQL, the queues named by `enqueue` of interactive tasks and by
        `resume`, as they come (LISTEN on a connection of its own); None every `timeout`
        seconds without one. Elsewhere, only None every `timeout` seconds: poll
        `waiting_interactive_queues`."""
        return listen(self._engine, timeout)

    # -- the client's reads ----------------------------------------------------------

    def get_task(self, task_id: int) -> Task:
        """Task `task_id` with all its actions; TaskNotFound when there is none."""
        reads.check_id(task_id)
        with self._read() as conn:
            return reads.task(conn, task_id)

    def get_task_page(self, task_id: int, max_actions: int) -> tuple[Task, int]:
        """The task with its first `max_actions` actions by rank (plus its current action
        when that lies further), and how many actions it has: `show` of a task of
        100,000 actions reads a page of the index on (task_id, rank), not the chain."""
        reads.check_id(task_id)
        with self._read() as conn:
            return reads.task_page(conn, task_id, max_actions)

    def list_tasks(self, where: TaskFilter | None = None, *, limit: int = 50) -> list[Task]:
        """Tasks still to run first, in the order the run takes them; then ended ones,
        newest first. Each part is a range scan of its own partial index. A task of
        many actions comes with those a listing shows only (see `listed`)."""
        with self._read() as conn:
            return reads.tasks(conn, where, limit)

    def count_tasks(self, where: TaskFilter | None = None, *, up_to: int | None = None) -> int:
        """How many tasks `where` selects; with `up_to`, stop counting there (a filter no
        index serves, like --name, would otherwise read the whole table)."""
        with self._read() as conn:
            return reads.count(conn, where, up_to)

    def page_tasks(
        self, where: TaskFilter | None, before_id: int | None, limit: int, count_up_to: int
    ) -> TaskPage:
        """A page of the tasks `where` selects, newest first, below `before_id`, with
        their count up to `count_up_to` (see `pages`: one index range per value of the
        filter, so a page reads about `limit` rows on a million tasks); a task of many
        actions comes with those a listing shows only (see `listed`)."""
        with self._read() as conn:
            return pages.page(conn, where, before_id, limit, count_up_to)

    def activity(self, first: datetime, hours: int) -> list[HourActivity]:
        """Actions ended done and failed in each of `hours` hours from `first`."""
        with self._read() as conn:
            return activity.activity(conn, first, hours)

    def events(self, task_id: int) -> list[Event]:
        """Every event of task `task_id`, oldest first; TaskNotFound when there is none."""
        reads.check_id(task_id)
        with self._read() as conn:
            return reads.events(conn, task_id)
