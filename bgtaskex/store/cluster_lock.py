"""The database run lock (`lock = "database"`): one run at a time across every host.

On PostgreSQL a session advisory lock, per schema; on MySQL / MariaDB a user lock
(GET_LOCK), per database. Its SQL is in `statements`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

from .. import tables as t
from ..exceptions import ConfigError, LockBusy
from . import statements as sql
from .engine import translated


@contextmanager
def hold_cluster_lock(engine: Engine, wait: float) -> Iterator[Callable[[], bool]]:
    """See `Store.cluster_lock`."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        try_lock, holder_of, unlock, mine = (
            sql.PG_TRY_LOCK,
            sql.PG_LOCK_HOLDER,
            sql.PG_UNLOCK,
            sql.PG_LOCK_MINE,
        )
    elif dialect in t.MYSQL:
        try_lock, holder_of, unlock = sql.MY_TRY_LOCK, sql.MY_LOCK_HOLDER, sql.MY_UNLOCK
        mine = sql.MY_LOCK_MINE
    else:
        raise ConfigError(f'lock = "database" needs PostgreSQL or MySQL / MariaDB, not {dialect}')
    give_up = time.monotonic() + wait
    with translated(unavailable=True), engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if dialect == "postgresql":
            # A host cut off (not closed) would keep its session, and so the lock,
            # until TCP gives up (hours by default): probe the client within a minute.
            conn.execute(sql.KEEPALIVES)
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


def cluster_lock_held(conn: Connection) -> bool:
    """Whether some run holds the cluster lock of this schema or database right now;
    always False where there is none (SQLite)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return conn.execute(sql.PG_LOCK_HOLDER).first() is not None
    if dialect in t.MYSQL:
        return conn.execute(sql.MY_LOCK_USED_BY).scalar() is not None
    return False
