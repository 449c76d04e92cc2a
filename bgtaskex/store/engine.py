"""The database engine: dialect settings, transactions and error translation.

SQLite: WAL, `synchronous` as configured, foreign keys on, and writes in
`BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of failing.
MySQL / MariaDB (bgtaskex's own database): READ COMMITTED transactions.
Driver errors become `StorageError` / `DatabaseUnavailable`, secrets masked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from ..exceptions import DatabaseUnavailable, Deadlock, StorageError, UsageError
from ..files import create_private_file
from ..urls import mask_secrets, sqlite_path
from .direct import send

T = TypeVar("T")

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def now() -> datetime:
    return datetime.now(UTC)


def first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    lines = str(orig).strip().splitlines()
    return mask_secrets(lines[0] if lines else type(orig).__name__)


def _is_deadlock(orig: BaseException | None) -> bool:
    """A deadlock victim (PostgreSQL 40P01; MySQL/MariaDB 1213, or 1205: lock wait
    timeout, which InnoDB also resolves by rolling back)."""
    if getattr(orig, "sqlstate", None) == "40P01":
        return True
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1205, 1213)


@contextmanager
def translated(unavailable: bool = False, where: str = "database") -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into bgtaskex's, with secrets masked."""
    try:
        yield
    except sa_exc.DBAPIError as err:
        if unavailable or err.connection_invalidated:
            raise DatabaseUnavailable(f"{where} unavailable: {first_line(err)}") from err
        if _is_deadlock(err.orig):
            raise Deadlock(f"database error: {first_line(err)}") from err
        raise StorageError(f"database error: {first_line(err)}") from err
    except sa_exc.SQLAlchemyError as err:
        raise StorageError(f"database error: {first_line(err)}") from err


def access_hint(path: Path | None) -> str:
    """For a SQLite file this user cannot open for writing (a database another user
    made, mode 0600): a sentence (starting with "; ") naming its owner and mode; ""
    when it is not so."""
    if path is None or not path.exists() or os.access(path, os.R_OK | os.W_OK):
        return ""
    info = path.stat()
    try:
        import pwd

        owner = pwd.getpwuid(info.st_uid).pw_name
    except (ImportError, KeyError):
        owner = str(info.st_uid)
    return (
        f"; {path} belongs to {owner} (mode {info.st_mode & 0o777:04o}): run bgtaskex as "
        "that user, who owns its queue"
    )


def sqlite_file(url: URL) -> Path | None:
    """The resolved path of an SQLite file URL; None for an in-memory database."""
    path = sqlite_path(url.render_as_string(hide_password=False))
    return None if path is None else path.resolve()


def retrying_deadlocks(write: Callable[[], T], attempts: int = 3) -> T:
    """Call `write` (one whole transaction), again when the database rolled it back as a
    deadlock victim: nothing of it was written, so trying again is safe."""
    for attempt in range(1, attempts):
        try:
            return write()
        except Deadlock:
            time.sleep(0.05 * attempt)
    return write()


def _idle_in_transaction(engine: Engine, seconds: float | None) -> Engine:
    """Have the server end a session of `engine` that sits in a transaction for longer
    than `seconds`: a worker frozen (SIGSTOP, a paused VM) or cut off in the middle of a
    transaction would otherwise keep its row locks, and `FOR UPDATE SKIP LOCKED` would
    pass over its task forever, lease or not. A failed SET fails the connection."""
    if seconds is None:
        return engine
    postgres = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            if postgres:
                cur.execute(f"SET idle_in_transaction_session_timeout = {int(seconds * 1000)}")
            else:
                cur.execute("SELECT VERSION()")
                statement = mysql_idle_timeout(str(cur.fetchone()[0]), seconds)
                if statement is not None:
                    cur.execute(statement)
        finally:
            cur.close()
        dbapi_conn.commit()

    return engine


_warned_mysql_idle = False


def mysql_idle_timeout(server_version: str, seconds: float) -> str | None:
    """The SET that has a MariaDB server (10.3+) end a session idle in a transaction for
    `seconds`; None on MySQL, which has no such limit: a warning says so, once per
    process, since a frozen worker's row locks then last until its connection dies."""
    global _warned_mysql_idle
    if "mariadb" in server_version.lower():
        return f"SET SESSION idle_transaction_timeout = {max(1, round(seconds))}"
    if not _warned_mysql_idle:
        _warned_mysql_idle = True
        logging.getLogger("bgtaskex").warning(
            "MySQL %s has no idle-in-transaction timeout: the row locks of a frozen worker "
            "are not bounded by the lease, and its task waits until its connection ends "
            "(wait_timeout, TCP keepalive); MariaDB and PostgreSQL end such a session",
            server_version,
        )
    return None


def mysql_lock_name(purpose: str) -> str:
    """The SQL expression naming a MySQL / MariaDB user lock (GET_LOCK) of bgtaskex for
    `purpose`, per database, so that installations in several databases of one server do
    not exclude each other. Lock names are limited to 64 characters: a long database name
    is replaced by its MD5."""
    return (
        f"CONCAT('bgtaskex-{purpose}:', "
        "IF(CHAR_LENGTH(DATABASE()) > 32, MD5(DATABASE()), DATABASE()))"
    )


