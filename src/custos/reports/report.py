"""Subject transparency reports: every ledger entry about a subject, with proofs.

A report carries, for each entry about the subject, its exact bytes and an inclusion proof
to one signed checkpoint, plus the human rows (who by role and team, when, why, what, how
precisely) derived from those bytes by :func:`rows_from_entries`. :func:`verify_report`
recomputes everything offline, so a subject, their lawyer or a regulator can check it
without trusting custos: a changed byte, a dropped or added row, a forged proof or a
checkpoint signed by another key is named with the entry index it concerns.

Each entry about a subject names the previous entry about that subject (``prev``, filled in
by the ledger under its write lock, see :data:`SUBJECT_CHAIN`), and a report names the newest
(``head``): an entry left out of a report breaks the chain, and the verifier names the gap.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, func, insert, select

from custos.directory import DirectoryStore
from custos.errors import CustosError, InvalidInput, NotFound, ValidationFailed
from custos.ledger import Ledger, NoteVerifier, leaf_hash, open_checkpoint, verify_inclusion
from custos.ledger.entries import LINKS as _LEDGER_LINKS
from custos.ledger.entries import (
    BrokenEntry,
    DecisionEntry,
    Entry,
    MalformedEntry,
    ReleaseEntry,
    SqlReleaseEntry,
)
from custos.ledger.entries import parse as parse_entry
from custos.ledger.entries import read as read_entry
from custos.ledger.follow import follow_ledger
from custos.reports.chain import (
    subjects_of,
)
from custos.store import Database
from custos.store.reports import SubjectEntryRow, SubjectIndexStateRow
from custos.times import iso

FORMAT = "custos-subject-report/2"
#: Reports made before entries were linked: no ``head``; still verified, links where present.
_FORMAT_UNLINKED = "custos-subject-report/1"
#: The member of an entry about a subject that names the previous entry about that subject.
LINKS = _LEDGER_LINKS
_INDEX_TABLE = "report_subject_entries"
_CHUNK = 5000
#: Fields that identify staff; shown only when the viewer may see names.
_STAFF_FIELDS = ("principal", "approver", "by", "reviewer", "approvers", "ring")
_APPROVAL_TYPES = {
    "approval_request",
    "approval",
    "approval_denied",
    "approval_refused",
    "request_denied",
    "request_expired",
    "request_withdrawn",
    "grant",
    "grant_revoked",
    "grant_ended",
    "break_glass",
    "break_glass_refused",
    "alert",
    "break_glass_review",
    "break_glass_closed",
}


def _indexed(entry: Entry) -> list[tuple[str, str]]:
    """The subject index's rows for ``entry``: (subject, type) for every subject it is about
    (:func:`subjects_of`), sorted; none when it is about no one. Read as the chain reads it,
    whatever the entry's type, so broken and unknown entries count too."""
    kind = str(entry.get("type"))
    return sorted((subject, kind) for subject in subjects_of(entry))


