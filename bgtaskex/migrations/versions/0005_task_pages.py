"""Indexes for pages of tasks, newest first, on a million of them (`Client.page_tasks`,
the web dashboard): one range of (queue, type, status, id) or (type, status, id) per
value of the filter, in id order; and the time range of created_at.

(queue, type, status) gets id at its end: PostgreSQL orders equal keys by their place
in the heap, not by id (SQLite and InnoDB append the row id anyway). `stats` reads it as
before, covering.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TASKS = "bgtaskex_tasks"


def upgrade() -> None:
    op.create_index(
        "ix_bgtaskex_tasks_queue_type_status_id", TASKS, ["queue", "type", "status", "id"]
    )
    op.drop_index("ix_bgtaskex_tasks_queue_type_status", table_name=TASKS)
    op.create_index("ix_bgtaskex_tasks_type_status_id", TASKS, ["type", "status", "id"])
    op.create_index("ix_bgtaskex_tasks_created_at_id", TASKS, ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_bgtaskex_tasks_created_at_id", table_name=TASKS)
    op.drop_index("ix_bgtaskex_tasks_type_status_id", table_name=TASKS)
    op.create_index("ix_bgtaskex_tasks_queue_type_status", TASKS, ["queue", "type", "status"])
    op.drop_index("ix_bgtaskex_tasks_queue_type_status_id", table_name=TASKS)
