"""``custos log verify``: recompute the whole log from its stored entries, fsck-style.

Independent of how the log was written: it streams entries in index order, recomputes every
leaf and internal node, compares each with what is stored, checks the recorded size, and
recomputes the root at every saved checkpoint and checks its signature. It reports the first
index at which anything disagrees: an altered, deleted, reordered or inserted row.

With a chain (:class:`~custos.ledger.log.Chain`), it also recomputes every entry's links to
the previous entry with each of its keys and compares them with the links stored in the
entry, and the heads table with the newest entry of each key: a link that skips an entry
(written from a tampered heads table) is named by its index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select, text

from custos.errors import IntegrityError, InvalidInput
from custos.ledger.hashing import EMPTY_ROOT, leaf_hash, node_hash
from custos.ledger.log import STRIDE, Chain, Ledger, _decode_frontier
from custos.ledger.notes import Checkpoint, NoteVerifier, SignedNote
from custos.store.ledger import LedgerChainHeadRow, LedgerEntryRow, LedgerNodeRow

_CHUNK = 20_000


@dataclass
class VerifyReport:
    """The outcome: ``ok``, the first bad index (if any) and what was wrong."""

    size: int
    checked_entries: int = 0
    checked_checkpoints: int = 0
    first_bad_index: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, index: int | None, problem: str) -> None:
        if index is not None and (self.first_bad_index is None or index < self.first_bad_index):
            self.first_bad_index = index
        self.problems.append(problem)


def _stored_nodes(
    conn: Connection, start: int, end: int, size: int
) -> dict[tuple[int, int], bytes]:
    """Stored nodes whose last leaf lies in ``[start, end)``."""
    found: dict[tuple[int, int], bytes] = {}
    for level in range(STRIDE, max(size, 1).bit_length(), STRIDE):
        lo = ((start + (1 << level)) >> level) - 1
        hi = (end >> level) - 1
        if hi < lo:
            continue
        rows = conn.execute(
            select(LedgerNodeRow.idx, LedgerNodeRow.hash).where(
                LedgerNodeRow.level == level, LedgerNodeRow.idx >= lo, LedgerNodeRow.idx <= hi
            )
        )
        found.update(((level, int(ix)), bytes(h)) for ix, h in rows)
    return found


_ABSENT: Any = object()


class _Links:
    """Recomputes the chain's links entry by entry and keeps the first disagreement."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.newest: dict[str, int] = {}
        self.started = False  # entries from before links began carry none
        self.problems: list[tuple[int, str]] = []

    def check(self, idx: int, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = None
        if not isinstance(entry, Mapping):
            return  # the leaf covers its bytes; it belongs to no chain
        keys = list(dict.fromkeys(self.chain.keys(entry)))
        if not keys:
            return
        links = entry.get(self.chain.field, _ABSENT)
        expected = {key: self.newest.get(key) for key in keys}
        if links is _ABSENT:
            if self.started:
                self.problems.append((idx, f"entry {idx} carries no links, though it should"))
        else:
            self.started = True
            if not _same_links(links, expected):
                # Indexes only: a key (a subject id) is personal-ish.
                wanted = ", ".join("none" if i is None else str(i) for i in expected.values())
                self.problems.append(
                    (
                        idx,
                        f"entry {idx} does not link to the previous entry with its key "
                        f"({wanted}): an entry between was skipped or the link forged",
                    )
                )
        for key in keys:
            self.newest[key] = idx


def _same_links(links: object, expected: dict[str, int | None]) -> bool:
    if not isinstance(links, dict) or links.keys() != expected.keys():
        return False
    return all(
        links[key] is None if want is None else type(links[key]) is int and links[key] == want
        for key, want in expected.items()
    )


def verify_log(ledger: Ledger, verifier: NoteVerifier) -> VerifyReport:
    """Recompute and check everything; mismatches are reported, not raised."""
    checkpoints = ledger.checkpoints()
    wanted_roots = {s for s, _, _ in checkpoints}
    # The record beside the key survives the database's rows: deleting the checkpoints
    # and rewriting entries leaves it to tell.
    try:
        head = ledger.last_signed()
    except IntegrityError as exc:
        head = None
        head_problem: str | None = exc.message
    else:
        head_problem = None
        if head is not None:
            wanted_roots.add(head[0])
    roots: dict[int, bytes] = {0: EMPTY_ROOT}
    links = None if ledger.chain is None else _Links(ledger.chain)
    with ledger.db.engine.connect() as conn:
        size = int(conn.execute(text("SELECT size FROM ledger_state WHERE id = 1")).scalar_one())
        report = VerifyReport(size=size)
        count = int(conn.execute(select(func.count()).select_from(LedgerEntryRow)).scalar_one())
        beyond = conn.execute(
            select(func.min(LedgerEntryRow.idx)).where(LedgerEntryRow.idx >= size)
        ).scalar_one()
        if beyond is not None:
            report.fail(
                int(beyond), f"entry {beyond} lies beyond the recorded size {size} (inserted row)"
            )
        stack: list[tuple[int, bytes]] = []
        expected = 0
        while expected < size and report.first_bad_index is None:
            end = min(expected + _CHUNK, size)
            rows = conn.execute(
                select(LedgerEntryRow.idx, LedgerEntryRow.entry, LedgerEntryRow.leaf)
                .where(LedgerEntryRow.idx >= expected, LedgerEntryRow.idx < end)
                .order_by(LedgerEntryRow.idx)
            ).all()
            stored = _stored_nodes(conn, expected, end, size)
            for idx, entry, stored_leaf in rows:
                if idx != expected:
                    break
                leaf = leaf_hash(bytes(entry))
                if bytes(stored_leaf) != leaf:
                    report.fail(
                        idx,
                        f"entry {idx} does not match its stored leaf hash (altered or reordered)",
                    )
                    break
                stack.append((0, leaf))
                if links is not None:
                    links.check(idx, bytes(entry))
                while len(stack) > 1 and stack[-1][0] == stack[-2][0]:
                    level, right = stack.pop()
                    _, left = stack.pop()
                    parent = node_hash(left, right)
                    node = (level + 1, idx >> (level + 1))
                    if node[0] % STRIDE == 0 and stored.get(node) != parent:
                        first = node[1] << node[0]
                        report.fail(
                            first,
                            f"stored hashes over entries {first}..{idx} do not match the entries",
                        )
                        break
                    stack.append((level + 1, parent))
                if report.first_bad_index is not None:
                    break
                expected = idx + 1
                report.checked_entries = expected
                if expected in wanted_roots:
                    roots[expected] = _fold(stack)
            if report.first_bad_index is None and expected < end:
                report.fail(expected, f"entry {expected} is missing (deleted or moved)")
        if report.first_bad_index is None and count != size:
            report.fail(None, f"{count} entry rows for a recorded size of {size}")
        # What the next append builds on is checked too: a wrong frontier would be folded
        # into every later stored hash and root, and a node row beyond the size would make
        # the append that reaches it fail (every access denied from then on).
        blob = conn.execute(text("SELECT frontier FROM ledger_state WHERE id = 1")).scalar_one()
        stored_frontier = None if blob is None else _decode_frontier(bytes(blob), size)
        if report.first_bad_index is None and blob is not None and stored_frontier != stack:
            report.fail(None, "the stored frontier does not match the entries")
        if links is not None and report.first_bad_index is None:
            _check_links(conn, links, report)
        for level in conn.execute(select(LedgerNodeRow.level).distinct()).scalars():
            stray = conn.execute(
                select(func.min(LedgerNodeRow.idx)).where(
                    LedgerNodeRow.level == level, LedgerNodeRow.idx >= size >> int(level)
                )
            ).scalar_one()
            if stray is not None:
                first = int(stray) << int(level)
                report.fail(
                    min(first, size),
                    f"a stored hash at level {level} covers entries from {first}, beyond the "
                    f"log's size {size} (inserted row)",
                )
    if head_problem is not None:
        report.fail(None, head_problem)
    if head is not None:
        head_size, head_root = head
        if head_size > size:
            report.fail(
                size,
                f"this host signed a checkpoint at size {head_size}, beyond the log's size "
                f"{size} (rolled back or truncated)",
            )
        elif head_size in roots and roots[head_size] != head_root:
            report.fail(
                max(head_size - 1, 0),
                f"the entries do not match the checkpoint this host last signed at size "
                f"{head_size} (history rewritten)",
            )
    for cp_size, cp_root, note in checkpoints:
        if cp_size > size:
            report.fail(
                size,
                f"checkpoint at size {cp_size} is beyond the log's size {size} "
                "(rolled back or truncated)",
            )
            continue
        try:
            signed = SignedNote.parse(note)
            body = Checkpoint.parse_text(signed.text)
        except InvalidInput:
            report.fail(None, f"checkpoint at size {cp_size} is not a valid note")
            continue
        if not signed.verify(verifier):
            report.fail(None, f"checkpoint at size {cp_size} has no valid log signature")
            continue
        recomputed = roots.get(cp_size)
        if recomputed is None:
            continue  # past the first bad index, already reported
        if body.size != cp_size or body.root != cp_root or recomputed != body.root:
            report.fail(
                max(cp_size - 1, 0),
                f"checkpoint at size {cp_size} does not match the entries (history rewritten)",
            )
        else:
            report.checked_checkpoints += 1
    return report


def _check_links(conn: Connection, links: _Links, report: VerifyReport) -> None:
    """Report the first wrong link, and the first head that is not the newest entry with
    its key (the next entry would link to it)."""
    if links.problems:
        idx, problem = links.problems[0]
        if len(links.problems) > 1:
            problem += f"; {len(links.problems) - 1} more entries with wrong links"
        report.fail(idx, problem)
    stored = {
        str(key): int(idx)
        for key, idx in conn.execute(select(LedgerChainHeadRow.key, LedgerChainHeadRow.idx))
    }
    wrong = sorted(
        (stored.get(key, -1), links.newest.get(key, -1))
        for key in set(stored) | set(links.newest)
        if stored.get(key) != links.newest.get(key)
    )
    if wrong:
        says, newest = wrong[0]
        table = LedgerChainHeadRow.__tablename__
        if says < 0:
            problem = f"{table} lacks the row for the key of entry {newest} (deleted)"
        elif newest < 0:
            problem = f"{table} names entry {says} as newest for a key no entry has (inserted)"
        else:
            problem = f"{table} names entry {says} as newest for the key of entry {newest}"
        more = f"; {len(wrong) - 1} more rows differ" if len(wrong) > 1 else ""
        report.fail(None, problem + more)


def _fold(stack: list[tuple[int, bytes]]) -> bytes:
    acc = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        acc = node_hash(left, acc)
    return acc