class SubjectIndex:
    """Which ledger entries name which subject; catches up incrementally with the log. A
    :class:`~custos.ledger.follow.Follower`: its position is ``report_index_state``."""

    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger
        self._start = 0
        self._rows: list[dict[str, Any]] = []

    def catch_up(self) -> int:
        """Index entries appended since the last call; returns how many were read."""
        return follow_ledger(self.ledger, [self], chunk=_CHUNK)

    # -- as a Follower of the ledger (see custos.ledger.follow) ---------------------------

    def position(self) -> int:
        """The next ledger index to index (``report_index_state``, 0 before any)."""
        with self.db.session() as session:
            state = session.get(SubjectIndexStateRow, 1)
            position = state.indexed if state is not None else 0
        self._start = position
        return position

    def follow(self, index: int, entry: Entry) -> None:
        """Keep the row of an entry about a subject."""
        self._rows.extend(
            {"idx": index, "subject": subject, "type": kind} for subject, kind in _indexed(entry)
        )

    def persist(self, end: int) -> None:
        """Replace the rows of ``[start, end)`` with those kept and move the mark to
        ``end``, in one transaction: idempotent under concurrent catch-ups."""
        rows, self._rows = self._rows, []
        with self.db.session() as session:
            session.execute(
                delete(SubjectEntryRow).where(
                    SubjectEntryRow.idx >= self._start, SubjectEntryRow.idx < end
                )
            )
            if rows:
                session.execute(insert(SubjectEntryRow), rows)
            state = session.get(SubjectIndexStateRow, 1)
            if state is None:
                session.add(SubjectIndexStateRow(id=1, indexed=end))
            else:
                state.indexed = max(state.indexed, end)
        self._start = end

    def verify(self) -> list[tuple[int | None, str]]:
        """Compare the index with the entries it was built from (derived data, so it must
        match exactly): every entry about a subject has its row, naming that subject and the
        entry's type, and no other row exists. Returns the first difference (ledger index
        and table, never the subject: ids are personal-ish) and, if more, how many; empty
        when they match. Reads only; raises :class:`StoreUnavailable`."""
        with self.db.session() as session:
            state = session.get(SubjectIndexStateRow, 1)
            indexed = state.indexed if state is not None else 0
        differences: list[tuple[int, str]] = []
        for start in range(0, indexed, _CHUNK):
            end = min(start + _CHUNK, indexed)
            # Per entry: the sorted (subject, type) pairs it should have rows for.
            expected: dict[int, list[tuple[str, str]]] = {}
            for idx, raw in self.ledger.entries(start, end):
                pairs = _indexed(read_entry(raw))
                if pairs:
                    expected[idx] = pairs
            stored: dict[int, list[tuple[str, str]]] = {}
            with self.db.session() as session:
                for idx, subject, kind in session.execute(
                    select(SubjectEntryRow.idx, SubjectEntryRow.subject, SubjectEntryRow.type)
                    .where(SubjectEntryRow.idx >= start, SubjectEntryRow.idx < end)
                    .order_by(SubjectEntryRow.idx, SubjectEntryRow.subject)
                ):
                    stored.setdefault(int(idx), []).append((str(subject), str(kind)))
            for idx in sorted(set(expected) | set(stored)):
                mine, theirs = expected.get(idx), stored.get(idx)
                if theirs is None:
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE} has no row for entry {idx}, which is about a "
                            "subject (deleted)",
                        )
                    )
                elif mine is None:
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE} has a row for entry {idx}, which is about no "
                            "subject (inserted)",
                        )
                    )
                elif set(theirs) < set(mine):
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE} lacks a row for entry {idx} for one of the "
                            "subjects it is about (deleted)",
                        )
                    )
                elif set(theirs) > set(mine):
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE} has a row for entry {idx} naming a subject it is "
                            "not about (inserted)",
                        )
                    )
                elif [s for s, _ in mine] != [s for s, _ in theirs]:
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE}: the row for entry {idx} names another subject "
                            "than the entry (altered)",
                        )
                    )
                elif mine != theirs:
                    differences.append(
                        (
                            idx,
                            f"{_INDEX_TABLE}: the row for entry {idx} names another type "
                            "than the entry (altered)",
                        )
                    )
        with self.db.session() as session:
            beyond = session.execute(
                select(func.min(SubjectEntryRow.idx), func.count()).where(
                    SubjectEntryRow.idx >= indexed
                )
            ).one()
        if beyond[1]:
            differences.append(
                (
                    int(beyond[0]),
                    f"{_INDEX_TABLE} has a row for entry {beyond[0]}, beyond the "
                    f"{indexed} entries indexed so far (inserted)",
                )
            )
        if not differences:
            return []
        first_index, first = min(differences)
        more = len(differences) - 1
        if more:
            first += f"; {more} more difference{'s' if more > 1 else ''} in {_INDEX_TABLE}"
        return [(first_index, first)]

    def entries_of(self, subject: str) -> list[int]:
        """Indexes of the entries about ``subject``, oldest first (after catching up)."""
        self.catch_up()
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(SubjectEntryRow.idx)
                    .where(SubjectEntryRow.subject == subject)
                    .order_by(SubjectEntryRow.idx)
                )
            )


def _public(entry: Mapping[str, Any], names: bool) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if names or k not in _STAFF_FIELDS}


