"""The ledger: an append-only RFC 9162 Merkle log stored in the custos database.

Appends are *group committed*: concurrent callers queue their entries, the first to take the
write lock commits everything queued in one transaction, and every caller returns only once
its entry is durable. Across processes, writers serialise on the ``ledger_state`` row (its
update is the first statement of every write transaction, on SQLite and PostgreSQL alike), and
the primary keys on entry and node indexes make a fork impossible even if that failed: a
second writer at the same index is rejected, not appended.

Anything that prevents an append raises :class:`LedgerUnavailable`; the access path then
denies (fail closed).

With a :class:`Chain`, each entry that carries chain keys also carries, in the field the chain
names, the index of the previous entry with each of its keys: filled in at sequencing time,
under the write lock, from ``ledger_subject_heads``, which the same transaction updates. A
reader holding some entries of one key can then tell whether any between them are missing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from custos import telemetry
from custos.errors import (
    CustosError,
    IntegrityError,
    InvalidInput,
    LedgerUnavailable,
    NotFound,
    StoreConflict,
    StoreUnavailable,
)
from custos.ledger import tree
from custos.ledger.hashing import Spliced, canonical_json, leaf_hash, node_hash
from custos.ledger.notes import Checkpoint, NoteSigner, NoteVerifier, SignedNote
from custos.store import Database, HotCursor
from custos.store.ledger import (
    LedgerChainHeadRow,
    LedgerCheckpointRow,
    LedgerCosignatureRow,
    LedgerEntryRow,
)

_INSERT_ENTRIES = "INSERT INTO ledger_entries (idx, entry, leaf) VALUES (?, ?, ?)"
_INSERT_NODES = "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)"
_LOCK_STATE = "UPDATE ledger_state SET size = size WHERE id = 1 RETURNING size, frontier"
_SET_STATE = "UPDATE ledger_state SET size = ?, frontier = ? WHERE id = 1"
_ADVANCE_STATE = (
    "UPDATE ledger_state SET size = ?, frontier = ? WHERE id = 1 AND size = ? RETURNING size"
)
_READ_HEADS = "SELECT subject, idx FROM ledger_subject_heads WHERE subject IN "
_WRITE_HEADS = (
    "INSERT INTO ledger_subject_heads (subject, idx) VALUES (?, ?) "
    "ON CONFLICT (subject) DO UPDATE SET idx = excluded.idx"
)
_FETCH_CHUNK = 200
#: Internal nodes are stored every STRIDE levels; the levels between are recomputed from at
#: most 2^(STRIDE-1) stored children when a proof needs them. Writing one row per entry
#: (plus 1/15 of a node row) instead of two keeps appends fast; proofs stay one query.
STRIDE = 4


@dataclass(frozen=True, slots=True)
class LedgerReceipt:
    """Proof of a durable append: the entry's index and leaf hash."""

    index: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """``{"index": i, "size": n, "hashes": [base64, …]}`` (DESIGN.md)."""

    index: int
    size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "hashes": [base64.b64encode(h).decode() for h in self.hashes],
        }


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """``{"old_size": m, "new_size": n, "hashes": [base64, …]}`` (DESIGN.md)."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [base64.b64encode(h).decode() for h in self.hashes],
        }


class Chain(Protocol):
    """Which entries link back to the previous entry sharing a key with them.

    ``field`` names the member the ledger adds to each such entry: an object mapping each of
    the entry's keys to the index of the previous entry with that key, or ``null`` for the
    first one (``{"user-42": 1234}``). ``keys`` says which keys an entry has; it is called
    once per appended entry, before sequencing, and must depend on the entry alone (the
    verifier calls it again on the stored entry). An entry with no keys gets no field.
    """

    @property
    def field(self) -> str:
        """The member of linked entries that holds their links."""
        ...

    def keys(self, entry: Mapping[str, Any]) -> Collection[str]:
        """The chain keys of ``entry`` (empty when it belongs to no chain)."""
        ...


@dataclass(frozen=True, slots=True)
class _Linked:
    """An entry whose links are filled in at sequencing time: its canonical bytes with a
    unique placeholder (a quoted random token) where each key's previous index goes."""

    template: bytes
    keys: tuple[str, ...]
    holes: tuple[bytes, ...]


