"""Detect: bulk accesses found in audit logs (a scan, a count, a ``COPY`` of a table).

``bulk_accesses`` holds one row per statement and table that reached many people at once,
which the per-subject access events cannot hold: who (the mapped principal, or null and the
log's own actor), which table and category, when, the kind of scope, the rows count when the
log gives it, and the statement's shape (literals replaced by ``?``) with its SHA-256 —
never a literal. See ``custos.store.bulk``.

Revision ID: 0130_bulk_accesses
Revises: 0025_detect_continuous
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0130_bulk_accesses"
down_revision = "0025_detect_continuous"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_accesses",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(24), nullable=False),
        sa.Column("object", sa.String(256), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("shape", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("log_file", sa.String(512), nullable=False),
        sa.Column("log_line", sa.Integer(), nullable=False),
        sa.Column("mapping", sa.String(80), nullable=False),
        sa.Column("database", sa.String(128), nullable=True),
        sa.Column("arrived", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_bulk_accesses_time", "bulk_accesses", ["time"])
    op.create_index("ix_bulk_accesses_arrived", "bulk_accesses", ["arrived"])


def downgrade() -> None:
    op.drop_index("ix_bulk_accesses_arrived", table_name="bulk_accesses")
    op.drop_index("ix_bulk_accesses_time", table_name="bulk_accesses")
    op.drop_table("bulk_accesses")
