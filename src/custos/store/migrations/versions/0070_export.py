"""Export: a durable cursor per destination of ``[[export]]`` (see docs/design/export.md).

Revision ID: 0070_export
Revises: 0001_directory
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0070_export"
down_revision = "0001_directory"
branch_labels = ("export",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_cursors",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("ledger", sa.BigInteger(), nullable=False),
        sa.Column("alert", sa.BigInteger(), nullable=False),
        sa.Column("ledger_inflight", sa.BigInteger(), nullable=True),
        sa.Column("alert_inflight", sa.BigInteger(), nullable=True),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("redelivered", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("last_delivery", UTCDateTime(), nullable=True),
        sa.Column("last_failure", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("export_cursors")
