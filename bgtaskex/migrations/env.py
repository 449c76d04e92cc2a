"""Alembic environment: bgtaskex always passes the connection to migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from bgtaskex.tables import metadata

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # Two processes creating a fresh schema at once: the second waits, then finds it done.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('bgtaskex-migrate'))"))
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
