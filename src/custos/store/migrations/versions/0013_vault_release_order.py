"""Vault: the records index holds the whole order of a release (subject, category, time, id).

A guarded read returns a subject's records of one category ordered by time, then id. With id
missing from the index, SQLite sorted every release's rows again in a temporary B-tree (a
fifth of the query); with it, the index alone gives the order on both backends.

Revision ID: 0013_vault_release_order
Revises: 0005_vault
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013_vault_release_order"
down_revision = "0005_vault"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_vault_records_release", "vault_records", ["subject", "category", "time", "id"]
    )
    op.drop_index("ix_vault_records_subject_category", table_name="vault_records")


def downgrade() -> None:
    op.create_index(
        "ix_vault_records_subject_category", "vault_records", ["subject", "category", "time"]
    )
    op.drop_index("ix_vault_records_release", table_name="vault_records")
