"""Detection as events arrive: when the service's next run is due, and which worker runs it.

Every worker of the service asks, on its own timer, whether a run is due (:func:`due`): the
last one finished ``[detect] interval`` seconds ago, or ``burst_events`` events arrived since.
Only the holder of the lease (one row, ``detect_lease``) runs it. The lease is taken with one
conditional UPDATE — free, expired, or already ours — which a database applies to one writer
at a time (SQLite's write lock; PostgreSQL's row lock, the condition read again once the lock
is had), so two workers never both win. The holder renews it while it runs; a worker killed
mid-run stops renewing and its lease expires ``lease_seconds`` later, when another takes
over. Nothing is lost or doubled if it dies: the run's alerts are filed and announced in one
transaction (see :meth:`custos.detect.cases.Casebook.record_new`), so either they were, and
the next run finds them by fingerprint, or they were not, and the next run files them.

Times are the workers' clocks (UTC): workers of one service on several hosts need their
clocks in step to within a small part of ``lease_seconds``.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update

from custos.detect.config import DetectConfig
from custos.store import Database
from custos.store.bulk import BulkAccessStore
from custos.store.events import (
    AccessEventRow,
    DetectionLeaseRow,
    EventSequenceRow,
    LedgerFeedRow,
)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """The lease as stored: who holds it until when, and what the last finished run did."""

    holder: str | None
    expires: datetime | None
    started: datetime | None
    finished: datetime | None
    duration: float | None
    lag: float | None
    seen: int
    raised: int
    runs: int
    failures: int

    def held(self, now: datetime) -> bool:
        """Whether some worker holds the lease at ``now``."""
        return self.holder is not None and self.expires is not None and self.expires > now


NO_RUN = RunStatus(None, None, None, None, None, None, 0, 0, 0, 0)


def due(
    status: RunStatus,
    config: DetectConfig,
    pending: int,
    now: datetime,
    holder: str | None = None,
) -> bool:
    """Whether a run is due at ``now``: none finished yet, the last finished ``interval``
    seconds ago or more, or ``pending`` (what arrived since it) reached ``burst_events``;
    never while a worker other than ``holder`` holds the lease."""
    if status.held(now) and status.holder != holder:
        return False
    if status.finished is None:
        return True
    if now - status.finished >= timedelta(seconds=config.interval):
        return True
    return pending >= config.burst_events


def new_holder() -> str:
    """An id for this worker: host and process (so an operator can tell which one it is)
    and a random part (so a restarted process with the same pid is another holder)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


class DetectionLease:
    """The lease on detection runs and their record, for one worker (``holder``)."""

    def __init__(self, db: Database, seconds: float, holder: str | None = None) -> None:
        self.db = db
        self.seconds = seconds
        self.holder = holder or new_holder()

    def status(self) -> RunStatus:
        """The lease and the last run as stored (:data:`NO_RUN` before the first)."""
        with self.db.session() as session:
            row = session.get(DetectionLeaseRow, 1)
            if row is None:
                return NO_RUN
            return RunStatus(
                row.holder,
                row.expires,
                row.started,
                row.finished,
                row.duration,
                row.lag,
                row.seen,
                row.raised,
                row.runs,
                row.failures,
            )

    def acquire(self, now: datetime | None = None) -> bool:
        """Take the lease if it is free, expired or already ours; whether we hold it now."""
        now = now or datetime.now(UTC)
        row = DetectionLeaseRow
        return self._update(
            (row.holder.is_(None) | row.expires.is_(None) | (row.expires <= now))
            | (row.holder == self.holder),
            holder=self.holder,
            expires=now + timedelta(seconds=self.seconds),
        )

    def renew(self, now: datetime | None = None) -> bool:
        """Extend our lease by ``seconds`` from ``now``; False when it is no longer ours
        (it expired and another worker took it)."""
        now = now or datetime.now(UTC)
        return self._update(
            DetectionLeaseRow.holder == self.holder,
            expires=now + timedelta(seconds=self.seconds),
        )

    def release(self) -> bool:
        """Give the lease up without recording a run."""
        return self._update(DetectionLeaseRow.holder == self.holder, holder=None, expires=None)

    def finish(
        self, *, started: datetime, finished: datetime, lag: float, seen: int, raised: int
    ) -> bool:
        """Record a finished run and give the lease up. False (nothing recorded) when the
        lease was no longer ours: the run happened, but another worker's counts as the last."""
        return self._update(
            DetectionLeaseRow.holder == self.holder,
            holder=None,
            expires=None,
            started=started,
            finished=finished,
            duration=(finished - started).total_seconds(),
            lag=lag,
            seen=seen,
            raised=raised,
            runs=DetectionLeaseRow.runs + 1,
        )

    def fail(self) -> bool:
        """Count a failed run and give the lease up (the next round tries again)."""
        return self._update(
            DetectionLeaseRow.holder == self.holder,
            holder=None,
            expires=None,
            failures=DetectionLeaseRow.failures + 1,
        )

    def _update(self, condition: Any, **values: Any) -> bool:
        statement = update(DetectionLeaseRow).where(DetectionLeaseRow.id == 1, condition)
        with self.db.session() as session:
            done = cast("CursorResult[Any]", session.execute(statement.values(**values)))
            return done.rowcount == 1

    # -- what arrived --------------------------------------------------------------------

    def sequence(self) -> int:
        """The access events' change sequence: the highest number handed out so far."""
        with self.db.session() as session:
            value = session.scalar(select(EventSequenceRow.value).where(EventSequenceRow.id == 1))
            return int(value or 0)

    def bulk_arrived(self, since: datetime | None) -> int:
        """How many bulk accesses were imported after ``since`` (all when None): they take
        no number of the events' sequence, and a run is due for them as for events."""
        return BulkAccessStore(self.db).arrived_since(since)

    def feed_position(self) -> int:
        """How far into the ledger custos's own decisions were copied into the events."""
        with self.db.session() as session:
            value = session.scalar(select(LedgerFeedRow.position).where(LedgerFeedRow.id == 1))
            return int(value or 0)

    def oldest_arrival(self, after: int, upto: int) -> datetime | None:
        """When the first of the events numbered ``after`` < seq ≤ ``upto`` arrived (None
        when there are none, or none records it)."""
        if upto <= after:
            return None
        with self.db.session() as session:
            found: datetime | None = session.scalar(
                select(func.min(AccessEventRow.arrived)).where(
                    AccessEventRow.seq > after, AccessEventRow.seq <= upto
                )
            )
            return found
