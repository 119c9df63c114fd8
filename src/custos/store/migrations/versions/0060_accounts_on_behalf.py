"""Accounts: a tool's token may be allowed to act on behalf of staff members.

``on_behalf`` is a fact of the token, ledgered with its others (an ``authority`` entry of
kind ``token`` carries ``"on_behalf": true``); existing tokens get false, which their
entries (without the key) agree with.

Revision ID: 0060_accounts_on_behalf
Revises: 0022_accounts_authority
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0060_accounts_on_behalf"
down_revision = "0022_accounts_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_tokens",
        sa.Column("on_behalf", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE api_tokens DROP COLUMN on_behalf")
    else:
        op.drop_column("api_tokens", "on_behalf")
