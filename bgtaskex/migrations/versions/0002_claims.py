"""Claims with leases: which worker holds a task, its fencing token, until when.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bgtaskex.tables import Str, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bgtaskex_tasks") as batch:
        batch.add_column(sa.Column("claimed_by", Str(100), nullable=True))
        batch.add_column(
            sa.Column("claim_token", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("lease_until", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bgtaskex_tasks") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claim_token")
        batch.drop_column("claimed_by")
