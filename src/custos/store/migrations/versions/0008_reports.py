"""Reports: an index of ledger entries by subject.

Revision ID: 0008_reports
Revises: 0001_directory
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_reports"
down_revision = "0001_directory"
branch_labels = ("reports",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_subject_entries",
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_report_subject_entries_subject", "report_subject_entries", ["subject", "idx"]
    )
    op.create_table(
        "report_index_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("indexed", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("report_index_state")
    op.drop_table("report_subject_entries")