def rows_from_entries(
    entries: Iterable[tuple[int, Mapping[str, Any]]], *, names: bool
) -> dict[str, list[dict[str, Any]]]:
    """The human rows of a report, derived only from the entries (so they can be checked).

    ``accesses``: one row per decision, with the release that followed it; ``approvals``:
    the approval history, each row the stored entry itself. Staff ids appear only with
    ``names``. Entries are read through the ledger vocabulary: a decision or release that
    does not parse as one (a malformed entry) gives no access row; an approval step is shown
    as stored, parsed or not. Raises nothing.
    """
    accesses: list[dict[str, Any]] = []
    approvals: list[dict[str, Any]] = []
    by_decision: dict[str, dict[str, Any]] = {}
    for idx, stored in entries:
        match _typed(stored):
            case DecisionEntry() as decision:
                row: dict[str, Any] = {
                    "entry": idx,
                    "time": decision.time,
                    "role": decision.role,
                    "team": decision.team,
                    "action": decision.action,
                    "category": decision.category,
                    "purpose": decision.purpose,
                    "decision": decision.decision,
                    "precision": decision.precision,
                    "records": None,
                    "release_entry": None,
                    "grant": decision.grant,
                    "break_glass": decision.break_glass,
                }
                if decision.via is not None:
                    # A tool that asked on the person's behalf: named to whoever may see
                    # staff ids, only said to the subject. Absent otherwise, so reports made
                    # before on-behalf-of existed still verify.
                    row["via"] = decision.via if names else "a tool"
                if names:
                    row["principal"] = decision.principal
                accesses.append(row)
                by_decision[decision.id] = row
            case ReleaseEntry() as release:
                found = by_decision.get(release.decision_id)
                if found is not None:
                    found["records"] = release.records
                    found["release_entry"] = idx
            case SqlReleaseEntry() as sql_release:
                # A guarded SQL query's one release covers all its decisions; ``records``
                # is the query's row count (every subject it pinned together).
                for decision_id in sql_release.decisions:
                    found = by_decision.get(decision_id)
                    if found is not None:
                        found["records"] = sql_release.rows
                        found["release_entry"] = idx
            case entry if entry.type in _APPROVAL_TYPES:
                item = _public(stored, names)
                item.pop("journal", None)
                approvals.append({"entry": idx, **item})
    return {"accesses": accesses, "approvals": approvals}


def _typed(stored: Mapping[str, Any]) -> Entry:
    """``stored`` as its entry class, or a :class:`BrokenEntry` when it does not parse."""
    try:
        return parse_entry(dict(stored))
    except MalformedEntry as exc:
        return BrokenEntry(raw=dict(stored), problem=exc.message)


def build_report(
    ledger: Ledger,
    index: SubjectIndex,
    directory: DirectoryStore,
    subject: str,
    *,
    names: bool = False,
) -> dict[str, Any]:
    """A report for ``subject`` (raises ``UnknownSubject``), against a fresh checkpoint.

    With ``names`` the rows carry principal ids and names (for roles allowed to see them).
    """
    directory.subject(subject)
    # Sign first, then look up: the index then catches up past the checkpoint, so every entry
    # the checkpoint covers is found (looking up first missed those appended in between).
    note = ledger.checkpoint()
    size = int(note.split("\n")[1])
    raws = {idx: ledger.entry(idx) for idx in index.entries_of(subject) if idx < size}
    # From the ledger's own record, not the index: a report the index left short then fails
    # verification instead of proving an incomplete history.
    head = ledger.chain_head(subject, size)
    parsed = [(idx, json.loads(raw)) for idx, raw in raws.items()]
    rows = rows_from_entries(parsed, names=names)
    if names:
        for row in rows["accesses"]:
            principal = row.get("principal")
            if principal:
                try:
                    row["name"] = directory.principal(principal).name
                except NotFound:
                    row["name"] = None
    return {
        "format": FORMAT,
        "subject": subject,
        "generated": iso(datetime.now(UTC)),
        "names": names,
        "head": head,
        "log": {
            "origin": ledger.origin,
            "verifier_key": ledger.signer.verifier_key(),
            "checkpoint": note,
        },
        "entries": [
            {
                "index": idx,
                "entry": base64.b64encode(raw).decode(),
                "proof": ledger.inclusion_proof(idx, size).to_json(),
            }
            for idx, raw in raws.items()
        ],
        **rows,
    }


