"""The record of every run (bgtaskex_runs) and the queues an operator paused
(bgtaskex_queue_pauses); on SQLite, task ids that are never reused (AUTOINCREMENT).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bgtaskex.tables import Id, LongStr, Real, Str, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _never_reuse_task_ids() -> None:
    """SQLite hands out max(id) + 1: once the newest tasks were purged, a new task took
    an id an earlier one had, and `show N`, `cancel N` or `client.get(N)` kept from
    before reached it. AUTOINCREMENT needs the table rebuilt (foreign keys are off during
    migrations on SQLite). Its partial indexes are dropped first and made again after,
    with their WHERE, which a rebuild would not keep."""
    partial = {
        "ix_bgtaskex_tasks_due": (["run_order", "id", "not_before"], "run_order IS NOT NULL"),
        "ix_bgtaskex_tasks_queue_due": (
            ["queue", "run_order", "id", "not_before"],
            "run_order IS NOT NULL",
        ),
        "ix_bgtaskex_tasks_ended": (["id"], "run_order IS NULL"),
    }
    for name in partial:
        op.drop_index(name, table_name="bgtaskex_tasks")
    with op.batch_alter_table(
        "bgtaskex_tasks", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass
    for name, (columns, where) in partial.items():
        op.create_index(name, "bgtaskex_tasks", columns, sqlite_where=sa.text(where))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _never_reuse_task_ids()
    op.create_table(
        "bgtaskex_runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", Str(32), nullable=False),
        sa.Column("process", Str(100), nullable=True),
        sa.Column("holder", Str(100), nullable=False),
        sa.Column("host", Str(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("lock", Str(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("ended_at", UTCDateTime, nullable=True),
        sa.Column("budget", Real, nullable=False),
        sa.Column("outcome", Str(16), nullable=False),
        sa.Column("finished", sa.Integer, nullable=False, server_default="0"),
        sa.Column("paused", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lost", sa.Integer, nullable=False, server_default="0"),
        sa.Column("actions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("left_waiting", sa.Integer, nullable=False, server_default="0"),
        sa.Column("purged", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_overrun", Real, nullable=False, server_default="0"),
        sa.Column("error", LongStr(), nullable=True),
    )
    op.create_index("ix_bgtaskex_runs_started_at", "bgtaskex_runs", ["started_at"])
    op.create_index("ix_bgtaskex_runs_ended_at", "bgtaskex_runs", ["ended_at"])
    op.create_index(
        "ix_bgtaskex_runs_process_started_at", "bgtaskex_runs", ["process", "started_at"]
    )
    op.create_table(
        "bgtaskex_queue_pauses",
        sa.Column("queue", Str(100), primary_key=True),
        sa.Column("paused_at", UTCDateTime, nullable=False),
        sa.Column("reason", Str(500), nullable=True),
        sa.Column("paused_by", Str(255), nullable=True),
    )


def downgrade() -> None:
    # On SQLite the tasks table keeps AUTOINCREMENT: 0003's code runs on it unchanged.
    op.drop_table("bgtaskex_queue_pauses")
    op.drop_index("ix_bgtaskex_runs_process_started_at", table_name="bgtaskex_runs")
    op.drop_index("ix_bgtaskex_runs_ended_at", table_name="bgtaskex_runs")
    op.drop_index("ix_bgtaskex_runs_started_at", table_name="bgtaskex_runs")
    op.drop_table("bgtaskex_runs")