@dataclass
class _Pending:
    entries: list[bytes | _Linked]
    done: threading.Event = field(default_factory=threading.Event)
    receipts: list[LedgerReceipt] = field(default_factory=list)
    error: BaseException | None = None


def _salted(entry: Mapping[str, Any]) -> bytes:
    if not isinstance(entry, Mapping):
        raise InvalidInput("a ledger entry must be a JSON object")
    body = dict(entry)
    # A fresh random salt per entry: a leaf hash then reveals nothing about the entry to
    # someone who sees only hashes (tiles, proofs), even for guessable entries.
    body.setdefault("salt", binascii.b2a_base64(os.urandom(16), newline=False).decode())
    try:
        return canonical_json(body)
    except ValueError as exc:
        raise InvalidInput(f"ledger entry is not JSON: {exc}") from None


def _linked(entry: Mapping[str, Any], chain: Chain, token: str) -> bytes | _Linked:
    """``entry`` salted and encoded; with chain keys, a template whose links are filled in
    under the write lock (encoding once here, so a bad entry is refused before queuing)."""
    keys = chain.keys(entry) if isinstance(entry, dict) else ()
    if not keys:
        return _salted(entry)
    if chain.field in entry:
        raise InvalidInput(f"ledger entry field {chain.field!r} is the ledger's own (its links)")
    keys = tuple(dict.fromkeys(keys))
    if not all(type(key) is str for key in keys):
        raise InvalidInput("chain keys must be strings")
    # A token (hex) needs no escaping: its JSON form is the token in quotes.
    placeholders = [f"{token}.{n}" for n in range(len(keys))]
    template = _salted({**entry, chain.field: dict(zip(keys, placeholders, strict=True))})
    holes = tuple(f'"{p}"'.encode() for p in placeholders)
    # The token is random per process and never in a caller's entry; were it ever there, the
    # fill would be ambiguous, so refuse rather than link wrongly.
    if any(template.count(hole) != 1 for hole in holes):
        raise InvalidInput("ledger entry holds a value reserved for its links")
    return _Linked(template, keys, holes)


def _spliced(spliced: Spliced, chain: Chain | None, token: str) -> bytes:
    """``spliced`` as stored: its entry salted and encoded, with its text in its member."""
    entry, member = spliced.entry, spliced.member
    if not isinstance(entry, Mapping) or member in entry:
        raise InvalidInput(f"a spliced ledger entry must be an object without {member!r}")
    if chain is not None and (chain.field in entry or chain.keys(entry)):
        raise InvalidInput("a spliced ledger entry cannot carry chain links")
    # The token is random per process (hex: its JSON form is itself in quotes).
    placeholder = f"{token}.spliced"
    template = _salted({**entry, member: placeholder})
    hole = f'"{placeholder}"'.encode()
    if template.count(hole) != 1:
        raise InvalidInput("ledger entry holds a value reserved for its links")
    try:
        text = spliced.text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("ledger entry is not JSON: text that is not UTF-8") from None
    return template.replace(hole, text)


def _fill(entries: list[bytes | _Linked], size: int, heads: dict[str, int]) -> list[bytes]:
    """The entries' bytes, each linked entry naming the previous index of each of its keys
    (``heads``, updated in place as the batch goes on) as if appended at ``size`` onwards."""
    filled: list[bytes] = []
    for offset, item in enumerate(entries):
        if isinstance(item, bytes):
            filled.append(item)
            continue
        raw = item.template
        for key, hole in zip(item.keys, item.holes, strict=True):
            previous = heads.get(key)
            raw = raw.replace(hole, b"null" if previous is None else str(previous).encode())
            heads[key] = size + offset
        filled.append(raw)
    return filled


def _encode_frontier(frontier: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([level]) + digest for level, digest in frontier)


