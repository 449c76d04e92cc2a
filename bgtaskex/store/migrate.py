"""Schema migrations through Alembic, run on a connection that bgtaskex opened.

Imported only when the schema is not current, so a normal run never pays for Alembic.
bgtaskex keeps its revision in a version table of its own (`probe.VERSION_TABLE`), so
an application's Alembic history in the same database is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, MetaData, PrimaryKeyConstraint, String, Table
from sqlalchemy import text as sql

from ..exceptions import StorageError
from .probe import LEGACY_VERSION_TABLE, VERSION_TABLE
from .schema import legacy_revision


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "bgtaskex:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema; concurrent callers serialise (BEGIN IMMEDIATE on SQLite, an
    advisory lock on PostgreSQL, a user lock on MySQL / MariaDB, whose DDL is not
    transactional: see migrations/env.py), so the second one finds the work done."""
    _migrate(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to `revision` ("base": no table of bgtaskex left but its
    empty version table). Rows are kept; only what a revision added goes."""
    _migrate(engine, lambda config: command.downgrade(config, revision))


def _migrate(engine: Engine, step: Callable[[Config], None]) -> None:
    config = alembic_config()
    with engine.connect() as conn, _sqlite_foreign_keys_off(conn), conn.begin():
        config.attributes["connection"] = conn
        step(config)
        if conn.dialect.name == "sqlite":
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:  # rolled back: the rows stay as they were
                raise StorageError(f"the migration broke foreign keys: {broken[:5]}")


@contextmanager
def _sqlite_foreign_keys_off(conn: Connection) -> Iterator[None]:
    """On SQLite, migrate with foreign keys off: Alembic's batch mode rebuilds a table
    (copy, DROP TABLE, rename), and with them on, that DROP TABLE deletes the rows of
    every table referring to it (ON DELETE CASCADE). The pragma does nothing inside a
    transaction, so it is set on the driver's connection before the migration's
    transaction begins and after it ends; a connection that cannot be switched back on
    is discarded rather than returned to the pool."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
        if raw.execute("PRAGMA foreign_keys").fetchone() != (1,):
            conn.invalidate()


def adopt_legacy_version(conn: Connection) -> str | None:
    """Move the revision of an install made before bgtaskex had its own version table
    into it: a bgtaskex revision alone in Alembic's `alembic_version`, beside bgtaskex's
    tables. `alembic_version` is dropped when that leaves it empty; one that holds an
    application's revision is never touched. Returns the revision moved, if any.

    Runs inside the migration (env.py), so under its lock: of two programs upgrading at
    once, the second finds the row moved. The row moves in one transaction; on MySQL /
    MariaDB, where DDL commits at once, the CREATE TABLE comes before that transaction
    and the DROP TABLE after it, so a crash in between leaves an empty version table (the
    move is done again next time) or an empty `alembic_version` (harmless)."""
    revision = legacy_revision(conn)
    if revision is None:
        return None
    if conn.dialect.has_table(conn, VERSION_TABLE):
        if conn.execute(sql(f"SELECT version_num FROM {VERSION_TABLE}")).first() is not None:
            return None  # moved already: `alembic_version` is someone else's now
    else:
        _version_table().create(conn)
    conn.execute(sql(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": revision})
    conn.execute(sql(f"DELETE FROM {LEGACY_VERSION_TABLE} WHERE version_num = :v"), {"v": revision})
    if conn.execute(sql(f"SELECT COUNT(*) FROM {LEGACY_VERSION_TABLE}")).scalar() == 0:
        conn.execute(sql(f"DROP TABLE {LEGACY_VERSION_TABLE}"))
    return revision


def _version_table() -> Table:
    """bgtaskex's version table, as Alembic itself would create it."""
    return Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
