"""Accounts: every account, API token and session names the ledger entry that set it.

``auth_idx`` is the index of the ``authority`` entry (kind ``account``, ``token`` or
``session``) whose facts the row must equal to be honoured (docs/design/authority.md). Rows
made before this revision have none and are refused: a token or account inserted with SQL
must never act, and vouching for the existing rows now would vouch for whatever they say.
Make accounts and tokens again (``custos users add``, ``custos tokens create``).

Revision ID: 0022_accounts_authority
Revises: 0019_accounts_token_owner
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_accounts_authority"
down_revision = "0019_accounts_token_owner"
branch_labels = None
depends_on = None

TABLES = ("accounts", "api_tokens", "sessions")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("auth_idx", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in TABLES:
        if sqlite:
            op.execute(f"ALTER TABLE {table} DROP COLUMN auth_idx")
        else:
            op.drop_column(table, "auth_idx")
