"""Directory: every principal, subject and ticket carries the version of its last change.

``seq`` is the directory version (``directory_version.version``) created by the write that
last added or changed the row, so that detection can keep a copy of the directory between runs
and copy only the rows with ``seq`` above the version it last copied. Rows stored before this
revision take the version current at migration time (0 when the directory was never written):
none of them is newer than that version, and a first copy takes every row (``seq > -1``).

On SQLite the column keeps ``DEFAULT 0``: SQLite adds a ``NOT NULL`` column only with a
default, and rebuilding ``principals`` and ``subjects`` to drop it is refused while the
tickets' foreign keys point at them (foreign keys are enforced, and cannot be switched off
inside the migration's transaction). custos itself always sets ``seq``.

Revision ID: 0018_directory_seq
Revises: 0017_events_sequence
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_directory_seq"
down_revision = "0017_events_sequence"
branch_labels = None
depends_on = None

TABLES = ("principals", "subjects", "tickets")
_CURRENT = "coalesce((SELECT version FROM directory_version WHERE id = 1), 0)"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in TABLES:
        # On SQLite: ALTER TABLE ADD COLUMN, no table rebuild (see the module's docstring).
        op.add_column(
            table,
            sa.Column(
                "seq", sa.BigInteger(), nullable=not sqlite, server_default="0" if sqlite else None
            ),
        )
        op.execute(f"UPDATE {table} SET seq = {_CURRENT}")  # noqa: S608 - fixed names
        if not sqlite:
            op.alter_column(table, "seq", existing_type=sa.BigInteger(), nullable=False)
        op.create_index(f"ix_{table}_seq", table, ["seq"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in TABLES:
        op.drop_index(f"ix_{table}_seq", table)
        if sqlite:
            # SQLite 3.35+ drops a column in place (a batch rebuild would hit the foreign keys).
            op.execute(f"ALTER TABLE {table} DROP COLUMN seq")
        else:
            op.drop_column(table, "seq")
