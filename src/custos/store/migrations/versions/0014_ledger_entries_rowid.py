"""Ledger: on SQLite, the entry index is the table's own row id.

``idx BIGINT PRIMARY KEY`` gave SQLite two B-trees for the entries (the rows, keyed by a
hidden row id, and a unique index on ``idx``), so every append wrote and fsync'd a page of
each. Declared ``INTEGER PRIMARY KEY``, ``idx`` is the row id: one B-tree, one page less per
durable batch, and lookups by index go straight to the row. The table is rebuilt once, with
every entry's bytes unchanged. PostgreSQL keeps ``BIGINT``: its primary key is already the
only index.

Revision ID: 0014_ledger_entries_rowid
Revises: 0010_ledger_frontier
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0014_ledger_entries_rowid"
down_revision = "0010_ledger_frontier"
branch_labels = None
depends_on = None


def _rebuild(kind: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"CREATE TABLE ledger_entries_new (idx {kind} NOT NULL, entry BLOB NOT NULL, "
        "leaf BLOB NOT NULL, CONSTRAINT pk_ledger_entries PRIMARY KEY (idx))"
    )
    op.execute(
        "INSERT INTO ledger_entries_new (idx, entry, leaf) "
        "SELECT idx, entry, leaf FROM ledger_entries ORDER BY idx"
    )
    op.execute("DROP TABLE ledger_entries")
    op.execute("ALTER TABLE ledger_entries_new RENAME TO ledger_entries")


def upgrade() -> None:
    _rebuild("INTEGER")


def downgrade() -> None:
    _rebuild("BIGINT")
