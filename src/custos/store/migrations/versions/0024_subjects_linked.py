"""Subjects: the accounts each one is linked to, and its link group.

``linked`` is a JSON list of the ids this subject is directly linked to (both sides of every
link: a link stated on either side is stored on both), sorted; NULL or ``[]`` when none.
``link_group`` is the smallest subject id of its link group (the connected component of the
links), NULL when it is linked to nothing, indexed so that a merge finds a group's members
and detection groups accounts by person (DESIGN.md principle 11). Both are authority (part of
a subject's ledgered facts); rows stored before this revision are linked to nothing, which is
what the ledger entries that set them mean too, so they still vouch.

Revision ID: 0024_subjects_linked
Revises: 0019_directory_authority
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_subjects_linked"
down_revision = "0019_directory_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subjects", sa.Column("linked", sa.JSON(), nullable=True))
    op.add_column("subjects", sa.Column("link_group", sa.String(128), nullable=True))
    op.create_index("ix_subjects_link_group", "subjects", ["link_group"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("ix_subjects_link_group", "subjects")
    for column in ("link_group", "linked"):
        if sqlite:
            # SQLite 3.35+ drops a column in place (a batch rebuild would hit the foreign keys).
            op.execute(f"ALTER TABLE subjects DROP COLUMN {column}")
        else:
            op.drop_column("subjects", column)
