"""Export: a MAC on each cursor row, so that a cursor moved in the database is seen, and the
index of the last ledger event sent (each event names its predecessor).

Existing rows get NULL: they are sealed by the exporter in the step that creates the home's
``keys/export.key`` (see docs/design/export.md, *Hostile insider*); after that a NULL MAC
means "not verified" and stops the destination.

Revision ID: 0090_export_cursor_mac
Revises: 0070_export
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0090_export_cursor_mac"
down_revision = "0070_export"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("export_cursors") as batch:
        batch.add_column(sa.Column("ledger_last", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("mac", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_cursors") as batch:
        batch.drop_column("mac")
        batch.drop_column("ledger_last")
