"""Approvals: requests and grants name the actions they cover (read, search, export, modify).

A grant used to cover every action its holder's role allows on the categories it named, so a
two-person approval to *read* a journalist's contact details also let the holder *modify*
them. Rows made before this revision were approved without an action in view; they get
``["read"]``, the least that any of them was asked for (fail closed: a tool that modified
under such a grant is refused until a new request names ``modify``).

Revision ID: 0015_approvals_actions
Revises: 0006_approvals
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_approvals_actions"
down_revision = "0006_approvals"
branch_labels = None
depends_on = None

_READ = sa.text("'[\"read\"]'")


def upgrade() -> None:
    for table in ("approval_requests", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("actions", sa.JSON(), nullable=False, server_default=_READ))


def downgrade() -> None:
    for table in ("approval_requests", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("actions")