def _decode_frontier(blob: bytes | None, size: int) -> list[tuple[int, bytes]] | None:
    """The stored compact range, if present and shaped as ``size`` requires; else None."""
    if blob is None or len(blob) % 33:
        return None
    found = [(blob[i], bytes(blob[i + 1 : i + 33])) for i in range(0, len(blob), 33)]
    # The perfect subtrees of [0, size) are its set bits, largest first.
    expected = [level for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1]
    return found if [level for level, _ in found] == expected else None


class _ProcessLock:
    """Serialises ledger writers of several processes on one SQLite file without polling.

    SQLite's busy handler sleeps and retries (up to 100 ms a time), which turns contention
    between worker processes into latency; a blocking ``flock`` on a file beside the database
    wakes the next writer the moment the lock is released. PostgreSQL's row lock already
    queues writers, so there this is a no-op.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_database(cls, db: Database) -> _ProcessLock:
        url = db.engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return cls(f"{url.database}.ledger-lock")
        return cls(None)

    def __enter__(self) -> None:
        if self.path is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self.path is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


@dataclass(frozen=True)
class _Growth:
    """The log after appending a batch: its rows to insert, receipts and compact range."""

    size: int
    frontier: list[tuple[int, bytes]]
    entry_rows: list[tuple[int, bytes, bytes]]
    node_rows: list[tuple[int, int, bytes]]
    receipts: list[LedgerReceipt]


def _grow(size: int, frontier: list[tuple[int, bytes]], entries: list[bytes]) -> _Growth:
    """Hash ``entries`` onto the log of ``size`` whose compact range is ``frontier``
    (left unchanged), keeping the node hashes of every STRIDE-th level."""
    frontier = list(frontier)
    entry_rows: list[tuple[int, bytes, bytes]] = []
    node_rows: list[tuple[int, int, bytes]] = []
    receipts = []
    for offset, entry in enumerate(entries):
        index = size + offset
        leaf = leaf_hash(entry)
        entry_rows.append((index, entry, leaf))
        receipts.append(LedgerReceipt(index, leaf))
        frontier.append((0, leaf))
        while len(frontier) > 1 and frontier[-1][0] == frontier[-2][0]:
            level, right = frontier.pop()
            _, left = frontier.pop()
            parent = node_hash(left, right)
            frontier.append((level + 1, parent))
            if (level + 1) % STRIDE == 0:
                node_rows.append((level + 1, index >> (level + 1), parent))
    return _Growth(size + len(entries), frontier, entry_rows, node_rows, receipts)


class Ledger:
    """The custos log. Thread-safe; one instance per process and database."""

    def __init__(
        self,
        db: Database,
        signer: NoteSigner,
        origin: str,
        signed_head: Path | None = None,
        chain: Chain | None = None,
    ) -> None:
        self.db = db
        #: Links entries sharing a key to the previous one (see :class:`Chain`); None: no links.
        self.chain = chain
        self._token = secrets.token_hex(16)
        self.signer = signer
        self.origin = origin
        # The last tree this host signed, kept beside the key and outside the database: the
        # log never signs a tree that does not extend it (see :meth:`checkpoint`).
        self.signed_head = signed_head
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._size: int | None = None
        self._process_lock = _ProcessLock.for_database(db)
        # The compact range of [0, size): (level, hash) of its perfect subtrees, left to right.
        self._frontier: list[tuple[int, bytes]] = []

    # -- appending -----------------------------------------------------------------------

    def append(self, entry: Mapping[str, Any]) -> LedgerReceipt:
        """Append one entry; returns once it is durable. Raises :class:`LedgerUnavailable`,
        and :class:`InvalidInput` (nothing appended) for an entry that is not JSON or that
        sets the chain's field itself."""
        return self._append([self._prepare(entry)])[0]

    def append_many(self, entries: Iterable[Mapping[str, Any] | Spliced]) -> list[LedgerReceipt]:
        """Append entries in order, durably, in one batch (each a mapping, or a
        :class:`Spliced` entry). Raises as :meth:`append` does, and :class:`InvalidInput`
        (nothing appended) for a spliced entry that also holds its member, or has chain keys,
        or whose text is not UTF-8 encodable."""
        prepared = [self._prepare(e) for e in entries]
        return self._append(prepared) if prepared else []

    def _prepare(self, entry: Mapping[str, Any] | Spliced) -> bytes | _Linked:
        if isinstance(entry, Spliced):
            return _spliced(entry, self.chain, self._token)
        if self.chain is None:
            return _salted(entry)
        return _linked(entry, self.chain, self._token)

    def _append(self, entries: list[bytes | _Linked]) -> list[LedgerReceipt]:
        with telemetry.span("custos.ledger.append", **{"custos.entries": len(entries)}) as current:
            receipts = self._append_durably(entries)
            if receipts:
                telemetry.annotate(current, **{"custos.ledger.size": receipts[-1].index + 1})
            return receipts

    def _append_durably(self, entries: list[bytes | _Linked]) -> list[LedgerReceipt]:
        mine = _Pending(entries)
        with self._queue_lock:
            self._queue.append(mine)
        while not mine.done.is_set():
            with self._write_lock:
                if mine.done.is_set():
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        if mine.error is not None:
            raise mine.error
        return mine.receipts

    def _commit_batch(self, batch: list[_Pending]) -> None:
        flat = [entry for pending in batch for entry in pending.entries]
        try:
            receipts = self._commit(flat)
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            error = exc if isinstance(exc, LedgerUnavailable) else _unavailable(exc)
            for pending in batch:
                pending.error = error
                pending.done.set()
            return
        offset = 0
        for pending in batch:
            pending.receipts = receipts[offset : offset + len(pending.entries)]
            offset += len(pending.entries)
            pending.done.set()

    def _commit(self, items: list[bytes | _Linked]) -> list[LedgerReceipt]:
        # Driver SQL: this runs once per durable batch on the access path, where
        # SQLAlchemy's per-statement work used to cost as much as the fsync.
        keys = {key for item in items if isinstance(item, _Linked) for key in item.keys}
        plain = [item for item in items if isinstance(item, bytes)]
        with self._process_lock, self.db.cursor() as cursor:
            grown: _Growth | None = None
            if not keys and self._size is not None:
                # Usually this process wrote the last batch: claim the next indexes by moving
                # the size on from the one it knows. That takes the log's write lock, and
                # matches no row when another process appended since. (Linked entries wait
                # for the lock: their bytes depend on what is stored under it.)
                grown = _grow(self._size, self._frontier, plain)
                if not cursor.execute(
                    _ADVANCE_STATE, (grown.size, _encode_frontier(grown.frontier), self._size)
                ):
                    grown = None
            if grown is None:
                # Take the write lock and read the size under it, in one statement: no other
                # writer can interleave.
                ((size, stored),) = cursor.execute(_LOCK_STATE)
                if size != self._size:
                    frontier_of = _decode_frontier(stored, size)
                    if frontier_of is None:
                        self._load_frontier(cursor, size)
                    else:
                        self._frontier, self._size = frontier_of, size
                heads = _read_heads(cursor, keys) if keys else {}
                entries = _fill(items, size, heads) if keys else plain
                grown = _grow(size, self._frontier, entries)
                cursor.execute(_SET_STATE, (grown.size, _encode_frontier(grown.frontier)))
                if keys:
                    # In the same transaction as the entries: the heads never run ahead of
                    # or behind the log.
                    cursor.executemany(_WRITE_HEADS, [(key, heads[key]) for key in sorted(keys)])
            cursor.executemany(_INSERT_ENTRIES, grown.entry_rows)
            if grown.node_rows:
                cursor.executemany(_INSERT_NODES, grown.node_rows)
        self._size = grown.size
        self._frontier = grown.frontier
        return grown.receipts

    def chain_head(self, key: str, size: int | None = None) -> int | None:
        """The index of the newest entry with chain ``key`` in the tree of ``size`` (default:
        now), or None when it has none: the stored head, followed back through the links of
        entries at or beyond ``size``. Raises :class:`IntegrityError` when a link to follow
        is not there, and :class:`StoreUnavailable`."""
        if self.chain is None:
            return None
        size = self.size() if size is None else self._checked_size(size)
        with _reading(self.db) as conn:
            head = conn.execute(
                select(LedgerChainHeadRow.idx).where(LedgerChainHeadRow.key == key)
            ).scalar_one_or_none()
        while head is not None and head >= size:
            try:
                links = json.loads(self.entry(int(head))).get(self.chain.field)
                head = links[key]
            except (ValueError, AttributeError, KeyError, TypeError, NotFound):
                raise IntegrityError(
                    f"entry {head} should link to the previous entry with its key and does not"
                ) from None
            if head is not None and (type(head) is not int or head < 0):
                raise IntegrityError(f"a link to a previous entry is not an index ({head!r})")
        return None if head is None else int(head)

    def _load_frontier(self, cursor: HotCursor, size: int) -> None:
        nodes = tree.range_nodes(0, size)
        found = _fetch_nodes(cursor, nodes)
        self._frontier = [(level, found[(level, index)]) for level, index in nodes]
        self._size = size

    # -- reading ------------------------------------------------------------------------

    def size(self) -> int:
        """The number of entries. Raises :class:`StoreUnavailable`."""
        with _reading(self.db) as conn:
            return int(
                conn.execute(text("SELECT size FROM ledger_state WHERE id = 1")).scalar_one()
            )

    def entry(self, index: int) -> bytes:
        """The exact stored bytes of entry ``index``. Raises :class:`NotFound`."""
        if not 0 <= index < 2**63:
            raise NotFound(f"no ledger entry at index {index}")
        with _reading(self.db) as conn:
            found = conn.execute(
                select(LedgerEntryRow.entry).where(LedgerEntryRow.idx == index)
            ).scalar_one_or_none()
        if found is None:
            raise NotFound(f"no ledger entry at index {index}")
        return bytes(found)

    def entries(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Entries with ``start <= index < end``, in order."""
        with _reading(self.db) as conn:
            rows = conn.execute(
                select(LedgerEntryRow.idx, LedgerEntryRow.entry)
                .where(LedgerEntryRow.idx >= start, LedgerEntryRow.idx < end)
                .order_by(LedgerEntryRow.idx)
            ).all()
        return [(int(i), bytes(e)) for i, e in rows]

    def batches(
        self, start: int, chunk: int = 5000
    ) -> Iterator[tuple[int, int, list[tuple[int, bytes]]]]:
        """The entries from ``start`` up to the current size, ``chunk`` at a time, as
        ``(start, end, entries)``: how followers (indexes, feeds) catch up with the log."""
        size = self.size()
        while start < size:
            end = min(start + chunk, size)
            yield start, end, self.entries(start, end)
            start = end

    def nodes(self, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored node hashes by ``(level, index)``. Raises :class:`NotFound` if one is missing."""
        with self.db.cursor() as cursor:
            return _fetch_nodes(cursor, wanted)

    def root(self, size: int | None = None) -> bytes:
        """The tree hash at ``size`` (default: now)."""
        size = self.size() if size is None else self._checked_size(size)
        return tree.root(size, self.nodes)

    def _checked_size(self, size: int) -> int:
        current = self.size()
        if not 0 <= size <= current:
            raise NotFound(f"the log has {current} entries; size {size} does not exist")
        return size

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        """Inclusion proof of entry ``index`` in the tree of ``size`` (default: now)."""
        size = self.size() if size is None else self._checked_size(size)
        if not 0 <= index < size:
            raise NotFound(f"no entry {index} in a tree of size {size}")
        return InclusionProof(index, size, tuple(tree.inclusion_proof(index, size, self.nodes)))

    def consistency_proof(self, old: int, new: int | None = None) -> ConsistencyProof:
        """Consistency proof from size ``old`` to ``new`` (default: now)."""
        new = self.size() if new is None else self._checked_size(new)
        if not 0 <= old <= new:
            raise NotFound(f"no consistency proof from size {old} to size {new}")
        return ConsistencyProof(old, new, tuple(tree.consistency_proof(old, new, self.nodes)))

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign (and keep) a checkpoint of the current tree; return the signed note.

        Raises :class:`IntegrityError`, signing nothing, when the stored tree does not extend
        the last one this host signed (:attr:`signed_head`): someone with the database but
        not the key rewrote or truncated history, and signing it would put the log's own
        signature on a second version of it.
        """
        with self._signing():
            return self._sign_checked(self.size())

    def checkpoint_if_due(self, older_than: timedelta) -> str | None:
        """Sign a checkpoint when the log has grown beyond the newest one and that one is at
        least ``older_than`` old (or there is none); return the new note, else None.

        What the service's background signer calls on its timer. The test is made again under
        the signing lock, so several workers on one host that find it due together sign once.
        Raises :class:`IntegrityError` like :meth:`checkpoint`, and :class:`StoreUnavailable`.
        """
        if not self._checkpoint_due(older_than):  # the usual answer, without the lock
            return None
        with self._signing():
            if not self._checkpoint_due(older_than):
                return None
            return self._sign_checked(self.size())

    def _checkpoint_due(self, older_than: timedelta) -> bool:
        size = self.size()
        with _reading(self.db) as conn:
            latest = conn.execute(
                select(LedgerCheckpointRow.size, LedgerCheckpointRow.created)
                .order_by(LedgerCheckpointRow.size.desc())
                .limit(1)
            ).first()
        if latest is None:
            return size > 0
        return size > int(latest.size) and (
            datetime.now(UTC) - _aware(latest.created) >= older_than
        )

    @contextlib.contextmanager
    def _signing(self) -> Iterator[None]:
        """One signer at a time across this host's processes (a lock beside the head)."""
        if self.signed_head is None:
            yield
            return
        lock_path = self.signed_head.with_name(self.signed_head.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _sign_checked(self, size: int) -> str:
        """Sign the tree of ``size`` if it extends the last one this host signed (under
        :meth:`_signing`), and record it as the last signed."""
        if self.signed_head is None:
            return self._sign_current(size)
        last = self.last_signed()
        if last is not None:
            old_size, old_root = last
            if size < old_size:
                raise IntegrityError(
                    f"the stored log has {size} entries but this host signed a checkpoint "
                    f"at size {old_size}: it was truncated; nothing was signed"
                )
            proof = self.consistency_proof(old_size, size).hashes
            if not tree.verify_consistency(old_size, size, proof, old_root, self.root(size)):
                raise IntegrityError(
                    f"the stored log does not extend the checkpoint this host signed at "
                    f"size {old_size}: history was rewritten; nothing was signed"
                )
        note = self._sign_current(size)
        _write_head(self.signed_head, size, Checkpoint.parse_text(_body(note)).root)
        return note

    def last_signed(self) -> tuple[int, bytes] | None:
        """(size, root) of the last tree this host signed, or None. Raises
        :class:`IntegrityError` when the record is unreadable."""
        if self.signed_head is None or not self.signed_head.exists():
            return None
        try:
            size_text, root_text = self.signed_head.read_text(encoding="ascii").split()
            root = base64.b64decode(root_text, validate=True)
            if not size_text.isdigit() or len(root) != 32:
                raise ValueError(size_text)
        except (OSError, ValueError, UnicodeDecodeError, binascii.Error):
            raise IntegrityError(
                f"{self.signed_head}: the record of the last signed checkpoint is unreadable"
            ) from None
        return int(size_text), root

    def _sign_current(self, size: int | None = None) -> str:
        size = self.size() if size is None else size
        with _reading(self.db) as conn:
            existing = conn.execute(
                select(LedgerCheckpointRow.note).where(LedgerCheckpointRow.size == size)
            ).scalar_one_or_none()
        if existing is not None:
            return str(existing)
        body = Checkpoint(self.origin, size, self.root(size)).text()
        note = f"{body}\n{self.signer.sign_line(body)}"
        try:
            with self.db.session() as session:
                session.add(
                    LedgerCheckpointRow(
                        size=size,
                        root=self.root(size),
                        note=note,
                        created=datetime.now(UTC),
                    )
                )
        except StoreConflict as exc:
            if isinstance(exc.__cause__, SAIntegrityError):  # signed concurrently: same tree
                return self._sign_current(size)
            raise
        return note

    def current_checkpoint(self, min_interval: timedelta = timedelta(seconds=1)) -> str:
        """The newest checkpoint if it covers the log or is younger than ``min_interval``,
        else a newly signed one: what witnesses and monitors are served."""
        with _reading(self.db) as conn:
            latest = conn.execute(
                select(
                    LedgerCheckpointRow.size, LedgerCheckpointRow.note, LedgerCheckpointRow.created
                )
                .order_by(LedgerCheckpointRow.size.desc())
                .limit(1)
            ).first()
        if latest is not None and (
            int(latest.size) >= self.size()
            or datetime.now(UTC) - _aware(latest.created) < min_interval
        ):
            return str(latest.note)
        return self.checkpoint()

    def latest_checkpoint_time(self) -> datetime | None:
        """When the newest checkpoint was signed, or None before the first."""
        with _reading(self.db) as conn:
            found = conn.execute(select(func.max(LedgerCheckpointRow.created))).scalar()
        return None if found is None else _aware(found)

    def latest_cosignature_time(self) -> datetime | None:
        """When a witness's cosignature was last kept, or None when none ever was."""
        with _reading(self.db) as conn:
            found = conn.execute(select(func.max(LedgerCosignatureRow.created))).scalar()
        return None if found is None else _aware(found)

    def latest_checkpoint(self) -> str | None:
        """The newest saved checkpoint note, if any."""
        with _reading(self.db) as conn:
            found = conn.execute(
                select(LedgerCheckpointRow.note).order_by(LedgerCheckpointRow.size.desc()).limit(1)
            ).scalar_one_or_none()
        return None if found is None else str(found)

    def add_cosignature(self, note: str, witnesses: Iterable[NoteVerifier]) -> list[str]:
        """Keep a witness's cosigned copy of one of this log's checkpoints.

        ``note`` must be a checkpoint this log signed (same text as a saved one) carrying a
        valid cosignature by one of ``witnesses``; returns the names of the witnesses whose
        cosignatures were kept. Raises :class:`InvalidInput` for a malformed note or one that
        is not ours or carries no valid cosignature by a known witness.
        """
        signed = SignedNote.parse(note)
        body = Checkpoint.parse_text(signed.text)
        with _reading(self.db) as conn:
            stored = conn.execute(
                select(LedgerCheckpointRow.note).where(LedgerCheckpointRow.size == body.size)
            ).scalar_one_or_none()
        if stored is None or SignedNote.parse(str(stored)).text != signed.text:
            raise InvalidInput(f"not a checkpoint of this log (size {body.size})")
        kept = [w.name for w in witnesses if signed.verify(w)]
        if not kept:
            raise InvalidInput("no valid cosignature by a configured witness")
        try:
            with self.db.engine.begin() as conn:
                known = set(
                    conn.execute(
                        select(LedgerCosignatureRow.witness).where(
                            LedgerCosignatureRow.size == body.size
                        )
                    ).scalars()
                )
                for name in kept:
                    if name not in known:
                        conn.execute(
                            insert(LedgerCosignatureRow).values(
                                size=body.size,
                                witness=name,
                                note=note,
                                created=datetime.now(UTC),
                            )
                        )
        except DBAPIError as exc:
            raise _unavailable(exc) from None
        return kept

    def cosignatures(self) -> dict[int, list[tuple[str, str]]]:
        """Witness cosignatures kept, by checkpoint size: (witness, cosigned note)."""
        with _reading(self.db) as conn:
            rows = conn.execute(
                select(
                    LedgerCosignatureRow.size,
                    LedgerCosignatureRow.witness,
                    LedgerCosignatureRow.note,
                ).order_by(LedgerCosignatureRow.size, LedgerCosignatureRow.id)
            ).all()
        found: dict[int, list[tuple[str, str]]] = {}
        for size, witness, text_ in rows:
            found.setdefault(int(size), []).append((str(witness), str(text_)))
        return found

    def checkpoints(self) -> list[tuple[int, bytes, str]]:
        """Every saved checkpoint: (size, root, note), oldest first."""
        with _reading(self.db) as conn:
            rows = conn.execute(
                select(
                    LedgerCheckpointRow.size, LedgerCheckpointRow.root, LedgerCheckpointRow.note
                ).order_by(LedgerCheckpointRow.size)
            ).all()
        return [(int(s), bytes(r), str(n)) for s, r, n in rows]


def _body(note: str) -> str:
    return note.split("\n\n", 1)[0] + "\n"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _write_head(path: Path, size: int, root: bytes) -> None:
    """Replace the signed-head record atomically and durably (write, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="ascii") as out:
        out.write(f"{size} {base64.b64encode(root).decode()}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read_heads(cursor: HotCursor, keys: set[str]) -> dict[str, int]:
    """The stored head (newest index) of each of ``keys`` that has one."""
    wanted = sorted(keys)
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _FETCH_CHUNK):
        chunk = wanted[start : start + _FETCH_CHUNK]
        rows = cursor.execute(
            f"{_READ_HEADS}({', '.join(['?'] * len(chunk))})",
            chunk,
        )
        found.update((str(key), int(idx)) for key, idx in rows)
    return found


def _fetch_stored(cursor: HotCursor, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Stored hashes: level 0 from the entries' leaf column, others from the node table."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = [index for level, index in keys if level == 0]
    nodes = [key for key in keys if key[0] != 0]
    for start in range(0, len(leaves), _FETCH_CHUNK):
        chunk = leaves[start : start + _FETCH_CHUNK]
        rows = cursor.execute(
            "SELECT idx, leaf FROM ledger_entries WHERE idx IN "  # noqa: S608 - markers only
            f"({', '.join(['?'] * len(chunk))})",
            chunk,
        )
        found.update(((0, int(ix)), bytes(h)) for ix, h in rows)
    # (level = ? AND idx = ?) terms: both SQLite and PostgreSQL serve each from the primary
    # key, where a row-value IN list would scan the table on SQLite.
    for start in range(0, len(nodes), _FETCH_CHUNK):
        pairs = nodes[start : start + _FETCH_CHUNK]
        where = " OR ".join(["(level = ? AND idx = ?)"] * len(pairs))
        rows = cursor.execute(
            f"SELECT level, idx, hash FROM ledger_nodes WHERE {where}",  # noqa: S608 - markers only
            [value for key in pairs for value in key],
        )
        found.update(((int(lv), int(ix)), bytes(h)) for lv, ix, h in rows)
    return found


def _fetch_nodes(
    cursor: HotCursor, wanted: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """Hashes of complete nodes by (level, index), from stored nodes in one or two queries."""
    plans: dict[tuple[int, int], tuple[int, range]] = {}
    needed: set[tuple[int, int]] = set()
    for level, index in set(wanted):
        base = level - level % STRIDE
        span = level - base
        children = range(index << span, (index + 1) << span)
        plans[(level, index)] = (base, children)
        needed.update((base, child) for child in children)
    stored = _fetch_stored(cursor, sorted(needed))
    missing = sorted(key for key in needed if key not in stored)
    if missing:
        level, index = missing[0]
        raise NotFound(f"ledger node (level {level}, index {index}) is missing from the store")
    found: dict[tuple[int, int], bytes] = {}
    for key, (base, children) in plans.items():
        hashes = [stored[(base, child)] for child in children]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        found[key] = hashes[0]
    return found


class _reading:
    """A read connection whose driver errors become :class:`StoreUnavailable`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> Connection:
        try:
            self.conn = self.db.engine.connect()
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable("the ledger cannot be read: database unavailable") from exc
        return self.conn

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.conn.close()
        if isinstance(exc, (OperationalError, DBAPIError)):
            raise StoreUnavailable("the ledger cannot be read: database unavailable") from exc


def _unavailable(exc: BaseException) -> LedgerUnavailable:
    reason = type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is not None:
        reason = str(orig).splitlines()[0][:160]
    elif isinstance(exc, CustosError):  # already described, without SQL or values
        reason = str(exc).splitlines()[0][:160]
    error = LedgerUnavailable(f"the ledger could not record the entry ({reason}); access denied")
    error.__cause__ = exc
    return error
