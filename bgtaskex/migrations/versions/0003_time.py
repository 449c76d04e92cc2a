"""Delayed and unique tasks: not_before, unique_key; why an action's last execute died.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bgtaskex.tables import Str, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WAITING = "run_order IS NOT NULL"


def _due_indexes(*extra: str) -> None:
    """The two indexes of the due-task query, with the columns `extra` after theirs."""
    op.create_index(
        "ix_bgtaskex_tasks_due",
        "bgtaskex_tasks",
        ["run_order", "id", *extra],
        sqlite_where=sa.text(_WAITING),
        postgresql_where=sa.text(_WAITING),
    )
    op.create_index(
        "ix_bgtaskex_tasks_queue_due",
        "bgtaskex_tasks",
        ["queue", "run_order", "id", *extra],
        sqlite_where=sa.text(_WAITING),
        postgresql_where=sa.text(_WAITING),
    )


def _drop_due_indexes() -> None:
    op.drop_index("ix_bgtaskex_tasks_due", table_name="bgtaskex_tasks")
    op.drop_index("ix_bgtaskex_tasks_queue_due", table_name="bgtaskex_tasks")


def upgrade() -> None:
    with op.batch_alter_table("bgtaskex_tasks") as batch:
        batch.add_column(sa.Column("not_before", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("unique_key", Str(200), nullable=True))
    with op.batch_alter_table("bgtaskex_actions") as batch:
        batch.add_column(sa.Column("last_failure", Str(2000), nullable=True))
    # The due-task query filters on not_before within the index range: covering.
    _drop_due_indexes()
    _due_indexes("not_before")
    # NULL (no key, or the task has ended) never collides, on every backend.
    op.create_index("ix_bgtaskex_tasks_unique_key", "bgtaskex_tasks", ["unique_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_bgtaskex_tasks_unique_key", table_name="bgtaskex_tasks")
    _drop_due_indexes()  # before SQLite's rebuild of the table, which would copy them
    with op.batch_alter_table("bgtaskex_actions") as batch:
        batch.drop_column("last_failure")
    with op.batch_alter_table("bgtaskex_tasks") as batch:
        batch.drop_column("unique_key")
        batch.drop_column("not_before")
    _due_indexes()
