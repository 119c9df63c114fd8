"""Ledger: the newest entry about each subject, so each new one can name its previous.

Entries about a subject carry ``prev``: the index of the previous entry about that subject
(see docs/design/ledger.md, "Chains"). The writer reads it from this table under its lock and
updates it in the same transaction. Entries written before this revision carry no ``prev``;
the table starts from them (the last entry naming each subject), so the first new entry
about a subject names the last old one and reports stay one unbroken chain back to there.

Revision ID: 0020_ledger_subject_heads
Revises: 0014_ledger_entries_rowid
Create Date: 2027-01-10
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0020_ledger_subject_heads"
down_revision = "0014_ledger_entries_rowid"
branch_labels = None
depends_on = None

_CHUNK = 20_000


def upgrade() -> None:
    op.create_table(
        "ledger_subject_heads",
        sa.Column("subject", sa.Text(), primary_key=True),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        # One B-tree keyed by subject on SQLite (a rowid table would write a second one, its
        # key's index, on every append that moves a head).
        sqlite_with_rowid=False,
    )
    # What custos's chain takes an entry to be about when this revision was written: its
    # string field ``subject`` (reports.SUBJECT_CHAIN). Frozen here, as migrations are.
    bind = op.get_bind()
    heads: dict[str, int] = {}
    start = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT idx, entry FROM ledger_entries WHERE idx >= :start ORDER BY idx LIMIT :n"
            ),
            {"start": start, "n": _CHUNK},
        ).all()
        if not rows:
            break
        for idx, raw in rows:
            try:
                entry = json.loads(bytes(raw))
            except ValueError:
                continue  # log verify names a broken entry; it names no subject
            subject = entry.get("subject") if isinstance(entry, dict) else None
            if isinstance(subject, str):
                heads[subject] = int(idx)
        start = int(rows[-1][0]) + 1
    table = sa.table("ledger_subject_heads", sa.column("subject"), sa.column("idx"))
    items = [{"subject": s, "idx": i} for s, i in heads.items()]
    for at in range(0, len(items), 1000):
        bind.execute(sa.insert(table), items[at : at + 1000])


def downgrade() -> None:
    op.drop_table("ledger_subject_heads")
