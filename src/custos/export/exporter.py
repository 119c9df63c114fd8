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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

from sqlalchemy import CursorResult, func, select, update

from custos.config import Settings
from custos.errors import (
    ConfigurationError,
    CursorTampered,
    CustosError,
    ExportFailed,
    InvalidInput,
    StoreConflict,
)
from custos.export.config import DestinationConfig, build, destination_configs
from custos.export.destinations import Destination
from custos.export.ocsf import AlertRecord, from_alert, from_entry, kind_of
from custos.export.seal import CursorKey, load_key
from custos.ledger.entries import Entry, ExportCursorEntry
from custos.ledger.follow import follow_ledger
from custos.ledger.log import Ledger
from custos.store import Database
from custos.store.events import AlertRow
from custos.store.export import ExportCursorRow
from custos.times import iso

log = logging.getLogger("custos.export")

#: How long an alert must have been stored before it is sent: alerts are numbered when
#: they are inserted, and a transaction that took a lower number may commit after one that
#: took a higher; waiting lets it land, so the alert cursor never passes over it.
ALERT_SETTLE: Final = timedelta(seconds=5)
#: The longest a failing destination waits between two attempts.
MAX_BACKOFF: Final = 300.0


@dataclass(frozen=True, slots=True)
class CursorState:
    """One destination's cursor as stored. ``verified`` is False when its row does not
    verify against the home's export key (``problem`` says why): then its positions are a
    claim of whoever wrote the row, and nothing is sent from them."""

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
    #: The ledger index of the last event the destination acknowledged (None: none yet, or
    #: none since a reset): each ledger event names its predecessor with it.
    ledger_last: int | None = None
    verified: bool = True
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round for one destination did."""

    name: str
    sent: int = 0
    redelivered: int = 0
    error: str | None = None
    #: Another process holds the destination's lease: this round did nothing.
    held: bool = False


def _sealed(state: CursorState) -> tuple[str, int, int, int | None, int | None, int | None]:
    """What a cursor's MAC is over (:func:`custos.export.seal.encode`), from its state."""
    return (
        state.name,
        state.ledger,
        state.alert,
        state.ledger_inflight,
        state.alert_inflight,
        state.ledger_last,
    )


