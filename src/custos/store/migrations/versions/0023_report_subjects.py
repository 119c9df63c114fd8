"""Reports: an entry about several subjects has a row per subject in the subject index.

``report_subject_entries`` was keyed by the entry's index alone (one subject per entry).
Entries that say ``subjects_reported`` are about every subject of their ``subjects`` list, so
the key becomes (idx, subject). The rows are copied as they are: no entry written before this
revision carries the marker, so the index they were built from is still exact.

Revision ID: 0023_report_subjects
Revises: 0008_reports
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_report_subjects"
down_revision = "0008_reports"
branch_labels = None
depends_on = None

_INDEX = "ix_report_subject_entries_subject"
_PK = "pk_report_subject_entries"


def _replace(*, by_subject: bool) -> None:
    key = ["idx", "subject"] if by_subject else ["idx"]
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(_PK, "report_subject_entries", type_="primary")
        op.create_primary_key(_PK, "report_subject_entries", key)
        return
    # SQLite cannot change a primary key: copy into a new table and swap it in.
    op.create_table(
        "report_subject_entries_new",
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=_PK),
    )
    op.execute(
        "INSERT INTO report_subject_entries_new (idx, subject, type) "
        "SELECT idx, subject, type FROM report_subject_entries"
    )
    op.drop_index(_INDEX, table_name="report_subject_entries")
    op.drop_table("report_subject_entries")
    op.rename_table("report_subject_entries_new", "report_subject_entries")
    op.create_index(_INDEX, "report_subject_entries", ["subject", "idx"])


def upgrade() -> None:
    _replace(by_subject=True)


def downgrade() -> None:
    # Entries about several subjects keep one row (the lowest subject): as before this
    # revision, they reach one report.
    op.execute(
        "DELETE FROM report_subject_entries WHERE subject > "
        "(SELECT MIN(r.subject) FROM report_subject_entries r "
        "WHERE r.idx = report_subject_entries.idx)"
    )
    _replace(by_subject=False)