# -- offline verification ------------------------------------------------------------------


class _Proof(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    size: int = Field(ge=1)
    hashes: list[str] = Field(max_length=64)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0)
    entry: str
    proof: _Proof


class _Log(BaseModel):
    model_config = ConfigDict(extra="forbid")
    origin: str
    verifier_key: str
    checkpoint: str


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str
    subject: str
    generated: str
    names: bool
    head: int | None = Field(default=None, ge=0)
    log: _Log
    entries: list[_Entry]
    accesses: list[dict[str, Any]]
    approvals: list[dict[str, Any]]


@dataclass
class ReportCheck:
    """The outcome of :func:`verify_report`: ``ok``, and every problem with its entry index."""

    subject: str = ""
    key: str = ""
    key_source: str = ""
    checkpoint_size: int = 0
    entries: int = 0
    #: Entries from before the ledger linked entries: a gap among them cannot be seen.
    unlinked: int = 0
    problems: list[tuple[int | None, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        indexes = [i for i, _ in self.problems if i is not None]
        return min(indexes) if indexes else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "subject": self.subject,
            "key": self.key,
            "key_source": self.key_source,
            "checkpoint_size": self.checkpoint_size,
            "entries": self.entries,
            "unlinked": self.unlinked,
            "first_bad_index": self.first_bad_index,
            "problems": [{"index": i, "problem": p} for i, p in self.problems],
        }


def parse_report(text: str, source: str = "report") -> _Report:
    """Parse a report document. Raises :class:`ValidationFailed` naming each bad field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{source}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError):
        raise InvalidInput(f"{source}: not JSON") from None
    try:
        report = _Report.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ValidationFailed(f"{source}: not a custos subject report", problems) from None
    if report.format not in (FORMAT, _FORMAT_UNLINKED):
        raise InvalidInput(f"{source}: unknown report format {report.format!r}")
    return report


def verify_report(
    text: str, *, trusted_key: str | None = None, source: str = "report"
) -> ReportCheck:
    """Check a report offline. Never trusts the report for what it can recompute.

    The checkpoint is checked with ``trusted_key`` when given (say, the log's key as
    published or as a witness knows it), else with the key the report carries — the result
    says which. Raises :class:`InvalidInput` / :class:`ValidationFailed` for documents that
    are not reports at all; every other finding is a problem in the result.
    """
    report = parse_report(text, source)
    check = ReportCheck(subject=report.subject, entries=len(report.entries))
    check.key_source = "given" if trusted_key else "report"
    check.key = trusted_key or report.log.verifier_key
    try:
        verifier = NoteVerifier.parse(check.key)
        checkpoint, _ = open_checkpoint(report.log.checkpoint, verifier)
    except CustosError as exc:
        check.problems.append((None, f"checkpoint does not verify: {exc.message}"))
        return check
    check.checkpoint_size = checkpoint.size
    if checkpoint.origin != report.log.origin:
        check.problems.append((None, "the checkpoint's origin is not the report's log"))
    parsed: list[tuple[int, dict[str, Any]]] = []
    seen: set[int] = set()
    for item in report.entries:
        idx = item.index
        try:
            raw = base64.b64decode(item.entry, validate=True)
            hashes = [base64.b64decode(h, validate=True) for h in item.proof.hashes]
        except (binascii.Error, ValueError):
            check.problems.append((idx, f"entry {idx}: not base64"))
            continue
        if idx in seen:
            check.problems.append((idx, f"entry {idx} appears twice"))
        seen.add(idx)
        if item.proof.index != idx or item.proof.size != checkpoint.size:
            check.problems.append(
                (idx, f"entry {idx}: its proof is for another index or tree size")
            )
            continue
        if not verify_inclusion(leaf_hash(raw), idx, checkpoint.size, hashes, checkpoint.root):
            check.problems.append((idx, f"entry {idx} is not in the log at the signed checkpoint"))
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            check.problems.append((idx, f"entry {idx} is not JSON"))
            continue
        if not isinstance(entry, dict) or report.subject not in subjects_of(entry):
            check.problems.append((idx, f"entry {idx} is not about {report.subject}"))
            continue
        parsed.append((idx, entry))
    parsed.sort(key=lambda p: p[0])
    if report.format == _FORMAT_UNLINKED:
        head = parsed[-1][0] if parsed else None  # such a report names none
    elif "head" not in report.model_fields_set:
        check.problems.append((None, "the report does not name the newest entry about its subject"))
        head = parsed[-1][0] if parsed else None
    else:
        head = report.head
    check.problems.extend(chain_problems(report.subject, head, parsed))
    check.unlinked = sum(1 for _, entry in parsed if LINKS not in entry)
    expected = rows_from_entries(parsed, names=report.names)
    for section in ("accesses", "approvals"):
        claimed: list[dict[str, Any]] = getattr(report, section)
        stated = {_row_index(r): r for r in claimed}
        derived = {r["entry"]: r for r in expected[section]}
        keys: set[int | None] = set(stated) | set(derived)
        for key in sorted(keys, key=lambda i: (i is None, i or 0)):
            mine = derived.get(key) if key is not None else None
            theirs = stated.get(key)
            if theirs is None:
                check.problems.append((key, f"{section}: the row of entry {key} was dropped"))
            elif mine is None:
                check.problems.append((key, f"{section}: row {key} has no entry behind it"))
            elif _comparable(theirs) != mine:
                check.problems.append((key, f"{section}: the row of entry {key} was altered"))
        if len(stated) != len(claimed):
            check.problems.append((None, f"{section}: rows repeat an entry"))
    return check


def chain_problems(
    subject: str, head: int | None, entries: Sequence[tuple[int, Mapping[str, Any]]]
) -> list[tuple[int | None, str]]:
    """What breaks the chain of ``entries`` (index order) about ``subject`` whose newest is
    said to be ``head``: each entry's link (``prev``) must name the entry listed before it
    (none for the first ever), and the newest listed must be ``head``. Entries from before
    links began (no ``prev``) may only come first. Each problem names the entry it concerns
    and what is missing; empty when the chain is whole."""
    problems: list[tuple[int | None, str]] = []
    listed = {idx for idx, _ in entries}
    previous: int | None = None
    linked = False
    for idx, entry in entries:
        links = entry.get(LINKS, _ABSENT)
        if links is _ABSENT:
            if linked:
                problems.append(
                    (
                        idx,
                        f"entry {idx} has no link to the previous entry about {subject}, "
                        "though earlier entries have",
                    )
                )
            previous = idx
            continue
        linked = True
        named = links.get(subject, _ABSENT) if isinstance(links, dict) else _ABSENT
        if named is not None and (type(named) is not int or named < 0):
            problems.append(
                (idx, f"entry {idx} has no valid link to the previous entry about {subject}")
            )
        elif named != previous:
            if named is None:
                problems.append(
                    (
                        idx,
                        f"entry {idx} says it is the first entry about {subject}, but the "
                        f"report holds an earlier one ({previous})",
                    )
                )
            elif named not in listed:
                problems.append(
                    (
                        idx,
                        f"entry {idx} names previous entry {named}, which the report does "
                        "not contain",
                    )
                )
            elif named >= idx:
                problems.append((idx, f"entry {idx} names a later entry ({named}) as previous"))
            else:
                problems.append(
                    (
                        previous,
                        f"entry {previous} is not on the chain of entries about "
                        f"{subject}: entry {idx} names {named} as its previous",
                    )
                )
        previous = idx
    if head != previous:
        if head is None:
            problems.append(
                (previous, f"the report says {subject} has no entries, yet holds entry {previous}")
            )
        elif head not in listed:
            problems.append(
                (
                    head,
                    f"the newest entry about {subject} is {head}, which the report does not "
                    "contain (cut short)",
                )
            )
        else:
            problems.append(
                (previous, f"entry {previous} is newer than the report's newest entry ({head})")
            )
    return problems


_ABSENT: Any = object()


def _row_index(row: Mapping[str, Any]) -> int | None:
    value = row.get("entry")
    return value if isinstance(value, int) else None


def _comparable(row: Mapping[str, Any]) -> dict[str, Any]:
    # Names come from the directory, not the log: they cannot be checked offline.
    return {k: v for k, v in row.items() if k != "name"}
