"""Approvals: every grant names the ledger entry that set its facts.

``auth_idx`` is the index of the ``grant`` or ``break_glass`` entry a grant must equal to be
honoured (docs/design/authority.md). Grants made before this revision have none and are no
longer honoured: they are time-bound, and vouching for them after the fact would vouch for
whatever the table says now. Ask again.

Revision ID: 0021_grants_authority
Revises: 0015_approvals_actions
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_grants_authority"
down_revision = "0015_approvals_actions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("grants", sa.Column("auth_idx", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE grants DROP COLUMN auth_idx")
    else:
        op.drop_column("grants", "auth_idx")
