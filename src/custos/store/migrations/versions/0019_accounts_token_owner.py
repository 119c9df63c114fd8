"""Accounts: a token may belong to a person's account (their credential for the CLI).

Revision ID: 0019_accounts_token_owner
Revises: 0012_accounts_oidc
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_accounts_token_owner"
down_revision = "0012_accounts_oidc"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("account", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("account")
