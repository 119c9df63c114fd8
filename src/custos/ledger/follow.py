"""Followers: everything that reads the ledger in index order to keep state derived from it.

The event feed (decisions and releases copied into the access events detection reads), the
subject index (which entries are about which subject, for transparency reports) and the
authority projection (the facts the ledger vouches for, rebuilt by ``custos log verify``)
are all the same shape: a fold over the log. :class:`Follower` is that shape's contract and
:func:`follow_ledger` the one loop that drives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from custos.ledger.entries import Entry, read
from custos.ledger.log import Ledger

#: Entries read per round trip to the database (and per :meth:`Follower.persist`).
CHUNK = 5000


@runtime_checkable
class Follower(Protocol):
    """Consumes ledger entries in index order, keeping state derived from them.

    Contract:

    - :meth:`position` is the index of the next entry the follower needs: every entry
      before it has been taken in (and, for a follower with durable state, persisted).
      It is asked once at the start of each :func:`follow_ledger` run and must not go
      backwards.
    - :meth:`follow` is called exactly once per index from ``position()`` on, in strictly
      increasing order with no gaps, with the entry parsed (a
      :class:`~custos.ledger.entries.BrokenEntry` for stored bytes that do not parse, so
      the follower can name them; never skipped). It must not assume the entry is of a
      type it knows (:class:`~custos.ledger.entries.UnknownEntry`) and must not raise for
      an entry it cannot use: what is wrong with an entry is a finding, not a stop.
    - :meth:`persist` is called with ``end`` after :meth:`follow` has taken every index
      below ``end`` (at the end of each chunk and of the run). A follower with durable
      state writes what it took in and sets its position to ``end`` **in the same
      transaction**, so that a crash leaves state and position agreeing; it may then be
      restarted and will be fed from that position again. A follower whose state lives
      in memory only advances its position.
    - Idempotence: two runs over the same range (two processes catching up at once, or a
      retry after a failed persist) must leave the same state as one: persist replaces
      what a range derives rather than adding to it, and never moves the position back.

    A follower's persisted format is its own; the driver knows nothing of it.
    """

    def position(self) -> int:
        """The index of the next entry this follower needs."""
        ...

    def follow(self, index: int, entry: Entry) -> None:
        """Take in the entry at ``index`` (called once per index, in order)."""
        ...

    def persist(self, end: int) -> None:
        """Every entry below ``end`` has been followed: make that durable, if at all."""
        ...


def follow_ledger(
    ledger: Ledger,
    followers: Sequence[Follower],
    *,
    end: int | None = None,
    chunk: int = CHUNK,
) -> int:
    """Feed ``followers`` every entry from the lowest of their positions up to ``end``
    (default: the ledger's size when called), each entry once per follower that needs it,
    parsing each entry once for all of them. Returns how many entries were read.

    Raises :class:`StoreUnavailable` when the ledger cannot be read, and whatever a
    follower's :meth:`~Follower.persist` raises (the followers already persisted keep
    their position; the rest are fed that chunk again next time).
    """
    if not followers:
        return 0
    positions = [f.position() for f in followers]
    start = min(positions)
    stop = ledger.size() if end is None else min(end, ledger.size())
    read_count = 0
    while start < stop:
        upto = min(start + chunk, stop)
        batch = [(index, read(raw)) for index, raw in ledger.entries(start, upto)]
        for at, follower in enumerate(followers):
            if positions[at] >= upto:
                continue
            for index, entry in batch:
                if index >= positions[at]:
                    follower.follow(index, entry)
            follower.persist(upto)
            positions[at] = upto
        read_count += upto - start
        start = upto
    return read_count


__all__ = ["CHUNK", "Follower", "follow_ledger"]
