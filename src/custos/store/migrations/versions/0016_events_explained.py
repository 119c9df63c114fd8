"""Detect: access events keep the guarded path's own explanation of each decision.

``explained`` is ``ticket`` for a decision custos let through on the strength of the ticket it
cites (open, assigned to the principal, about the subject, of the purpose's kind, opened by
someone else; not an export, not break-glass), ``own_ticket`` when the principal opened that
ticket, copied from the decision's ledger entry by the ledger feed. Detection takes those
accesses as explained without joining them to the tickets again. Events imported from other
tools never set it; rows from before this revision are null, so they are checked against the
directory as before.

Revision ID: 0016_events_explained
Revises: 0011_ledger_feed
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_events_explained"
down_revision = "0011_ledger_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("access_events") as batch:
        batch.add_column(sa.Column("explained", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_events") as batch:
        batch.drop_column("explained")
