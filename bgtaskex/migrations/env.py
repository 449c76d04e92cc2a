"""Alembic environment: bgtaskex always passes the connection to migrate.

The revision lives in bgtaskex's own version table; an install of a release that kept it
in `alembic_version` has it moved there first, under the same lock and transaction."""

from __future__ import annotations

from contextlib import suppress

from alembic import context
from sqlalchemy import exc, text

from bgtaskex.exceptions import StorageError
from bgtaskex.store.engine import mysql_lock_name
from bgtaskex.store.migrate import adopt_legacy_version
from bgtaskex.store.probe import VERSION_TABLE
from bgtaskex.tables import MYSQL, metadata

connection = context.config.attributes["connection"]
dialect = connection.dialect.name
if dialect == "postgresql":
    # Two programs creating a fresh schema at once: the second waits, then finds it done.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('bgtaskex-migrate'))"))
elif dialect in MYSQL:
    # The same, but MySQL commits every DDL statement at once, so no transaction lock
    # can cover the migration: a lock of the session does, released below (or by the
    # server if this process dies).
    got = connection.execute(text(f"SELECT GET_LOCK({mysql_lock_name('migrate')}, 600)")).scalar()
    if got != 1:
        raise StorageError("another process is migrating this database: gave up after 600 s")
try:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=dialect == "sqlite",
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        adopt_legacy_version(connection)
        context.run_migrations()
finally:
    if dialect in MYSQL:
        with suppress(exc.DBAPIError):  # a lost connection took its lock along
            connection.execute(text(f"SELECT RELEASE_LOCK({mysql_lock_name('migrate')})"))
