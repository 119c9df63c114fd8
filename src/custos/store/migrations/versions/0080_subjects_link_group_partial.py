"""Subjects: the link group index holds only linked subjects.

``ix_subjects_link_group`` indexed every subject, though only linked ones have a
``link_group`` and every query of it asks for those (``link_group IS NOT NULL``: a merge
reading the link graph, detection grouping accounts by person). A million unlinked subjects
were a million NULL entries to write and keep; as a partial index (SQLite and PostgreSQL
alike) it holds the linked ones only. ``custos org import`` of 10^6 subjects spent about
0.5 µs of CPU per row on it, a tenth of the insert (bench/orgload.py).

Revision ID: 0080_subjects_link_group_partial
Revises: 0040_hook_deliveries
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0080_subjects_link_group_partial"
down_revision = "0040_hook_deliveries"
branch_labels = None
depends_on = None

_LINKED = sa.text("link_group IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_subjects_link_group", table_name="subjects")
    op.create_index(
        "ix_subjects_link_group",
        "subjects",
        ["link_group"],
        sqlite_where=_LINKED,
        postgresql_where=_LINKED,
    )


def downgrade() -> None:
    op.drop_index("ix_subjects_link_group", table_name="subjects")
    op.create_index("ix_subjects_link_group", "subjects", ["link_group"])
