"""The detection event feed: custos's own decisions and releases, copied from the ledger into
the access events that detection reads. A :class:`~custos.ledger.follow.Follower`.

Reading the ledger, not hooking the hot path, keeps decisions fast and means detection sees
exactly what was logged. The events are the entries as stored (without their salt, a ledger
detail meaningless as an event field), so the feed's format is the entries' own.
"""

from __future__ import annotations

from typing import Any

from custos.detect import EventStore
from custos.ledger.entries import BrokenEntry, DecisionEntry, Entry, ReleaseEntry
from custos.store import Database
from custos.store.events import LedgerFeedRow

_FED = ("decision", "release")


class EventFeed:
    """Feeds decisions and releases into ``events``; its position is ``ledger_feed``'s row.

    Persisting is idempotent: events are keyed by their ids (one already stored is
    skipped), and the position only moves forward. Events and position are written in two
    transactions; a crash between them feeds the same entries again, which changes nothing.
    """

    def __init__(self, db: Database, events: EventStore) -> None:
        self.db = db
        self.events = events
        self._batch: list[dict[str, Any]] = []

    def position(self) -> int:
        """The next ledger index to copy (``ledger_feed``'s position, 0 before any)."""
        with self.db.session() as session:
            row = session.get(LedgerFeedRow, 1)
            return row.position if row is not None else 0

    def follow(self, index: int, entry: Entry) -> None:
        """Keep a decision or release about a subject, as its event."""
        match entry:
            case DecisionEntry() | ReleaseEntry():
                event = entry.to_json()
            case BrokenEntry(raw=dict(raw)) if raw.get("type") in _FED and "subject" in raw:
                # Kept as before this feed parsed entries: the event store says what is wrong.
                event = dict(raw)
            case _:
                return
        event.pop("salt", None)
        self._batch.append(event)

    def persist(self, end: int) -> None:
        """Store the kept events, then move the position to ``end``. Raises
        :class:`ValidationFailed` (nothing stored, position unmoved) and
        :class:`StoreUnavailable`."""
        batch, self._batch = self._batch, []
        if batch:
            self.events.append(batch, from_ledger=True)
        with self.db.session() as session:
            row = session.get(LedgerFeedRow, 1)
            if row is None:
                session.add(LedgerFeedRow(id=1, position=end))
            else:
                row.position = max(row.position, end)
