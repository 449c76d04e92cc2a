"""Checks on an application's connection before bgtaskex enqueues in its transaction
(`Client.enqueue(..., connection=conn)`): the same database, bgtaskex's tables where
its own engine finds them, and a transaction open (not autocommit)."""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from ..exceptions import UsageError
from .engine import display_url, sqlite_file, translated


def check_same_database(engine: Engine, connection: Connection) -> None:
    """UsageError unless `connection` (an application's) can take an enqueue in its
    transaction: on the database of `engine` (the same backend and database name; on
    SQLite, the same file; its host may be named otherwise), with bgtaskex's tables
    where `engine` has them (PostgreSQL: the same `current_schema()`, and the tables
    resolve to the same schema; MySQL / MariaDB: the same `DATABASE()`), and in a
    transaction: a connection in autocommit mode would commit each row alone.
    A connection not in a transaction begins one (SQLAlchemy's autobegin), which its
    owner commits or rolls back."""
    if not isinstance(connection, Connection):
        raise UsageError(f"connection must be a SQLAlchemy Connection, got {connection!r}")
    if connection.closed:
        raise UsageError("connection is closed")
    ours, theirs = engine.url, connection.engine.url
    mysql = ("mysql", "mariadb")

    def backend(url: URL) -> str:
        name = url.get_backend_name()
        return "mysql" if name in mysql else name

    same = backend(ours) == backend(theirs)
    if same and ours.get_backend_name() == "sqlite":
        mine, other = sqlite_file(ours), sqlite_file(theirs)
        same = mine is not None and other is not None and mine == other
    elif same:
        same = ours.database == theirs.database
    if not same:
        raise UsageError(
            f"connection is on {display_url(theirs)}, not on bgtaskex's database "
            f"{display_url(ours)}: enqueue in a transaction needs the same database"
        )
    _check_in_transaction(connection)
    _check_same_tables(engine, connection)


def _check_in_transaction(connection: Connection) -> None:
    """UsageError when each statement on `connection` would commit alone: its driver is
    in autocommit mode (SQLAlchemy's isolation_level="AUTOCOMMIT", sqlite3's
    isolation_level None, MySQL's autocommit) and no transaction is open on it. The task
    row would be visible before its actions (a run could end the task first) and a
    rollback would undo nothing. Begins the connection's transaction first, as the
    writes would (on SQLite, a `begin` event may send BEGIN)."""
    began = not connection.in_transaction()
    if began:
        connection.begin()
    with translated():
        dbapi = connection.connection.dbapi_connection
    if dbapi is None or not _autocommits(dbapi):
        return
    if began:
        connection.rollback()
    raise UsageError(
        "connection is in autocommit mode: each row would commit alone (the task before "
        "its actions; a rollback undoes nothing): enqueue in a transaction needs a "
        'connection in a transaction, not isolation_level="AUTOCOMMIT"'
    )


def _autocommits(dbapi: Any) -> bool:
    """Whether the driver connection `dbapi` commits each statement alone now."""
    import sqlite3

    if isinstance(dbapi, sqlite3.Connection):
        if dbapi.in_transaction:
            return False
        mode = getattr(dbapi, "autocommit", -1)  # Python 3.12+; -1: legacy control
        return mode is True or (mode == -1 and dbapi.isolation_level is None)
    get_autocommit = getattr(dbapi, "get_autocommit", None)
    if callable(get_autocommit):  # PyMySQL, mysqlclient: the server's status flags
        in_transaction = bool(getattr(dbapi, "server_status", 0) & 1)  # SERVER_STATUS_IN_TRANS
        return bool(get_autocommit()) and not in_transaction
    if not getattr(dbapi, "autocommit", False):  # psycopg, psycopg2, pg8000
        return False
    info = getattr(dbapi, "info", None)  # psycopg: a BEGIN sent by hand is a transaction
    return info is None or int(info.transaction_status) == 0  # IDLE


_WHERE_TABLES = {
    "postgresql": "SELECT current_schema(), (SELECT n.nspname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('bgtaskex_tasks'))",
    "mysql": "SELECT DATABASE(), DATABASE()",
}


#: where bgtaskex's tables resolve for each engine (one query per engine, not per enqueue)
_tables_of: weakref.WeakKeyDictionary[Engine, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def _check_same_tables(engine: Engine, connection: Connection) -> None:
    """UsageError unless bgtaskex's tables resolve on `connection` where they do on
    `engine`: PostgreSQL's search_path may lead to another schema of the same database
    (another install, or none), and a MySQL session may have switched databases (USE).
    The current schema counts too: it names the wake-up channel (NOTIFY)."""
    dialect = engine.dialect.name
    query = _WHERE_TABLES.get("mysql" if dialect == "mariadb" else dialect)
    if query is None:
        return
    with translated():
        theirs = tuple(connection.exec_driver_sql(query).one())
        ours = _tables_of.get(engine)
        if ours is None:
            with engine.connect() as own:
                ours = tuple(own.exec_driver_sql(query).one())
            if ours[1] is not None:  # our URL's search_path: fixed for the engine's life
                _tables_of[engine] = ours
    if theirs != ours and theirs[1] == ours[1]:  # the tables do resolve; the schema first
        raise UsageError(  # on the search_path (which names the wake-up channel) differs
            f"connection's current schema is {theirs[0]!r}, bgtaskex's is {ours[0]!r} (the "
            f"tables resolve in {ours[1]!r} on both): enqueue in a transaction needs "
            f"{ours[0]!r} first on the connection's search_path, as in bgtaskex's URL"
        )
    if theirs != ours:
        raise UsageError(
            f"connection's tables are {_where(theirs)}, not bgtaskex's {_where(ours)}: "
            "enqueue in a transaction needs bgtaskex's tables (set the connection's "
            "search_path or database as in bgtaskex's URL)"
        )


def _where(found: tuple[Any, ...]) -> str:
    current, tables = found
    if tables is None:
        return f"nowhere (no bgtaskex tables from schema {current!r})"
    if tables == current:
        return f"in {current!r}"
    return f"in {tables!r} (current schema {current!r})"
