"""Directory feeds: the ticket webhooks' payloads taken within their replay window.

``hook_deliveries`` holds the signature of each webhook payload custos took and when (Unix
seconds), so that the same payload sent again within the window is refused as a replay by
every worker of the service, not only the one that took it. Not authority: a row deleted by
hand lets one replay through, which is ledgered like any change.

Revision ID: 0040_hook_deliveries
Revises: 0024_subjects_linked
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0040_hook_deliveries"
down_revision = "0024_subjects_linked"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("signature", sa.String(80), primary_key=True),
        sa.Column("taken", sa.Float(), nullable=False),
    )
    op.create_index("ix_hook_deliveries_taken", "hook_deliveries", ["taken"])


def downgrade() -> None:
    op.drop_index("ix_hook_deliveries_taken", table_name="hook_deliveries")
    op.drop_table("hook_deliveries")
