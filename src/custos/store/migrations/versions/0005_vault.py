"""Vault: wrapped data keys and encrypted records.

Revision ID: 0005_vault
Revises: 0001_directory
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0005_vault"
down_revision = "0001_directory"
branch_labels = ("vault",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vault_keys",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_end", UTCDateTime(), nullable=False),
        sa.Column("kek", sa.String(64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("shredded", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_vault_keys_period_end", "vault_keys", ["period_end"])
    op.create_table(
        "vault_records",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("key_id", sa.String(300), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("coarse", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_vault_records_subject_category", "vault_records", ["subject", "category", "time"]
    )


def downgrade() -> None:
    op.drop_table("vault_records")
    op.drop_table("vault_keys")
