"""The record of every run (bgtaskex_runs) and the queues an operator paused
(bgtaskex_queue_pauses).

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


def upgrade() -> None:
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
    op.drop_table("bgtaskex_queue_pauses")
    op.drop_index("ix_bgtaskex_runs_process_started_at", table_name="bgtaskex_runs")
    op.drop_index("ix_bgtaskex_runs_ended_at", table_name="bgtaskex_runs")
    op.drop_index("ix_bgtaskex_runs_started_at", table_name="bgtaskex_runs")
    op.drop_table("bgtaskex_runs")