def _enable_wal(cur: Any, busy_timeout: float) -> None:
    """Switch a database file to WAL once. Switching needs an exclusive lock and SQLite
    does not wait for it on the busy handler, so two programs creating a fresh
    database at once retry here instead of failing with "database is locked"."""
    import sqlite3
    import time

    give_up = time.monotonic() + busy_timeout
    while cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.02)


def display_url(url: URL) -> str:
    """`url` as bgtaskex shows it: every password masked (`user:***@`, `?password=***`)."""
    return mask_secrets(url.render_as_string(hide_password=True))


#: backend: (the bgtaskex extra that installs its driver, that driver's SQLAlchemy name)
_EXTRAS = {"postgresql": ("postgres", "psycopg"), "mysql": ("mysql", "pymysql")}
_EXTRAS["mariadb"] = _EXTRAS["mysql"]


def _driver_hint(parsed: URL) -> str:
    """What to do about a URL whose driver is not installed. A URL without a driver
    (`mysql://`) means the backend's default one (MySQLdb), which bgtaskex's extras do
    not install: point to the URL of the driver they do install."""
    import importlib.util

    backend = parsed.get_backend_name()
    if backend not in _EXTRAS:
        return " (install its driver)"
    extra, driver = _EXTRAS[backend]
    install = f"pip install '{_checkout()}[{extra}]'"
    if parsed.drivername == f"{backend}+{driver}":
        return f" (install its driver: {install})"
    other = display_url(parsed.set(drivername=f"{backend}+{driver}"))
    needs = "" if importlib.util.find_spec(driver) else f" after {install}"
    return f" (bgtaskex[{extra}] installs {driver}: use {other!r}{needs})"


def _checkout() -> str:
    """The checkout bgtaskex was installed from (pip records it), else a placeholder:
    bgtaskex is installed from a checkout, not from a package index."""
    import json
    import os
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    for dist in distributions(name="bgtaskex"):  # an egg-info in a checkout has none
        try:
            direct = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            continue
        url = urlparse(direct.get("url", "") if isinstance(direct, dict) else "")
        if url.scheme == "file" and os.path.isdir(unquote(url.path)):
            return unquote(url.path)
    return "/path/to/bgtaskex"


def _create_sqlite_privately(engine: Engine) -> None:
    """Have a new SQLite file created 0600, whatever the umask (SQLite then gives its
    `-wal` and `-shm` files the same mode). Only where the driver would create the file
    anyway: a `file:` URI (`mode=ro`, `mode=rw`) is left to the driver."""

    @event.listens_for(engine, "do_connect")
    def _before_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> None:
        database = cargs[0] if cargs else cparams.get("database")
        if cparams.get("uri") or not isinstance(database, str):
            return
        if database in ("", ":memory:"):
            return
        with contextlib.suppress(OSError):  # no directory, no right: the driver says so
            create_private_file(database)


def make_engine(
    url: str,
    sqlite_synchronous: str | None,
    busy_timeout: float,
    *,
    own: bool = True,
    idle_in_transaction: float | None = None,
) -> Engine:
    """An engine on `url`. `own=False` is for an application's database (retention
    rules): its journal mode and `synchronous` are left as they are."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as err:
        raise UsageError(f"invalid database URL {mask_secrets(url)!r}") from err
    try:
        backend = parsed.get_backend_name()
        if backend in ("mysql", "mariadb") and own:
            # InnoDB's default, REPEATABLE READ, would keep a run's reads at the snapshot
            # of its first one and take gap locks on every locking read; bgtaskex's
            # transactions are short and written for READ COMMITTED, PostgreSQL's default.
            server = create_engine(parsed, pool_pre_ping=True, isolation_level="READ COMMITTED")
            return _idle_in_transaction(server, idle_in_transaction)
        if backend != "sqlite":
            return _idle_in_transaction(
                create_engine(parsed, pool_pre_ping=True), idle_in_transaction
            )
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout})
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as err:
        hint = _driver_hint(parsed) if isinstance(err, ImportError) else ""
        raise UsageError(
            f"unsupported database URL {display_url(parsed)!r}: {first_line(err)}{hint}"
        ) from err
    _create_sqlite_privately(engine)
    _sqlite_index_hints(engine)
    synchronous = (sqlite_synchronous or "FULL").upper()
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise UsageError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if own:
            if parsed.database not in (None, "", ":memory:"):
                _enable_wal(cur, busy_timeout)
            cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so two writers queue on the busy timeout
        # instead of failing with "database is locked" when a read upgrades to a write.
        # A single read statement needs no transaction: SQLite makes it consistent alone.
        kind = conn.get_execution_options().get("bgtaskex_txn", "write")
        if kind != "statement":
            # On the cursor, as store/direct.py sends the run's statements (events and
            # error handling kept): exec_driver_sql would cost a run ~10 µs per write.
            send(conn, "BEGIN" if kind == "read" else "BEGIN IMMEDIATE")

    return engine


def _sqlite_index_hints(engine: Engine) -> None:
    """Have `with_hint(table, "INDEXED BY ix", "sqlite")` written into the SQL:
    SQLAlchemy's SQLite compiler drops every table hint, so a query that names the index
    SQLite must read (`filters.ended_ids`, `pages`) went without it."""
    base: Any = engine.dialect.statement_compiler

    class HintingCompiler(base):  # type: ignore[misc]
        def get_from_hint_text(self, table: Any, text: str) -> str:
            return text

    engine.dialect.statement_compiler = HintingCompiler