class Cursors:
    """The ``export_cursors`` table: read (verifying each row's MAC), lease, mark in flight,
    advance, reset.

    Every write of a position seals the row again with ``key`` and only lands on the row
    this object last verified or wrote (its MAC is in the ``WHERE``): a row changed since is
    read again, and either verifies (another worker moved it: :class:`ExportFailed`) or not
    (:class:`CursorTampered`). Counts, times, the last error and the lease are not sealed:
    they change nothing that is sent.
    """

    def __init__(self, db: Database, key: CursorKey | None, lease_seconds: float = 60.0) -> None:
        """``key`` None: rows can be listed (each then unverified) but not used."""
        self.db = db
        self.key = key
        self.lease_seconds = lease_seconds
        #: Per destination, the positions and MAC this object last verified or wrote.
        self._known: dict[str, tuple[CursorState, str]] = {}

    def _sealer(self) -> CursorKey:
        if self.key is None:
            raise ConfigurationError("export cursors cannot be used without the export key")
        return self.key

    def _mac(self, state: CursorState) -> str:
        return self._sealer().seal(*_sealed(state))

    def ensure(self, name: str) -> None:
        """Make ``name``'s row, at 0 and sealed, when there is none. A row at 0 is always
        safe (it can only cause re-sends), so a deleted row is simply made again."""
        with self.db.session() as session:
            if session.get(ExportCursorRow, name) is not None:
                return
        try:
            with self.db.session() as session:
                row = _new_row(name)
                row.mac = self._mac(CursorState(name))
                session.add(row)
        except StoreConflict:  # another worker made it at the same moment
            pass

    def get(self, name: str) -> CursorState:
        """The verified cursor of ``name`` (made at 0 when there is none). Raises
        :class:`CursorTampered` when its row does not verify."""
        self.ensure(name)
        with self.db.session() as session:
            row = session.get_one(ExportCursorRow, name)
            state, mac = _state(row), row.mac
        why = self._sealer().problem(mac, *_sealed(state))
        if why is not None or mac is None:
            self._known.pop(name, None)
            raise CursorTampered(name, why or "it carries no MAC")
        self._known[name] = (state, mac)
        return state

    def all(self) -> list[CursorState]:
        """Every stored cursor, by name, each with whether it verifies."""
        with self.db.session() as session:
            rows = session.scalars(select(ExportCursorRow).order_by(ExportCursorRow.name)).all()
            found = [(_state(r), r.mac) for r in rows]
        states = []
        for state, mac in found:
            why = (
                "the export key is not loaded"
                if self.key is None
                else self.key.problem(mac, *_sealed(state))
            )
            states.append(replace(state, verified=why is None, problem=why))
        return states

    def unsealed(self) -> list[CursorState]:
        """The rows without a MAC (left so by the migration that added it, or emptied)."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ExportCursorRow)
                .where(ExportCursorRow.mac.is_(None))
                .order_by(ExportCursorRow.name)
            ).all()
            return [replace(_state(r), verified=False, problem="it carries no MAC") for r in rows]

    def seal_as_found(self, state: CursorState) -> bool:
        """Seal the unsealed row of ``state.name`` if it still holds exactly ``state``'s
        positions (True when sealed). Only right after the export key was made: see
        :meth:`Exporter.seal_after_upgrade`."""
        row = ExportCursorRow
        same = (
            row.mac.is_(None)
            & (row.ledger == state.ledger)
            & (row.alert == state.alert)
            & _equal(row.ledger_inflight, state.ledger_inflight)
            & _equal(row.alert_inflight, state.alert_inflight)
            & _equal(row.ledger_last, state.ledger_last)
        )
        return self._update(state.name, same, mac=self._mac(state))

    def reset(self, state: CursorState) -> None:
        """Set ``state.name``'s positions and marks to ``state``'s and seal them, whatever
        the row held (the caller ledgered it first), clearing its last error."""
        self.ensure(state.name)
        mac = self._mac(state)
        self._update(
            state.name,
            ExportCursorRow.name == state.name,
            ledger=state.ledger,
            alert=state.alert,
            ledger_inflight=state.ledger_inflight,
            alert_inflight=state.alert_inflight,
            ledger_last=state.ledger_last,
            last_error=None,
            mac=mac,
        )
        self._known.pop(state.name, None)

    def acquire(self, name: str, holder: str, now: datetime | None = None) -> bool:
        """Take the lease on ``name`` if it is free, expired, already ``holder``'s, or held
        by a process of this host that is gone (killed: it can no longer renew, and waiting
        out its lease would stall the destination). Does not verify the row (the round
        does, and reports it)."""
        self.ensure(name)
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
        :class:`ExportFailed` when the lease is no longer ``holder``'s (another worker took
        the destination over, and sending now would interleave with it) and
        :class:`CursorTampered` when the row no longer verifies."""
        state, mac = self._current(name)
        # Never lower a mark a crash left: the range up to it may still arrive twice.
        if ledger is not None:
            mark = state.ledger_inflight
            state = replace(state, ledger_inflight=ledger if mark is None else max(mark, ledger))
        if alert is not None:
            mark = state.alert_inflight
            state = replace(state, alert_inflight=alert if mark is None else max(mark, alert))
        self._write(
            holder,
            mac,
            state,
            expires=datetime.now(UTC) + timedelta(seconds=self.lease_seconds),
        )

    def advance(
        self,
        name: str,
        holder: str,
        *,
        ledger: int | None = None,
        alert: int | None = None,
        last: int | None = None,
        delivered: int,
        redelivered: int,
    ) -> None:
        """The destination acknowledged everything below ``ledger`` / up to ``alert`` (and
        the last ledger event it was sent is at index ``last``, when the batch had one):
        move the cursor there, clear the in-flight mark and count. Raises as :meth:`mark`."""
        state, mac = self._current(name)
        if last is not None:
            state = replace(state, ledger_last=last)
        # The mark is cleared once the cursor reaches it (not before: see :meth:`mark`).
        if ledger is not None:
            mark = state.ledger_inflight
            state = replace(
                state,
                ledger=ledger,
                ledger_inflight=mark if mark is not None and mark > ledger else None,
            )
        if alert is not None:
            mark = state.alert_inflight
            state = replace(
                state,
                alert=alert,
                alert_inflight=mark if mark is not None and mark > alert else None,
            )
        row = ExportCursorRow
        self._write(
            holder,
            mac,
            state,
            delivered=row.delivered + delivered,
            redelivered=row.redelivered + redelivered,
            last_delivery=datetime.now(UTC),
        )

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

    def _current(self, name: str) -> tuple[CursorState, str]:
        if name not in self._known:
            self.get(name)
        return self._known[name]

    def _write(self, holder: str, mac: str, state: CursorState, **values: Any) -> None:
        """Store ``state``'s positions sealed, on the row still holding ``mac`` and leased
        to ``holder``."""
        row = ExportCursorRow
        sealed = self._mac(state)
        if self._update(
            state.name,
            (row.holder == holder) & (row.mac == mac),
            ledger=state.ledger,
            alert=state.alert,
            ledger_inflight=state.ledger_inflight,
            alert_inflight=state.alert_inflight,
            ledger_last=state.ledger_last,
            mac=sealed,
            **values,
        ):
            self._known[state.name] = (state, sealed)
            return
        self._known.pop(state.name, None)
        self.get(state.name)  # CursorTampered when the row changed under us unsealed
        raise ExportFailed(f"export {state.name!r}: another worker took this destination over")

    def _update(self, name: str, condition: Any, **values: Any) -> bool:
        statement = update(ExportCursorRow).where(ExportCursorRow.name == name, condition)
        with self.db.session() as session:
            done = cast("CursorResult[Any]", session.execute(statement.values(**values)))
            return done.rowcount == 1


