"""Initial schema: tasks, their actions and their event history.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bgtaskex.tables import Id, LongStr, Params, Real, Str, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bgtaskex_tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", Str(200), nullable=False),
        sa.Column("type", Str(16), nullable=False),
        sa.Column("queue", Str(100), nullable=False),
        sa.Column("status", Str(16), nullable=False),
        sa.Column("run_order", sa.SmallInteger, nullable=True),
        sa.Column("current_rank", sa.Integer, nullable=True),
        sa.Column("last_run_id", Str(32), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("cancel_requested_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bgtaskex_tasks"),
    )
    op.create_index(
        "ix_bgtaskex_tasks_due",
        "bgtaskex_tasks",
        ["run_order", "id"],
        sqlite_where=sa.text("run_order IS NOT NULL"),
        postgresql_where=sa.text("run_order IS NOT NULL"),
    )
    op.create_index(
        "ix_bgtaskex_tasks_ended",
        "bgtaskex_tasks",
        ["id"],
        sqlite_where=sa.text("run_order IS NULL"),
        postgresql_where=sa.text("run_order IS NULL"),
    )
    op.create_index(
        "ix_bgtaskex_tasks_queue_due",
        "bgtaskex_tasks",
        ["queue", "run_order", "id"],
        sqlite_where=sa.text("run_order IS NOT NULL"),
        postgresql_where=sa.text("run_order IS NOT NULL"),
    )
    op.create_index(
        "ix_bgtaskex_tasks_queue_type_status", "bgtaskex_tasks", ["queue", "type", "status"]
    )
    op.create_index("ix_bgtaskex_tasks_status_ended_at", "bgtaskex_tasks", ["status", "ended_at"])
    op.create_table(
        "bgtaskex_actions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("ref", Str(255), nullable=False),
        sa.Column("status", Str(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("params", Params(), nullable=False),
        sa.Column("initial_params", Params(), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("progress_done", Real, nullable=True),
        sa.Column("progress_total", Real, nullable=True),
        sa.Column("progress_message", Str(200), nullable=True),
        sa.Column("elapsed", Real, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bgtaskex_actions"),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["bgtaskex_tasks.id"],
            ondelete="CASCADE",
            name="fk_bgtaskex_actions_task_id_bgtaskex_tasks",
        ),
        sa.UniqueConstraint("task_id", "rank", name="uq_bgtaskex_actions_task_id_rank"),
    )
    op.create_index(
        "ix_bgtaskex_actions_status_ended_at", "bgtaskex_actions", ["status", "ended_at"]
    )
    op.create_table(
        "bgtaskex_events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("run_id", Str(32), nullable=True),
        sa.Column("rank", sa.Integer, nullable=True),
        sa.Column("old_status", Str(16), nullable=True),
        sa.Column("new_status", Str(16), nullable=True),
        sa.Column("message", LongStr(), nullable=False),
        sa.Column("error", LongStr(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bgtaskex_events"),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["bgtaskex_tasks.id"],
            ondelete="CASCADE",
            name="fk_bgtaskex_events_task_id_bgtaskex_tasks",
        ),
    )
    op.create_index("ix_bgtaskex_events_task_id_id", "bgtaskex_events", ["task_id", "id"])


def downgrade() -> None:
    op.drop_table("bgtaskex_events")
    op.drop_table("bgtaskex_actions")
    op.drop_index("ix_bgtaskex_tasks_due", table_name="bgtaskex_tasks")
    op.drop_table("bgtaskex_tasks")
