"""Pushing the ledger's decisions, releases and approval events and detection's alerts to
each destination: at least once, in order, resuming after a restart.

Each destination has a durable cursor (:class:`~custos.store.export.ExportCursorRow`) over
two streams: the ledger by index (read through :func:`~custos.ledger.follow.follow_ledger`,
this being a :class:`~custos.ledger.follow.Follower`) and the alerts by id. A round sends
the ledger from its cursor to the ledger's size, then the alerts above its alert cursor, in
batches; for each batch it first records the batch's end as *in flight*, then sends, then
(only once the destination acknowledged) moves the cursor to that end and clears the mark,
in one transaction. A process that dies between the send and the move leaves the mark: the
next round sends that range again and counts every event of it as ``redelivered``. Nothing
is ever skipped: a destination that fails keeps its cursor, and the round stops there.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, case, func, select, update

from custos.config import Settings
from custos.errors import CustosError, ExportFailed, StoreConflict
from custos.export.config import DestinationConfig, build, destination_configs
from custos.export.destinations import Destination
from custos.export.ocsf import AlertRecord, from_alert, from_entry, kind_of
from custos.ledger.entries import Entry
from custos.ledger.follow import follow_ledger
from custos.ledger.log import Ledger
from custos.store import Database
from custos.store.events import AlertRow
from custos.store.export import ExportCursorRow

log = logging.getLogger("custos.export")

#: How long an alert must have been stored before it is sent: alerts are numbered when
#: they are inserted, and a transaction that took a lower number may commit after one that
#: took a higher; waiting lets it land, so the alert cursor never passes over it.
ALERT_SETTLE: Final = timedelta(seconds=5)
#: The longest a failing destination waits between two attempts.
MAX_BACKOFF: Final = 300.0


@dataclass(frozen=True, slots=True)
class CursorState:
    """One destination's cursor as stored."""

    name: str
    ledger: int = 0
    alert: int = 0
    ledger_inflight: int | None = None
    alert_inflight: int | None = None
    delivered: int = 0
    redelivered: int = 0
    failures: int = 0
    last_delivery: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round for one destination did."""

    name: str
    sent: int = 0
    redelivered: int = 0
    error: str | None = None
    #: Another process holds the destination's lease: this round did nothing.
    held: bool = False


class Cursors:
    """The ``export_cursors`` table: read, lease, mark in flight, advance."""

    def __init__(self, db: Database, lease_seconds: float = 60.0) -> None:
        self.db = db
        self.lease_seconds = lease_seconds

    def get(self, name: str) -> CursorState:
        """The stored cursor of ``name`` (made at 0 when there is none)."""
        try:
            with self.db.session() as session:
                row = session.get(ExportCursorRow, name)
                if row is None:
                    session.add(_new_row(name))
                    return CursorState(name)
                return _state(row)
        except StoreConflict:  # another worker made it at the same moment
            with self.db.session() as session:
                return _state(session.get_one(ExportCursorRow, name))

    def all(self) -> list[CursorState]:
        """Every stored cursor, by name."""
        with self.db.session() as session:
            rows = session.scalars(select(ExportCursorRow).order_by(ExportCursorRow.name)).all()
            return [_state(r) for r in rows]

    def acquire(self, name: str, holder: str, now: datetime | None = None) -> bool:
        """Take the lease on ``name`` if it is free, expired, already ``holder``'s, or held
        by a process of this host that is gone (killed: it can no longer renew, and waiting
        out its lease would stall the destination)."""
        self.get(name)
        now = now or datetime.now(UTC)
        row = ExportCursorRow
        free = row.holder.is_(None) | row.expires.is_(None) | (row.expires <= now)
        taken = free | (row.holder == holder)
        with self.db.session() as session:
            current = session.scalar(select(row.holder).where(row.name == name))
        if current and current != holder and _gone(current):
            taken = taken | (row.holder == current)
        return self._update(
            name, taken, holder=holder, expires=now + timedelta(seconds=self.lease_seconds)
        )

    def release(self, name: str, holder: str) -> None:
        """Give the lease on ``name`` up (if it is still ``holder``'s)."""
        self._update(name, ExportCursorRow.holder == holder, holder=None, expires=None)

    def mark(self, name: str, holder: str, *, ledger: int | None, alert: int | None) -> None:
        """Record what is about to be sent (and renew the lease). Raises
        :class:`ExportFailed` when the lease is no longer ``holder``'s: another worker
        took the destination over, and sending now would interleave with it."""
        row = ExportCursorRow
        values: dict[str, Any] = {
            "expires": datetime.now(UTC) + timedelta(seconds=self.lease_seconds)
        }
        # Never lower a mark a crash left: the range up to it may still arrive twice.
        if ledger is not None:
            values["ledger_inflight"] = case(
                (row.ledger_inflight > ledger, row.ledger_inflight), else_=ledger
            )
        if alert is not None:
            values["alert_inflight"] = case(
                (row.alert_inflight > alert, row.alert_inflight), else_=alert
            )
        if not self._update(name, ExportCursorRow.holder == holder, **values):
            raise ExportFailed(f"export {name!r}: another worker took this destination over")

    def advance(
        self,
        name: str,
        holder: str,
        *,
        ledger: int | None = None,
        alert: int | None = None,
        delivered: int,
        redelivered: int,
    ) -> None:
        """The destination acknowledged everything below ``ledger`` / up to ``alert``: move
        the cursor there (never back), clear the in-flight mark and count."""
        row = ExportCursorRow
        values: dict[str, Any] = {
            "delivered": row.delivered + delivered,
            "redelivered": row.redelivered + redelivered,
            "last_delivery": datetime.now(UTC),
        }
        # The mark is cleared once the cursor reaches it (not before: see :meth:`mark`).
        if ledger is not None:
            values["ledger"] = ledger
            values["ledger_inflight"] = case(
                (row.ledger_inflight > ledger, row.ledger_inflight), else_=None
            )
        if alert is not None:
            values["alert"] = alert
            values["alert_inflight"] = case(
                (row.alert_inflight > alert, row.alert_inflight), else_=None
            )
        if not self._update(name, row.holder == holder, **values):
            raise ExportFailed(f"export {name!r}: another worker took this destination over")

    def failed(self, name: str, reason: str) -> None:
        """Count a failed round (the cursor stays)."""
        row = ExportCursorRow
        self._update(
            name,
            row.name == name,
            failures=row.failures + 1,
            last_failure=datetime.now(UTC),
            last_error=reason[:500],
        )

    def _update(self, name: str, condition: Any, **values: Any) -> bool:
        statement = update(ExportCursorRow).where(ExportCursorRow.name == name, condition)
        with self.db.session() as session:
            done = cast("CursorResult[Any]", session.execute(statement.values(**values)))
            return done.rowcount == 1


def new_holder() -> str:
    """An id for this process's exporter: host, pid and a random part (a restarted process
    with the same pid is another holder)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def _gone(holder: str) -> bool:
    """Whether ``holder`` (from :func:`new_holder`) names a process of this host that no
    longer runs."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname()[:80] or not parts[1].isdigit():
        return False
    if int(parts[1]) == os.getpid():
        return False  # this very process, under another holder id: it is alive
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's): not ours to judge
    return False


def _new_row(name: str) -> ExportCursorRow:
    return ExportCursorRow(name=name, ledger=0, alert=0, delivered=0, redelivered=0, failures=0)


def _state(row: ExportCursorRow) -> CursorState:
    return CursorState(
        row.name,
        int(row.ledger),
        int(row.alert),
        None if row.ledger_inflight is None else int(row.ledger_inflight),
        None if row.alert_inflight is None else int(row.alert_inflight),
        int(row.delivered),
        int(row.redelivered),
        int(row.failures),
        row.last_delivery,
        row.last_failure,
        row.last_error,
    )


class LedgerExport:
    """A :class:`~custos.ledger.follow.Follower` that sends one destination the ledger
    entries it takes (those its ``events`` filter keeps, as OCSF) at each
    :meth:`persist`, and moves the destination's cursor once they were acknowledged."""

    def __init__(
        self,
        config: DestinationConfig,
        destination: Destination,
        cursors: Cursors,
        holder: str,
        origin: str,
    ) -> None:
        self.config = config
        self.destination = destination
        self.cursors = cursors
        self.holder = holder
        self.origin = origin
        state = cursors.get(config.name)
        self._position = state.ledger
        #: Below this index, what is sent may have been delivered before (a crash between
        #: a send and its acknowledgement being recorded).
        self._maybe_sent = state.ledger_inflight or 0
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self.sent = 0
        self.redelivered = 0

    def position(self) -> int:
        return self._position

    def follow(self, index: int, entry: Entry) -> None:
        kind = kind_of(entry)
        if kind is None or kind not in self.config.events:
            return
        event = from_entry(index, entry, self.origin)
        if event is not None:
            self._pending.append((index, event))

    def persist(self, end: int) -> None:
        """Send what was taken below ``end``, then move the cursor to ``end``. Raises
        :class:`ExportFailed` (the cursor stays; the chunk is fed again next round)."""
        pending, self._pending = self._pending, []
        again = sum(1 for index, _ in pending if index < self._maybe_sent)
        if pending:
            self.cursors.mark(self.config.name, self.holder, ledger=end, alert=None)
            self.destination.send([event for _, event in pending])
        self.cursors.advance(
            self.config.name,
            self.holder,
            ledger=end,
            delivered=len(pending),
            redelivered=again,
        )
        self._position = end
        self.sent += len(pending)
        self.redelivered += again


class Exporter:
    """Pushes events to every ``[[export]]`` destination of one installation."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        ledger: Ledger,
        *,
        holder: str | None = None,
        destinations: Mapping[str, Destination] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Raises :class:`ConfigurationError` for a wrong ``[[export]]`` table.
        ``destinations`` replaces what the tables would build, by name (for tests that
        need a destination to fail on cue)."""
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.holder = holder or new_holder()
        self.configs = destination_configs(settings)
        self.cursors = Cursors(db)
        self.clock = clock
        given = destinations or {}
        self.destinations: dict[str, Destination] = {
            c.name: given[c.name] if c.name in given else build(c, settings) for c in self.configs
        }
        self._next: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        return self.ledger.origin

    def run_once(self) -> list[RoundResult]:
        """One round for every destination (each under its lease; one that another worker
        holds is skipped): send everything not yet acknowledged. A failing destination is
        reported in its result and does not stop the others."""
        with self._lock:
            return [self._round(config) for config in self.configs]

    def step(self, monotonic: float) -> list[RoundResult]:
        """A round for each destination whose next round is due at ``monotonic`` (seconds):
        ``interval`` after a round that worked, and a back-off doubling with each failure
        in a row (at most :data:`MAX_BACKOFF`) after one that did not."""
        results = []
        with self._lock:
            for config in self.configs:
                if self._next.get(config.name, 0.0) > monotonic:
                    continue
                result = self._round(config)
                streak = self._streak.get(config.name, 0) + 1 if result.error else 0
                self._streak[config.name] = streak
                wait = config.interval * (2 ** min(streak, 16)) if streak else config.interval
                self._next[config.name] = monotonic + min(wait, MAX_BACKOFF)
                results.append(result)
        return results

    def _round(self, config: DestinationConfig) -> RoundResult:
        if not self.cursors.acquire(config.name, self.holder):
            return RoundResult(config.name, held=True)
        destination = self.destinations[config.name]
        follower = LedgerExport(config, destination, self.cursors, self.holder, self.origin)
        sent = redelivered = 0
        try:
            follow_ledger(self.ledger, [follower], chunk=config.batch)
            sent, redelivered = follower.sent, follower.redelivered
            if "alerts" in config.events:
                more, again = self._alerts(config, destination)
                sent, redelivered = sent + more, redelivered + again
        except CustosError as exc:
            sent, redelivered = sent + follower.sent, redelivered + follower.redelivered
            destination.close()
            self.cursors.failed(config.name, exc.message)
            log.warning("export %s failed (%s); will retry", config.name, exc.message)
            return RoundResult(config.name, sent, redelivered, exc.message)
        finally:
            self.cursors.release(config.name, self.holder)
        return RoundResult(config.name, sent, redelivered)

    def _alerts(self, config: DestinationConfig, destination: Destination) -> tuple[int, int]:
        state = self.cursors.get(config.name)
        position, maybe_sent = state.alert, state.alert_inflight or 0
        settled = self.clock() - ALERT_SETTLE
        sent = again = 0
        while True:
            with self.db.session() as session:
                rows = session.scalars(
                    select(AlertRow)
                    .where(AlertRow.id > position, AlertRow.created <= settled)
                    .order_by(AlertRow.id)
                    .limit(config.batch)
                ).all()
                records = [_record(r) for r in rows]
            if not records:
                return sent, again
            upto = records[-1].id
            self.cursors.mark(config.name, self.holder, ledger=None, alert=upto)
            destination.send([from_alert(r, self.origin) for r in records])
            repeats = sum(1 for r in records if r.id <= maybe_sent)
            self.cursors.advance(
                config.name,
                self.holder,
                alert=upto,
                delivered=len(records),
                redelivered=repeats,
            )
            sent, again, position = sent + len(records), again + repeats, upto

    def queue_depth(self) -> dict[str, int]:
        """Per destination: ledger entries past its cursor plus alerts past its alert
        cursor (what it has not acknowledged yet; entries its filter drops included)."""
        size = self.ledger.size()
        depth: dict[str, int] = {}
        cursors = {c.name: c for c in self.cursors.all()}
        with self.db.session() as session:
            for config in self.configs:
                state = cursors.get(config.name, CursorState(config.name))
                alerts = 0
                if "alerts" in config.events:
                    alerts = int(
                        session.scalar(
                            select(func.count())
                            .select_from(AlertRow)
                            .where(AlertRow.id > state.alert)
                        )
                        or 0
                    )
                depth[config.name] = max(size - state.ledger, 0) + alerts
        return depth

    def close(self) -> None:
        """Close every destination's connections."""
        for destination in self.destinations.values():
            destination.close()


def _record(row: AlertRow) -> AlertRecord:
    return AlertRecord(
        id=int(row.id),
        fingerprint=row.fingerprint,
        rule=row.rule,
        severity=row.severity,
        principals=tuple(row.principals),
        subjects=tuple(row.subjects),
        events=tuple(row.events),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        created=row.created,
        explanation=row.explanation,
        suppressed=bool(row.suppressed),
    )


def results_text(results: Sequence[RoundResult]) -> list[str]:
    """One line per destination, for people."""
    lines = []
    for r in results:
        again = f", {r.redelivered} sent again after a crash" if r.redelivered else ""
        state = f"failed: {r.error}" if r.error else "ok"
        if r.held:
            state = "skipped: another process is sending to it"
        lines.append(f"{r.name}: {r.sent} event(s) sent{again} ({state})")
    return lines
