"""Accounts: an optional OpenID Connect identity per account.

Revision ID: 0012_accounts_oidc
Revises: 0009_accounts
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_accounts_oidc"
down_revision = "0009_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("oidc_subject", sa.String(512), nullable=True))
        batch.create_unique_constraint("uq_accounts_oidc_subject", ["oidc_subject"])


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("uq_accounts_oidc_subject", type_="unique")
        batch.drop_column("oidc_subject")
