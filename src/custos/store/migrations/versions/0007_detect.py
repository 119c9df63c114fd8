"""Detection: access events, alerts, cases, case comments, suppressions.

Revision ID: 0007_detect
Revises: 0001_directory
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0007_detect"
down_revision = "0001_directory"
branch_labels = ("detect",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_events",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("ticket", sa.String(128), nullable=True),
        sa.Column("decision", sa.String(24), nullable=False),
        sa.Column("precision", sa.String(16), nullable=True),
        sa.Column("records", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(128), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_index("ix_access_events_time", "access_events", ["time"])
    op.create_index("ix_access_events_principal_time", "access_events", ["principal", "time"])
    op.create_index("ix_access_events_subject_time", "access_events", ["subject", "time"])
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("title", sa.String(512), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("assignee", sa.String(128), nullable=True),
        sa.Column("disposition", sa.String(32), nullable=True),
        sa.Column("opened", UTCDateTime(), nullable=False),
        sa.Column("closed", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_cases_status", "cases", ["status"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("principals", sa.JSON(), nullable=False),
        sa.Column("subjects", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("first_seen", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=True),
    )
    op.create_index("ix_alerts_case", "alerts", ["case_id"])
    op.create_index("ix_alerts_last_seen", "alerts", ["last_seen"])
    op.create_table(
        "case_comments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_case_comments_case", "case_comments", ["case_id"])
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_suppressions_rule_principal", "suppressions", ["rule", "principal"])


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_table("case_comments")
    op.drop_table("alerts")
    op.drop_table("cases")
    op.drop_table("access_events")
