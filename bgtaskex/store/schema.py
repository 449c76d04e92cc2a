"""Which revision bgtaskex's schema is at, and bringing it to this release's.

The cheap check (one query) runs on every start; Alembic (`migrate`) is imported only
when the schema actually needs work.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text
from sqlalchemy import exc as sa_exc

from .. import tables as t
from ..exceptions import SchemaOutdated
from .engine import translated
from .probe import HEAD_REVISION, LEGACY_REVISIONS, LEGACY_VERSION_TABLE, VERSION_TABLE


def schema_state(engine: Engine, where: str) -> tuple[str | None, bool]:
    """See `Store.schema_state`; `where` names the database in errors."""
    select_revision = text(f"SELECT version_num FROM {VERSION_TABLE}")
    with translated(unavailable=True, where=where), engine.connect() as conn:
        conn.execution_options(bgtaskex_txn="statement")  # SQLite: no write lock to read
        for attempt in (1, 2):
            try:
                revision = conn.execute(select_revision).scalar()
            except sa_exc.DBAPIError:
                conn.rollback()
                if engine.dialect.has_table(conn, VERSION_TABLE):
                    if attempt == 2:
                        raise
                    continue  # another process created it since our SELECT: read again
                revision = None
            if revision is not None:
                return revision, False
            try:
                legacy = legacy_revision(conn)
            except sa_exc.DBAPIError:
                # Another process moved the legacy revision (its DROP of that table
                # committed between our look and our read): read our table again.
                conn.rollback()
                if attempt == 2:
                    raise
                continue
            return legacy, legacy is not None
        raise AssertionError("unreachable")


def legacy_revision(conn: Connection) -> str | None:
    """The revision an earlier release of bgtaskex wrote in `alembic_version`: only a
    bgtaskex revision, alone there, beside bgtaskex's tables. An application's Alembic
    history in the same database gives None."""
    has_table = conn.dialect.has_table
    if not has_table(conn, LEGACY_VERSION_TABLE) or not has_table(conn, t.tasks.name):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 and rows[0] in LEGACY_REVISIONS else None


def needs_upgrade(revision: str | None, legacy: bool, upgrade: bool) -> bool:
    """Whether `Store.ensure_schema(upgrade)` has work for a schema at `revision`
    (`legacy`: written in `alembic_version`); SchemaOutdated when it has and may not."""
    if revision == HEAD_REVISION and (not legacy or not upgrade):
        return False
    if not upgrade:
        found = f"at revision {revision}" if revision else "not created yet"
        raise SchemaOutdated(
            f"the database schema is {found}, this release needs {HEAD_REVISION}: "
            "run 'bgtaskex db upgrade' (or a newer bgtaskex, if the schema is newer)"
        )
    return True


def upgrade_schema(engine: Engine, revision: str, where: str) -> None:
    """See `Store.upgrade`; `where` names the database in errors."""
    from alembic.util import CommandError

    from .migrate import upgrade

    with translated():
        try:
            upgrade(engine, revision)
        except CommandError as err:  # e.g. a revision written by a newer release
            raise SchemaOutdated(
                f"cannot upgrade the schema of {where}: {err} (was it created by a newer bgtaskex?)"
            ) from None


def create_read_only(engine: Engine) -> None:
    """Create this release's schema in the in-memory SQLite database of `engine`, then
    make it refuse writes (see `Store.empty`)."""
    with engine.connect() as conn:  # the one connection of this thread
        conn.execution_options(bgtaskex_txn="statement")
        t.metadata.create_all(conn)
        conn.exec_driver_sql("PRAGMA query_only=ON")
        conn.commit()