def _equal(column: Any, value: int | None) -> Any:
    return column.is_(None) if value is None else column == value


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
        None if row.ledger_last is None else int(row.ledger_last),
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
        #: The index of the event taken last (sent or pending): the next one names it.
        self._previous = state.ledger_last
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
            # Its predecessor in what this destination is sent: a receiver missing that one
            # sees a gap by itself, whatever the filter drops in between.
            event["unmapped"]["custos"]["previous_index"] = self._previous
            self._previous = index
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
            last=pending[-1][0] if pending else None,
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
        cursor_key: CursorKey | None = None,
    ) -> None:
        """Raises :class:`ConfigurationError` for a wrong ``[[export]]`` table or export
        key. ``destinations`` replaces what the tables would build, by name (for tests that
        need a destination to fail on cue). ``cursor_key`` defaults to the home's
        (:func:`custos.export.seal.load_key`, loaded only when a destination is configured;
        when this makes it, the rows the migration left unsealed are sealed as found and
        ledgered: :meth:`seal_after_upgrade`)."""
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.holder = holder or new_holder()
        self.configs = destination_configs(settings)
        made = False
        if cursor_key is None and self.configs:
            cursor_key, made = load_key(settings)
        self.cursors = Cursors(db, cursor_key)
        if made:
            self.seal_after_upgrade()
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

    def seal_after_upgrade(self) -> list[CursorState]:
        """Seal, as they stand, the cursor rows without a MAC, ledgering each first (an
        ``export_cursor`` entry, act ``sealed``). Called once, by the step that made the
        home's export key: after it a row without a MAC stops its destination. A row that
        changed between the ledgering and the sealing stays unsealed (and stops)."""
        sealed = []
        for state in self.cursors.unsealed():
            self.ledger.append(
                ExportCursorEntry(
                    time=iso(datetime.now(UTC)),
                    destination=state.name,
                    act="sealed",
                    ledger=state.ledger,
                    alert=state.alert,
                ).to_json()
            )
            if self.cursors.seal_as_found(state):
                sealed.append(state)
                log.info("export %s: cursor sealed as found at the upgrade", state.name)
        return sealed

    def reset(
        self, name: str, *, ledger: int, alert: int = 0, by: str | None = None
    ) -> CursorState:
        """``custos export reset``: send ``name`` again everything from ledger index
        ``ledger`` and every alert above id ``alert``, ledgering the act (and the row as
        found) before the row is written. Everything below the ledger's current size and up
        to the newest alert is marked in flight, so what is sent again is counted as
        ``redelivered``. Raises :class:`InvalidInput` for a destination not configured, an
        index past the ledger, a negative position, or a reset that would move a cursor
        that verifies forward (that would skip events: only a send moves a cursor forward).
        """
        if name not in self.destinations:
            raise InvalidInput(
                f"export reset: no [[export]] destination named {name!r}",
                hint="custos export status lists them",
            )
        size = self.ledger.size()
        if ledger < 0 or alert < 0:
            raise InvalidInput("export reset: --from and --alerts-from must not be negative")
        if ledger > size:
            raise InvalidInput(f"export reset: --from {ledger} is past the ledger's size ({size})")
        self.cursors.ensure(name)
        found = next(s for s in self.cursors.all() if s.name == name)
        if found.verified and (ledger > found.ledger or alert > found.alert):
            raise InvalidInput(
                f"export reset {name!r}: its cursor verifies and stands at ledger "
                f"{found.ledger}, alert {found.alert}; a reset may only move it back",
            )
        with self.db.session() as session:
            newest = int(session.scalar(select(func.max(AlertRow.id))) or 0)
        self.ledger.append(
            ExportCursorEntry(
                time=iso(datetime.now(UTC)),
                destination=name,
                act="reset",
                ledger=ledger,
                alert=alert,
                found={"ledger": found.ledger, "alert": found.alert, "verified": found.verified},
                by=by,
            ).to_json()
        )
        state = CursorState(
            name,
            ledger,
            alert,
            size if size > ledger else None,
            newest if newest > alert else None,
        )
        self.cursors.reset(state)
        log.warning("export %s: cursor reset to ledger %d, alert %d", name, ledger, alert)
        return state

    def _round(self, config: DestinationConfig) -> RoundResult:
        if not self.cursors.acquire(config.name, self.holder):
            return RoundResult(config.name, held=True)
        destination = self.destinations[config.name]
        sent = redelivered = 0
        try:
            follower = LedgerExport(config, destination, self.cursors, self.holder, self.origin)
        except CursorTampered as exc:
            return self._stopped(config, exc)
        try:
            follow_ledger(self.ledger, [follower], chunk=config.batch)
            sent, redelivered = follower.sent, follower.redelivered
            if "alerts" in config.events:
                more, again = self._alerts(config, destination)
                sent, redelivered = sent + more, redelivered + again
        except CursorTampered as exc:
            result = self._stopped(config, exc)
            return replace(result, sent=follower.sent, redelivered=follower.redelivered)
        except CustosError as exc:
            sent, redelivered = sent + follower.sent, redelivered + follower.redelivered
            destination.close()
            self.cursors.failed(config.name, exc.message)
            log.warning("export %s failed (%s); will retry", config.name, exc.message)
            return RoundResult(config.name, sent, redelivered, exc.message)
        finally:
            self.cursors.release(config.name, self.holder)
        return RoundResult(config.name, sent, redelivered)

    def _stopped(self, config: DestinationConfig, exc: CursorTampered) -> RoundResult:
        """A destination whose cursor does not verify: nothing is sent to it, the failure
        is counted and shown, and the lease given up."""
        self.destinations[config.name].close()
        self.cursors.failed(config.name, exc.message)
        self.cursors.release(config.name, self.holder)
        log.error("export %s stopped: %s", config.name, exc.message)
        return RoundResult(config.name, error=exc.message)

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
            events = []
            for record in records:
                event = from_alert(record, self.origin)
                # Alerts go out in id order, every one: its predecessor is the cursor.
                event["unmapped"]["custos"]["previous_alert_id"] = position or None
                position = record.id
                events.append(event)
            destination.send(events)
            repeats = sum(1 for r in records if r.id <= maybe_sent)
            self.cursors.advance(
                config.name,
                self.holder,
                alert=upto,
                delivered=len(records),
                redelivered=repeats,
            )
            sent, again = sent + len(records), again + repeats

    def queue_depth(self) -> dict[str, int]:
        """Per destination: ledger entries past its cursor plus alerts past its alert
        cursor (what it has not acknowledged yet; entries its filter drops included).
        A destination whose cursor does not verify is left out (its depth is unknown)."""
        size = self.ledger.size()
        depth: dict[str, int] = {}
        cursors = {c.name: c for c in self.cursors.all()}
        with self.db.session() as session:
            for config in self.configs:
                state = cursors.get(config.name, CursorState(config.name))
                if not state.verified:
                    continue  # its positions are a claim: the depth is unknown
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
