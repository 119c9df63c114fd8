"""Checking a row against the ledger entry that set it, and writing the entries that do.

Why this holds against a database administrator without keys: a row is honoured only when
its facts equal, field for field, the facts the ledger entry it names (``auth_idx``) set for
that very kind and id. Editing a fact, inserting a row, copying a row to another id or
pointing a row at another entry all fail that comparison. Rewriting the ledger entry to match
changes its leaf, which ``custos log verify`` and the signer (which refuses a tree
inconsistent with the last one it signed) catch. Putting back an older genuine row (a grant
before its revocation, a subject before its flag) passes this check; each decision names the
entries it used, and ``custos log verify`` names any decision that used a superseded one (see
:mod:`custos.authority.projection`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from custos.authority.entries import BATCH, AuthorityEntry, EncodedFacts, batches, facts_set
from custos.errors import AuthorityMismatch, NotFound, shown_id
from custos.ledger.entries import MalformedEntry, parse_bytes
from custos.ledger.hashing import Spliced

#: The check on use, as the stores take it: ``vouch(kind, id, auth_idx, facts)`` returns, or
#: raises :class:`AuthorityMismatch` (:meth:`Voucher.check`).
Vouch = Callable[[str, str, "int | None", Mapping[str, Any]], None]

#: Ledgering before writing, as the stores take it: ``record(kind, facts, source, by)``
#: returns the ledger index that set each fact, in order, or raises LedgerUnavailable
#: (:meth:`AuthorityWriter.record`). ``facts``: mappings, or rows already encoded.
Record = Callable[
    [str, "Sequence[Mapping[str, Any]] | EncodedFacts", str, "Mapping[str, Any] | None"],
    list[int],
]


class EntryReader(Protocol):
    """Reads stored ledger entries (the :class:`custos.ledger.Ledger` is one).

    - ``entry(index)`` returns the exact bytes of the entry at ``index``, or raises a
      :class:`custos.errors.CustosError` when there is none.
    """

    def entry(self, index: int) -> bytes: ...


class EntryWriter(Protocol):
    """Appends entries durably (the :class:`custos.ledger.Ledger` is one).

    - ``append_many(entries)`` returns, in order, one receipt per entry with its ``index``,
      once all are durable; raises :class:`custos.errors.LedgerUnavailable` otherwise.
    """

    def append_many(self, entries: Iterable[Mapping[str, Any] | Spliced]) -> Sequence[Any]: ...


class Voucher:
    """Checks rows against their ledger entries; remembers the facts of recent entries.

    The cache holds the facts of up to ``cache_entries`` entries (each at most
    :data:`custos.authority.entries.BATCH` rows): ledger entries never change, so a cached
    entry never goes stale, and a process checks a row against the ledger once per load.
    """

    def __init__(self, ledger: EntryReader, *, cache_entries: int = 256) -> None:
        self.ledger = ledger
        self.cache_entries = cache_entries
        self._cache: OrderedDict[int, dict[tuple[str, str], Mapping[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def _facts(self, index: int) -> dict[tuple[str, str], Mapping[str, Any]]:
        with self._lock:
            found = self._cache.get(index)
            if found is not None:
                self._cache.move_to_end(index)
                return found
        try:
            found = facts_set(parse_bytes(self.ledger.entry(index)))
        except (ValueError, MalformedEntry):
            found = {}
        with self._lock:
            self._cache[index] = found
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return found

    def check(self, kind: str, key: str, index: int | None, facts: Mapping[str, Any]) -> None:
        """Return when ledger entry ``index`` set exactly ``facts`` for ``kind`` ``key``.

        Every field of ``facts`` must equal the entry's (an entry may say more, such as a
        grant entry's reason). Raises :class:`AuthorityMismatch` naming the kind and id (never
        the values) when the row names no entry, an entry that does not exist or sets nothing
        for it, or other facts; :class:`StoreUnavailable` when the ledger cannot be read.
        """
        shown = f"{kind} {shown_id(key)}"
        if index is None:
            raise _mismatch(kind, key, f"{shown} was not set through custos (no ledger entry)")
        try:
            stated = self._facts(int(index)).get((kind, key))
        except NotFound:
            # No such entry. A database that cannot be read is not a mismatch: its
            # StoreUnavailable goes on up, and nothing is decided either way.
            stated = None
        if stated is None:
            raise _mismatch(kind, key, f"{shown} names ledger entry {index}, which does not set it")
        if any(stated.get(field, _ABSENT) != value for field, value in facts.items()):
            raise _mismatch(kind, key, f"{shown} differs from what ledger entry {index} set for it")


_ABSENT = object()


def _mismatch(kind: str, key: str, message: str) -> AuthorityMismatch:
    return AuthorityMismatch(
        f"authority-mismatch: {message}",
        kind=kind,
        key=key,
        hint="the row was changed outside custos; nothing is decided on it. "
        "`custos log verify` names every such row",
    )


class AuthorityWriter:
    """Writes ``authority`` entries, durably, before the rows they set."""

    def __init__(self, ledger: EntryWriter) -> None:
        self.ledger = ledger

    def record(
        self,
        kind: str,
        facts: Sequence[Mapping[str, Any]] | EncodedFacts,
        source: str,
        by: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Append the entries setting ``facts`` (in batches) and return, per fact in order,
        the index of the entry that set it. ``facts`` may come encoded
        (:class:`EncodedFacts`): the entries are then spliced from their text, the same
        bytes but for the salt. Raises :class:`LedgerUnavailable`: then nothing may be
        written."""
        if not len(facts):
            return []
        if isinstance(facts, EncodedFacts):
            sizes, entries = self._spliced(kind, facts.rows, source, by)
        else:
            made = batches(kind, facts, source, by)
            sizes = [len(e.facts) for e in made]
            entries = [e.to_json() for e in made]
        receipts = self.ledger.append_many(entries)
        indexes: list[int] = []
        for size, receipt in zip(sizes, receipts, strict=True):
            indexes.extend([int(receipt.index)] * size)
        return indexes

    @staticmethod
    def _spliced(
        kind: str, rows: Sequence[str], source: str, by: Mapping[str, Any] | None
    ) -> tuple[list[int], list[Mapping[str, Any] | Spliced]]:
        # Each entry is the shape AuthorityEntry gives, its "set" spliced from the rows.
        envelope = AuthorityEntry(kind=kind, facts=(), source=source, by=by).to_json()
        member = "set"
        del envelope[member]
        sizes: list[int] = []
        entries: list[Mapping[str, Any] | Spliced] = []
        for at in range(0, len(rows), BATCH):
            part = rows[at : at + BATCH]
            sizes.append(len(part))
            entries.append(Spliced(envelope, member, "[" + ",".join(part) + "]"))
        return sizes, entries


__all__ = [
    "AuthorityEntry",
    "AuthorityWriter",
    "EntryReader",
    "EntryWriter",
    "Record",
    "Vouch",
    "Voucher",
]
