"""Ledger: keep the compact range (frontier) beside the size.

Revision ID: 0010_ledger_frontier
Revises: 0002_ledger
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_ledger_frontier"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_state") as batch:
        batch.add_column(sa.Column("frontier", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_state") as batch:
        batch.drop_column("frontier")
