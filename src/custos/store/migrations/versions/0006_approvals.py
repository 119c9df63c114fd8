"""Approvals: requests, votes, grants, break-glass reviews, journal and notification outbox.

Revision ID: 0006_approvals
Revises: 0001_directory
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0006_approvals"
down_revision = "0001_directory"
branch_labels = ("approvals",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("ticket", sa.String(128), nullable=True),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=False),
        sa.Column("groups_needed", sa.JSON(), nullable=False),
        sa.Column("policies", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("expires", UTCDateTime(), nullable=False),
        sa.Column("closed", UTCDateTime(), nullable=True),
        sa.Column("grant_id", sa.String(64), nullable=True),
        sa.Column("lock", sa.Integer(), nullable=False),
    )
    op.create_index("ix_approval_requests_principal", "approval_requests", ["principal"])
    op.create_index("ix_approval_requests_status", "approval_requests", ["status", "expires"])
    op.create_table(
        "approval_votes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("request_id", "approver", name="uq_approval_votes_request_approver"),
    )
    op.create_index("ix_approval_votes_request_id", "approval_votes", ["request_id"])
    op.create_index("ix_approval_votes_approver", "approval_votes", ["approver", "time"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=True, unique=True),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("ticket", sa.String(128), nullable=True),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("approvals", sa.Integer(), nullable=False),
        sa.Column("approver_groups", sa.JSON(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts", UTCDateTime(), nullable=False),
        sa.Column("ends", UTCDateTime(), nullable=False),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("review", sa.String(16), nullable=False),
        sa.Column("logged", sa.Boolean(), nullable=False),
        sa.Column("revoked", UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.Column("end_notified", sa.Boolean(), nullable=False),
        sa.Column("lock", sa.Integer(), nullable=False),
    )
    op.create_index("ix_grants_principal_ends", "grants", ["principal", "ends"])
    op.create_table(
        "grant_reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("grant_id", "reviewer", name="uq_grant_reviews_grant_reviewer"),
    )
    op.create_index("ix_grant_reviews_grant_id", "grant_reviews", ["grant_id"])
    op.create_table(
        "approval_journal",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entry", sa.JSON(), nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=True),
        sa.Column("ledger_index", sa.Integer(), nullable=True),
    )
    op.create_index("ix_approval_journal_ledger_index", "approval_journal", ["ledger_index"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", UTCDateTime(), nullable=False),
        sa.Column("delivered", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt"])
    op.create_table(
        "grants_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "grants_version",
        "notifications",
        "approval_journal",
        "grant_reviews",
        "grants",
        "approval_votes",
        "approval_requests",
    ):
        op.drop_table(table)
