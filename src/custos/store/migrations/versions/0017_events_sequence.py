"""Detect: access events carry a change sequence, so detection can copy only what changed.

Every stored event gets ``seq``, unique, from one counter (``event_sequence``, a single row):
an insert takes the next number, and so does a row whose content an import changes (a
decision a release's count is folded into, a stored release that becomes folded when its
decision arrives). A reader that has seen everything up to number H then needs only the rows
numbered above H. ``event_sequence`` also keeps how many events are stored and a random
identity of this event store, made with the row: a mirror that finds another identity (a
restored or replaced database) starts again from nothing.

Rows stored before this revision are numbered 1..n in id order.

Revision ID: 0017_events_sequence
Revises: 0016_events_explained
Create Date: 2026-12-04
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0017_events_sequence"
down_revision = "0016_events_explained"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_sequence",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
    )
    with op.batch_alter_table("access_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    # One statement on both backends (UPDATE … FROM: SQLite 3.33 and later): a correlated
    # count per row would be quadratic in the number of events.
    op.execute(
        "UPDATE access_events SET seq = numbered.n "
        "FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM access_events) AS numbered "
        "WHERE access_events.id = numbered.id"
    )
    # SQLite cannot make a column NOT NULL in place: the batch copies the table once.
    with op.batch_alter_table("access_events") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("ix_access_events_seq", ["seq"], unique=True)
    bind = op.get_bind()
    stored = int(bind.execute(sa.text("SELECT count(*) FROM access_events")).scalar_one())
    sequence = sa.table(
        "event_sequence",
        sa.column("id", sa.Integer()),
        sa.column("value", sa.BigInteger()),
        sa.column("rows", sa.BigInteger()),
        sa.column("store", sa.String()),
    )
    op.execute(
        sa.insert(sequence).values(id=1, value=stored, rows=stored, store=secrets.token_hex(16))
    )


def downgrade() -> None:
    with op.batch_alter_table("access_events") as batch:
        batch.drop_index("ix_access_events_seq")
        batch.drop_column("seq")
    op.drop_table("event_sequence")
