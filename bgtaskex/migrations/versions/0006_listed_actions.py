"""An index of each task's actions by status (task_id, status, rank): `list` and the
dashboard's pages find a task's first failed, pending or active action in one seek,
however long its chain (store/listed.py).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ACTIONS = "bgtaskex_actions"
INDEX = "ix_bgtaskex_actions_task_id_status_rank"


def upgrade() -> None:
    op.create_index(INDEX, ACTIONS, ["task_id", "status", "rank"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name=ACTIONS)
