"""Directory: every principal, subject and ticket names the ledger entry that set its facts.

``auth_idx`` is the index of the ``authority`` ledger entry whose facts the row must equal to
be honoured (docs/design/authority.md). Rows stored before this revision have none: custos
refuses them until they are loaded again through custos (``custos org load`` of the same
file vouches for every row whose facts it states), since adopting them silently would vouch
for whatever a database administrator had already changed.

Revision ID: 0019_directory_authority
Revises: 0018_directory_seq
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_directory_authority"
down_revision = "0018_directory_seq"
branch_labels = None
depends_on = None

TABLES = ("principals", "subjects", "tickets")


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
