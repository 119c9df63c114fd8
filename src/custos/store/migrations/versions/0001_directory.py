"""Directory (principals, subjects, tickets), its version counter, and policy history.

Revision ID: 0001_directory
Revises:
Create Date: 2026-11-25

Every other part's first migration revises this one and carries its own branch label,
so parts evolve independently; ``custos init`` upgrades to all ``heads``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0001_directory"
down_revision = None
branch_labels = ("directory",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("manager", sa.String(128), nullable=True),
        sa.Column("country", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("role_since", UTCDateTime(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("handle", sa.String(256), nullable=True),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("protected", sa.JSON(), nullable=False),
        sa.Column("employee", sa.String(128), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "subject",
            sa.String(128),
            sa.ForeignKey("subjects.id", name="fk_tickets_subject_subjects"),
            nullable=False,
        ),
        sa.Column(
            "assignee",
            sa.String(128),
            sa.ForeignKey("principals.id", name="fk_tickets_assignee_principals"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened", UTCDateTime(), nullable=True),
        sa.Column("closed", UTCDateTime(), nullable=True),
        sa.Column("opened_by", sa.String(128), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
    )
    op.create_index("ix_tickets_subject", "tickets", ["subject"])
    op.create_index("ix_tickets_assignee", "tickets", ["assignee"])
    op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("activated", UTCDateTime(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
    op.drop_table("directory_version")
    op.drop_index("ix_tickets_assignee", "tickets")
    op.drop_index("ix_tickets_subject", "tickets")
    op.drop_table("tickets")
    op.drop_table("subjects")
    op.drop_table("principals")
