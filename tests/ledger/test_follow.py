"""The one driver of ledger followers: each follower gets every index once, in order, from its
own position, and a follower that persists picks up where it stopped."""

from __future__ import annotations

from custos.access import Custos
from custos.ledger.entries import BrokenEntry, Entry, ShredEntry, UnknownEntry
from custos.ledger.follow import Follower, follow_ledger


class Recorder:
    """A follower whose "durable state" is a list, persisted only on ``persist``."""

    def __init__(self, start: int = 0) -> None:
        self.saved: list[tuple[int, str]] = []
        self.pending: list[tuple[int, str]] = []
        self.at = start
        self.persists: list[int] = []

    def position(self) -> int:
        return self.at

    def follow(self, index: int, entry: Entry) -> None:
        self.pending.append((index, entry.type))

    def persist(self, end: int) -> None:
        self.saved += self.pending
        self.pending = []
        self.at = end
        self.persists.append(end)


def test_followers_get_each_index_once_in_order_from_their_position(system: Custos) -> None:
    system.ledger.append_many([{"type": "test", "n": n} for n in range(23)])
    size = system.ledger.size()
    behind, ahead = Recorder(), Recorder(start=size - 5)
    assert isinstance(behind, Follower)
    read = follow_ledger(system.ledger, [behind, ahead], chunk=4)
    assert read == size
    assert [i for i, _ in behind.saved] == list(range(size))
    assert [i for i, _ in ahead.saved] == list(range(size - 5, size))
    assert behind.persists[-1] == ahead.persists[-1] == size
    # Caught up: nothing more to read; then only what is new.
    assert follow_ledger(system.ledger, [behind, ahead]) == 0
    system.ledger.append({"type": "shred", "time": "2026-01-05T10:00:00Z", "keys": 1})
    follow_ledger(system.ledger, [behind, ahead])
    assert behind.saved[-1] == ahead.saved[-1] == (size, "shred")
    assert [i for i, _ in behind.saved] == list(range(size + 1))


def test_a_follower_stops_at_end_and_sees_what_does_not_parse(system: Custos) -> None:
    start = system.ledger.size()
    system.ledger.append_many(
        [
            {"type": "shred", "time": "2026-01-05T10:00:00Z", "keys": 2},
            {"type": "shred", "time": "2026-01-05T10:00:00Z"},  # no keys: malformed
            {"type": "something newer"},
        ]
    )
    seen: list[tuple[int, Entry]] = []

    class Memory:
        def position(self) -> int:
            return start

        def follow(self, index: int, entry: Entry) -> None:
            seen.append((index, entry))

        def persist(self, end: int) -> None:
            pass

    follow_ledger(system.ledger, [Memory()], end=start + 3)
    kinds = [type(e) for _, e in seen]
    assert kinds == [ShredEntry, BrokenEntry, UnknownEntry]
    assert isinstance(seen[1][1], BrokenEntry)
    assert "'keys'" in seen[1][1].problem
    seen.clear()
    follow_ledger(system.ledger, [Memory()], end=start + 1)
    assert [i for i, _ in seen] == [start]
