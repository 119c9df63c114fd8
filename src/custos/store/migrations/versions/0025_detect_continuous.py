"""Detect: the service detects by itself — a lease, arrival times, time-to-alert.

``detect_lease`` (one row, ``id`` 1) says which worker of the service is running detection
and until when (a worker that dies stops renewing it, so it expires), and what the last
finished run did (when, how long, its lag, the change sequence's number it took in).
``access_events.arrived`` is when custos stored an event, and ``alerts.evidence_arrived``
when the newest of an alert's evidence arrived: the alert's ``created`` minus that is its
time-to-alert. Rows from before this revision have neither (null).

Revision ID: 0025_detect_continuous
Revises: 0019_directory_authority
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from custos.store.base import UTCDateTime

revision = "0025_detect_continuous"
down_revision = "0019_directory_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without a default: no table is rewritten on either backend.
    with op.batch_alter_table("access_events") as batch:
        batch.add_column(sa.Column("arrived", UTCDateTime(), nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("evidence_arrived", UTCDateTime(), nullable=True))
    lease = op.create_table(
        "detect_lease",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("expires", UTCDateTime(), nullable=True),
        sa.Column("started", UTCDateTime(), nullable=True),
        sa.Column("finished", UTCDateTime(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("lag", sa.Float(), nullable=True),
        sa.Column("seen", sa.BigInteger(), nullable=False),
        sa.Column("raised", sa.Integer(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
    )
    # The row exists from the start, so acquiring is always one conditional UPDATE.
    op.bulk_insert(lease, [{"id": 1, "seen": 0, "raised": 0, "runs": 0, "failures": 0}])


def downgrade() -> None:
    op.drop_table("detect_lease")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("evidence_arrived")
    with op.batch_alter_table("access_events") as batch:
        batch.drop_column("arrived")
