"""Detect: how far custos's own ledger has been fed into the access events.

Revision ID: 0011_ledger_feed
Revises: 0007_detect
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_ledger_feed"
down_revision = "0007_detect"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_feed",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_feed")
