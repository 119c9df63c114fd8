"""Importing a large directory file fast: JSON Lines, streamed, ledgered chunk by chunk.

``custos org load`` reads a whole YAML or JSON document into memory and writes it through
the ORM in one transaction: fine for thousands of rows, minutes for a million. This module
takes the same entries, one per line (docs/formats.md, *Directory lines*), in two
passes over the file:

1. **Check.** Every line is decoded and validated (the same pydantic models as directory
   files), duplicates and references are checked against the file and the stored directory,
   and the valid rows are spooled, compactly, to an anonymous temporary file. Any problem:
   every problem is reported by line number and nothing is written.
2. **Write**, per chunk of at most :data:`CHUNK` rows of one section: read the stored rows
   (one query per thousand; none while the section's table was empty when the write began,
   see :func:`_write`), keep only the rows that add or change something (or that custos
   never vouched for), ledger their facts as ``authority`` entries of at most
   :data:`custos.authority.BATCH` rows in one durable append (each row's facts encoded here,
   :data:`_ENCODE`, and spliced into the entries), then write them in one transaction
   through a driver cursor (``executemany`` on SQLite, one ``COPY`` of the new rows on
   PostgreSQL; no ORM objects), move the directory version and stamp them with it, as
   :meth:`DirectoryStore.merge` does (see the module docstring of
   :mod:`custos.directory.store`).

So every row is an authority fact ledgered before it is written, as everywhere else. An
import stopped midway (a crash, the ledger unavailable) keeps the chunks it committed: each
of those rows equals its entry and is honoured; the rest are not there yet. At most one
chunk may have been ledgered without its rows being written, which ``custos log verify``
names (rows the ledger set and the table lacks, or holds older) until the import is run
again; running it again writes only what is missing.

With ``prune``, a section the file holds is the whole of that section: every stored row of it
the file does not hold is removed, ledgered first as a removal (``{"id": ..., "removed":
true}`` in an ``authority`` entry), so a row put back afterwards is refused on use and named
by ``custos log verify``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import marshal
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring as _text
from pathlib import Path
from typing import IO, Annotated, Any, NotRequired

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    with_config,
)
from sqlalchemy import select
from sqlalchemy.orm import Session
from typing_extensions import TypedDict

from custos.authority import BATCH, EncodedFacts
from custos.directory.files import (
    ID_PATTERN,
    Country,
    PrincipalEntry,
    SubjectEntry,
    TicketEntry,
    _describe_error,
    _unknown_words,
)
from custos.directory.model import DirectoryDocument, Principal, Subject, Ticket
from custos.directory.store import _UNSTAMPED, DirectoryStore, _components
from custos.errors import InvalidInput, StoreConflict, ValidationFailed
from custos.store import HotCursor
from custos.store.directory import PrincipalRow, SubjectRow, TicketRow
from custos.textfiles import strict_json
from custos.timefields import UtcTime
from custos.times import iso
from custos.vocabulary import (
    DEFAULT_VOCABULARY,
    PrincipalKind,
    PrincipalStatus,
    TicketStatus,
    Vocabulary,
)

#: The key naming each line's section, and the section it fills.
LINE_KEYS = {"principal": "principals", "subject": "subjects", "ticket": "tickets"}
SECTIONS = ("principals", "subjects", "tickets")
SINGULAR = {section: key for key, section in LINE_KEYS.items()}
_KINDS = {"principals": "principal", "subjects": "subject", "tickets": "ticket"}
_ENTRIES: dict[str, Any] = {
    "principals": PrincipalEntry,
    "subjects": SubjectEntry,
    "tickets": TicketEntry,
}
_TABLES: dict[str, Any] = {
    "principals": PrincipalRow.__table__,
    "subjects": SubjectRow.__table__,
    "tickets": TicketRow.__table__,
}
#: The facts each kind's rows set, named as its domain object names them.
_FACTS: dict[str, tuple[str, ...]] = {
    "principals": tuple(
        Principal(id="x", name="x", kind="x", role="x", team="x", country="x", status="x").facts()
    ),
    "subjects": tuple(Subject(id="x", jurisdiction="x").facts()),
    "tickets": tuple(Ticket(id="x", kind="x", subject="x", assignee="x", status="x").facts()),
}
#: Columns written per section, in spool order (``seq`` and ``auth_idx`` are set on write).
COLUMNS: dict[str, tuple[str, ...]] = {
    "principals": (
        "id", "name", "kind", "role", "team", "manager", "country", "status", "groups",
        "role_since", "extra",
    ),
    "subjects": (
        "id", "jurisdiction", "handle", "protected", "employee", "linked", "link_group", "extra",
    ),
    "tickets": (
        "id", "kind", "subject", "assignee", "status", "opened", "closed", "opened_by", "extra",
    ),
}  # fmt: skip
_TIMES = {"role_since", "opened", "closed"}
_LISTS = {"groups", "protected", "linked"}
#: Problems reported before the rest are only counted: a file with a million bad lines
#: needs the first few to be fixed, not all of them printed.
MAX_PROBLEMS = 100
MAX_LINE_CHARS = 1024 * 1024
#: Rows written per transaction: their entries (of at most BATCH rows each) are ledgered in
#: one durable append, then the rows in one transaction. Bigger chunks pay fewer fsyncs.
CHUNK = 10 * BATCH
#: Rows spooled per record in the check pass: few enough that the rows waiting to be spooled
#: stay in the processor's cache (at 10^6 subjects, records of a whole chunk cost 0.6 µs more
#: per row); the write pass reads them back in chunks of :data:`CHUNK`.
SPOOL = BATCH


#: An id checked inside pydantic-core (the directory file's ``Id`` checks the same pattern
#: in Python, to word its message): a line is validated without a Python call per field.
_FastId = Annotated[str, StringConstraints(pattern=ID_PATTERN.pattern)]
_Word = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


# The fast path's shapes: the fields of PrincipalEntry, SubjectEntry and TicketEntry as
# TypedDicts, which pydantic-core fills from JSON three times faster than model instances.
# No extra fields (a line with any takes the slow path, which checks they are plain JSON).
@with_config(ConfigDict(extra="forbid", str_strip_whitespace=True))
class _PrincipalFields(TypedDict):
    id: _FastId
    name: Annotated[str, Field(min_length=1, max_length=256)]
    kind: NotRequired[PrincipalKind]
    role: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    team: Annotated[str, Field(min_length=1, max_length=128)]
    manager: NotRequired[_FastId | None]
    country: Country
    status: NotRequired[PrincipalStatus]
    groups: NotRequired[list[_Word]]
    role_since: NotRequired[UtcTime | None]


@with_config(ConfigDict(extra="forbid", str_strip_whitespace=True))
class _SubjectFields(TypedDict):
    id: _FastId
    handle: NotRequired[Annotated[str, Field(max_length=256)] | None]
    jurisdiction: Country
    # Protected flags and ticket kinds are the pack's words, checked after either path.
    protected: NotRequired[list[_Word]]
    employee: NotRequired[_FastId | None]
    linked: NotRequired[list[_FastId]]


@with_config(ConfigDict(extra="forbid", str_strip_whitespace=True))
class _TicketFields(TypedDict):
    id: _FastId
    kind: _Word
    subject: _FastId
    assignee: _FastId
    status: TicketStatus
    opened: NotRequired[UtcTime | None]
    closed: NotRequired[UtcTime | None]
    opened_by: NotRequired[_FastId | None]


@with_config(ConfigDict(extra="forbid"))
class _LineFields(TypedDict, total=False):
    principal: _PrincipalFields
    subject: _SubjectFields
    ticket: _TicketFields


#: One line decoded and validated by pydantic-core from its JSON text in one call. The fast
#: path only: a line it refuses goes through the directory file's own models, which word
#: the messages, so a line is accepted exactly when those models accept it
#: (tests/directory/test_bulk.py checks that the two agree, and give the same rows). Built
#: on first use: building it costs every process that imports the directory otherwise.
@functools.cache
def _fast_line() -> TypeAdapter[Any]:
    return TypeAdapter(_LineFields)


_DECODER_ERRORS = (ValueError, RecursionError)


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_lines` did, per section: rows added, changed, unchanged, removed."""

    lines: int
    added: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    changed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SECTIONS, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "added": self.added,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "removed": self.removed,
        }


class _Plan:
    """What the check pass learnt: the spooled rows, ids per section, links, removals."""

    def __init__(self) -> None:
        self.spool: dict[str, IO[bytes]] = {}
        self.pending: dict[str, list[tuple[Any, ...]]] = {s: [] for s in SECTIONS}
        self.ids: dict[str, dict[str, int]] = {s: {} for s in SECTIONS}
        self.links: dict[str, tuple[str, ...]] = {}
        self.removals: dict[str, list[str]] = {s: [] for s in SECTIONS}
        #: Stored subjects the file does not hold whose links or link group it moves.
        self.moved: list[str] = []
        self.lines = 0

    def flush(self, section: str) -> None:
        rows = self.pending[section]
        if not rows:
            return
        if section not in self.spool:
            self.spool[section] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        # Length-prefixed: marshal.load on a file reads it a few bytes at a time.
        data = marshal.dumps(rows)
        self.spool[section].write(len(data).to_bytes(8, "big") + data)
        self.pending[section] = []

    def chunks(self, section: str) -> Iterator[list[tuple[Any, ...]]]:
        """The spooled rows of ``section``, in order, in lists of :data:`CHUNK` (the last
        one shorter)."""
        spool = self.spool.get(section)
        if spool is None:
            return
        spool.seek(0)
        rows: list[tuple[Any, ...]] = []
        while size := spool.read(8):
            # Our own anonymous temporary file, written by this process in pass 1.
            rows.extend(marshal.loads(spool.read(int.from_bytes(size, "big"))))  # noqa: S302
            while len(rows) >= CHUNK:
                yield rows[:CHUNK]
                rows = rows[CHUNK:]
        if rows:
            yield rows

    def close(self) -> None:
        for spool in self.spool.values():
            spool.close()


def import_lines(
    store: DirectoryStore,
    path: Path,
    *,
    source: str | None = None,
    by: Mapping[str, Any] | None = None,
    prune: bool = False,
    words: Vocabulary = DEFAULT_VOCABULARY,
) -> ImportReport:
    """Import the directory lines of ``path`` into ``store``, ledgering every added, changed
    or removed row before it is written (see the module docstring).

    Each line is ``{"principal": {...}}``, ``{"subject": {...}}`` or ``{"ticket": {...}}``
    with the fields of a directory file's entry; blank lines are skipped. Loading the same
    file twice changes nothing. With ``prune``, stored rows of a section the file holds that
    the file does not hold are removed (ledgered as removals first). Protected flags and
    ticket kinds must be words of ``words`` (the active pack's).

    Raises :class:`InvalidInput` when the file cannot be read, :class:`ValidationFailed`
    (nothing written) listing each bad line by number, :class:`LedgerUnavailable` and
    :class:`StoreUnavailable` (the chunks written so far stay, each ledgered) and
    :class:`StoreConflict` when another writer changed a row of a chunk meanwhile.
    """
    name = source or str(path)
    with store._write_lock, _frozen_heap():  # one writer per process, as merge
        plan = _Plan()
        try:
            _check(store, path, name, plan, prune, words)
            report = ImportReport(lines=plan.lines)
            try:
                _write(store, plan, f"org import: {name}", by, report)
                if prune:
                    _prune(store, plan, f"org import --prune: {name}", by, report)
            finally:
                store.invalidate()
            return report
        finally:
            plan.close()


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """No cyclic garbage collection while the import runs, and the objects that exist before
    it kept out of the scans after. An import allocates millions of small containers (none
    in cycles), and each collection they trigger walked every object of the process
    (SQLAlchemy's, pydantic's, the policy engine's) again: that, not the work, made half
    the import's time. Reference counting frees what the import drops, as always."""
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.unfreeze()


# -- pass 1: check ----------------------------------------------------------------------


def _check(
    store: DirectoryStore,
    path: Path,
    source: str,
    plan: _Plan,
    prune: bool,
    words: Vocabulary,
) -> None:
    problems: list[str] = []
    counted = 0

    def problem(text: str) -> None:
        nonlocal counted
        counted += 1
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    #: Per referenced id, the first line and field naming it.
    wanted: dict[str, dict[str, tuple[int, str]]] = {"principals": {}, "subjects": {}}
    try:
        handle = path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise InvalidInput(
            f"{source}: cannot read the directory lines: {exc.strerror or exc}"
        ) from None
    with handle:
        number = lines = 0
        validate = _fast_validator()
        ids, pending, spooled = plan.ids, plan.pending, _SPOOLED
        try:
            for number, raw in enumerate(handle, start=1):
                # The common case first: a plain line pydantic-core takes whole (its line
                # end is JSON whitespace). Line 1 (a byte order mark), long lines and any
                # line it refuses take the careful path below, which words the problems.
                parsed: tuple[str, Any] | None = None
                if number > 1 and len(raw) <= MAX_LINE_CHARS:
                    parsed = _fast(raw, validate)
                if parsed is not None:
                    lines += 1
                else:
                    line = (raw[:-1] if raw.endswith("\n") else raw).removesuffix("\r")
                    if number == 1:
                        line = line.removeprefix("\ufeff")
                    if not line or line.isspace():
                        continue
                    lines += 1
                    if len(line) > MAX_LINE_CHARS:
                        problem(f"{source}:{number}: line longer than {MAX_LINE_CHARS} characters")
                        continue
                    parsed = _fast(line, validate)
                    if parsed is None:
                        parsed = _slow(line, f"{source}:{number}", problem)
                        if parsed is None:
                            continue
                section, fields = parsed
                key = fields["id"]
                unknown = _unknown_words(
                    section, fields.get("kind"), fields.get("protected"), words
                )
                if unknown:
                    for message in unknown:
                        problem(f"{source}:{number}{_id_label(key)}: {message}")
                    continue
                first = ids[section].setdefault(key, number)
                if first != number:
                    problem(
                        f"{source}:{number}{_id_label(key)}: duplicate id (first at line {first})"
                    )
                    continue
                row = spooled[section](fields)
                # Only rows that name another (a manager, an employee, links; every ticket).
                if section == "tickets" or row[5] or (section == "subjects" and row[4]):
                    _note_references(section, fields, number, wanted)
                    if section == "subjects" and row[5]:
                        plan.links[key] = tuple(row[5])
                spooling = pending[section]
                spooling.append(row)
                if len(spooling) >= SPOOL:
                    plan.flush(section)
        except UnicodeDecodeError:
            raise InvalidInput(f"{source}:{number + 1}: not UTF-8 text") from None
        except OSError as exc:
            raise InvalidInput(
                f"{source}: cannot read the directory lines: {exc.strerror or exc}"
            ) from None
    plan.lines = lines
    for section in SECTIONS:
        plan.flush(section)
    pruned = {s for s in SECTIONS if prune and plan.ids[s]}
    with store.db.session() as session:
        for section, refs in wanted.items():
            outside = [key for key in refs if key not in plan.ids[section]]
            # A section being pruned keeps only the file's rows: references must be in it.
            stored = set() if section in pruned else _existing(session, section, outside)
            for key in outside:
                if key not in stored:
                    number, field_name = refs[key]
                    kind = _KINDS[section]
                    problem(
                        f"{source}:{number}: field '{field_name}': unknown {kind} {key!r}"
                        " (neither in the file nor stored)"
                    )
        if pruned:
            _plan_removals(session, plan, pruned, source, problem)
    if problems:
        more = f" (the first {len(problems)} shown)" if counted > len(problems) else ""
        raise ValidationFailed(
            f"{source}: {counted} problem(s){more}; nothing was loaded", problems
        )


def _id_label(key: Any) -> str:
    return f" (id {key!r})" if isinstance(key, str) and len(key) <= 128 else ""


def _fast_validator() -> Any:
    """The fast path's ``validate_json``, called without the adapter's wrapper."""
    return _fast_line().validator.validate_json


def _fast(line: str, validate: Any = None) -> tuple[str, Any] | None:
    """The section and fields of a plain, valid line; None for any other (see _fast_line).
    ``validate``: :func:`_fast_validator`, when the caller holds it already."""
    try:
        parsed: dict[str, dict[str, Any]] = (validate or _fast_validator())(line)
    except ValidationError:
        return None
    if len(parsed) != 1:
        return None
    ((key, fields),) = parsed.items()
    # What the entry models check in Python: a subject linked to itself, a ticket closed
    # before it was opened. Either takes the slow path, which words the message.
    if key == "subject":
        linked = fields.get("linked")
        if linked and fields["id"] in linked:
            return None
    elif key == "ticket":
        opened, closed = fields.get("opened"), fields.get("closed")
        if opened is not None and closed is not None and closed < opened:
            return None
    return LINE_KEYS[key], fields


def _slow(line: str, where: str, problem: Any) -> tuple[str, Any] | None:
    """The section and value of ``line`` as the directory file's models take it, or None
    after reporting each of its problems."""
    try:
        data = strict_json(line)
    except _DECODER_ERRORS as exc:
        problem(f"{where}: not valid JSON: {getattr(exc, 'msg', 'bad value')}")
        return None
    if not isinstance(data, dict) or len(data) != 1 or next(iter(data)) not in LINE_KEYS:
        problem(f"{where}: must be an object with one key: principal, subject or ticket")
        return None
    key, fields = next(iter(data.items()))
    section = LINE_KEYS[key]
    if not isinstance(fields, dict):
        problem(f"{where}: '{key}' must be an object of fields")
        return None
    label = where + _id_label(fields.get("id"))
    try:
        entry = _ENTRIES[section].model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            problem(f"{label}: {_describe_error(error)}")
        return None
    fields = {name: getattr(entry, name) for name in type(entry).model_fields}
    extra = entry.extras()
    if extra:
        fields["extra"] = extra
    return section, fields


def _note_references(
    section: str,
    fields: Mapping[str, Any],
    number: int,
    wanted: dict[str, dict[str, tuple[int, str]]],
) -> None:
    """Remember the first line naming each id the entry refers to (checked after the file)."""
    principals, subjects = wanted["principals"], wanted["subjects"]
    if section == "subjects":
        employee = fields.get("employee")
        if employee is not None and employee not in principals:
            principals[employee] = (number, "employee")
        for other in fields.get("linked") or ():
            if other not in subjects:
                subjects[other] = (number, "linked")
    elif section == "tickets":
        if fields["assignee"] not in principals:
            principals[fields["assignee"]] = (number, "assignee")
        if fields["subject"] not in subjects:
            subjects[fields["subject"]] = (number, "subject")
    else:
        manager = fields.get("manager")
        if manager is not None and manager not in principals:
            principals[manager] = (number, "manager")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


#: A valid line's fields as the columns of its row, in :data:`COLUMNS` order, as marshal
#: can store them: times as ISO text, lists sorted without repeats, and the entry models'
#: defaults for fields left out (as ``to_domain`` gives them; tests/directory/test_bulk.py
#: holds the two equal).
_SPOOLED: dict[str, Any] = {
    "principals": lambda f: (
        f["id"], f["name"], f.get("kind", "employee"), f["role"], f["team"], f.get("manager"),
        f["country"], f.get("status", "active"),
        sorted(set(g)) if (g := f.get("groups")) else [],
        _iso(f.get("role_since")), f.get("extra", {}),
    ),
    "subjects": lambda f: (
        f["id"], f["jurisdiction"], f.get("handle"),
        sorted(set(p)) if (p := f.get("protected")) else [],
        f.get("employee"),
        sorted(set(k)) if (k := f.get("linked")) else [],
        None, f.get("extra", {}),
    ),
    "tickets": lambda f: (
        f["id"], f["kind"], f["subject"], f["assignee"], f["status"], _iso(f.get("opened")),
        _iso(f.get("closed")), f.get("opened_by"), f.get("extra", {}),
    ),
}  # fmt: skip


def _existing(session: Session, section: str, keys: Sequence[str]) -> set[str]:
    table = _TABLES[section]
    found: set[str] = set()
    for at in range(0, len(keys), BATCH):
        found.update(
            session.scalars(select(table.c.id).where(table.c.id.in_(keys[at : at + BATCH])))
        )
    return found


def _plan_removals(
    session: Session, plan: _Plan, pruned: set[str], source: str, problem: Any
) -> None:
    """The stored rows ``--prune`` removes; a problem for each kept row that would then name
    a removed one (a ticket's subject or assignee, a subject's employee)."""
    for section in pruned:
        table = _TABLES[section]
        keep = plan.ids[section]
        plan.removals[section] = [
            key for key in session.scalars(select(table.c.id)) if key not in keep
        ]
    gone = {section: set(plan.removals[section]) for section in pruned}
    if gone.get("principals") and "subjects" not in pruned:
        table = _TABLES["subjects"]
        for key, employee in session.execute(
            select(table.c.id, table.c.employee).where(table.c.employee.is_not(None))
        ):
            if employee in gone["principals"]:
                problem(
                    f"{source}: --prune would remove principal {employee!r}, the employee "
                    f"of stored subject {key!r}"
                )
    if (gone.get("principals") or gone.get("subjects")) and "tickets" not in pruned:
        table = _TABLES["tickets"]
        for key, subject, assignee in session.execute(
            select(table.c.id, table.c.subject, table.c.assignee)
        ):
            if subject in gone.get("subjects", ()):
                problem(
                    f"{source}: --prune would remove subject {subject!r}, named by stored "
                    f"ticket {key!r}"
                )
            if assignee in gone.get("principals", ()):
                problem(
                    f"{source}: --prune would remove principal {assignee!r}, named by stored "
                    f"ticket {key!r}"
                )


# -- pass 2: write ----------------------------------------------------------------------


def _write(
    store: DirectoryStore,
    plan: _Plan,
    source: str,
    by: Mapping[str, Any] | None,
    report: ImportReport,
) -> None:
    linked = _plan_links(store, plan)
    for section in SECTIONS:
        # A section stored empty when its first chunk begins is not read back: the file's
        # ids are distinct, so only another writer could store one of them meanwhile. Its
        # insert then breaks the key, and that chunk (and the rest) are written from reads.
        fresh = _is_empty(store, section)
        for chunk in plan.chunks(section):
            if section == "subjects" and linked is not None:
                chunk = [(*row[:5], *linked(row[0]), row[7]) for row in chunk]
            fresh = _write_chunk(store, section, chunk, source, by, report, fresh=fresh)
    if linked is not None:
        _write_moved(store, plan, linked, source, by, report)


def _is_empty(store: DirectoryStore, section: str) -> bool:
    with store.db.cursor() as cursor:
        return not cursor.execute(f"SELECT 1 FROM {_TABLES[section].name} LIMIT 1")  # noqa: S608


def _plan_links(store: DirectoryStore, plan: _Plan) -> Any:
    """Each subject's links made symmetric and its link group, as :meth:`DirectoryStore.merge`
    draws them (the file states the links of each subject it holds in full); None when
    neither the file nor the stored directory has any link."""
    table = _TABLES["subjects"]
    stored: dict[str, tuple[tuple[str, ...], str | None]] = {}
    if not plan.removals["subjects"]:  # else the file holds every subject there will be
        with store.db.session() as session:
            stored = {
                key: (tuple(links or ()), group)
                for key, links, group in session.execute(
                    select(table.c.id, table.c.linked, table.c.link_group).where(
                        table.c.link_group.is_not(None)
                    )
                )
            }
    if not stored and not plan.links:
        return None
    stated = plan.ids["subjects"]
    links: dict[str, set[str]] = {key: set(others) for key, (others, _) in stored.items()}
    for key in list(links):
        if key in stated:
            for other in links.pop(key, set()):
                links.get(other, set()).discard(key)
    for key, others in plan.links.items():
        for other in others:
            links.setdefault(key, set()).add(other)
            links.setdefault(other, set()).add(key)
    groups = _components(links)

    def linked(key: str) -> tuple[list[str], str | None]:
        return sorted(links.get(key, ())), groups.get(key)

    plan.moved = sorted(
        key
        for key in set(stored) | set(links)
        if key not in stated
        and (tuple(linked(key)[0]), linked(key)[1]) != stored.get(key, ((), None))
    )
    return linked


def _write_moved(
    store: DirectoryStore,
    plan: _Plan,
    linked: Any,
    source: str,
    by: Mapping[str, Any] | None,
    report: ImportReport,
) -> None:
    """Rewrite the stored subjects the file does not hold whose links or group it moved."""
    moved = plan.moved
    table = _TABLES["subjects"]
    names = COLUMNS["subjects"]
    for at in range(0, len(moved), CHUNK):
        with store.db.session() as session:
            rows = session.execute(
                select(*(table.c[n] for n in names)).where(table.c.id.in_(moved[at : at + CHUNK]))
            ).all()
        values = [(*row[:3], list(row[3] or ()), row[4], *linked(row[0]), row[7]) for row in rows]
        _write_chunk(store, "subjects", values, source, by, report, count_unchanged=False)


def _write_chunk(
    store: DirectoryStore,
    section: str,
    values: Sequence[tuple[Any, ...]],
    source: str,
    by: Mapping[str, Any] | None,
    report: ImportReport,
    *,
    count_unchanged: bool = True,
    fresh: bool = False,
    superseded: int | None = None,
) -> bool:
    """Ledger, then write, the rows of ``values`` (spooled rows, see :data:`_SPOOLED`) that
    add or change something, or that custos never vouched for, or (``superseded``) whose
    entry comes before that ledger index. With ``fresh``, all of them, as new rows, without
    reading any (see :func:`_write`); if another writer stored one meanwhile, the chunk is
    written again from a read. Returns whether the next chunk may be written as fresh."""
    sql = _Sql(store, section)
    stored = {} if fresh else sql.read(store, [row[0] for row in values])
    added: list[tuple[Any, ...]] = []
    changed: list[tuple[Any, ...]] = []
    if not stored:  # a first import: every row is new, nothing to compare
        added = list(values)
    else:
        to_driver, vouched = sql.driver, store.record is not None
        for row in values:
            found = stored.get(row[0])
            if found is None:
                added.append(row)
            elif (
                vouched
                and (found[-1] is None or (superseded is not None and found[-1] < superseded))
            ) or not sql.same(found, to_driver(row)[:-2], row):
                changed.append(row)
    if count_unchanged:
        report.unchanged[section] += len(values) - len(added) - len(changed)
    if not added and not changed:
        return fresh
    writing = added + changed
    indexes: list[int | None] = [None] * len(writing)
    if store.record is not None:
        encoded = EncodedFacts(list(map(_ENCODE[section], writing)))
        indexes = list(store.record(_KINDS[section], encoded, source, by))
    try:
        _store_chunk(store, sql, section, stored, added, changed, indexes)
    except StoreConflict:
        if not fresh:
            raise
        # Another writer stored some of these ids after the section was found empty (the
        # insert broke the key; nothing of the chunk was written). Its entries are durable
        # and are the latest for each row whose entry came before them: write the chunk
        # again from a read, those rows included, ledgering anew what it then writes.
        first = min((i for i in indexes if i is not None), default=None)
        _write_chunk(
            store, section, values, source, by, report,
            count_unchanged=count_unchanged, superseded=first,
        )  # fmt: skip
        return False
    report.added[section] += len(added)
    report.changed[section] += len(changed)
    return fresh


def _store_chunk(
    store: DirectoryStore,
    sql: _Sql,
    section: str,
    stored: Mapping[str, tuple[Any, ...]],
    added: Sequence[tuple[Any, ...]],
    changed: Sequence[tuple[Any, ...]],
    indexes: Sequence[int | None],
) -> None:
    """Write one chunk's rows (their entries durable) in one transaction."""
    with store.db.cursor() as cursor:
        sql.begin(cursor)
        if changed:
            # Changed meanwhile by another writer (its auth_idx moved, or it is gone): this
            # chunk's entry no longer describes a change from what is stored.
            now = dict(_locked(cursor, sql, [row[0] for row in changed]))
            if any(now.get(row[0], -2) != stored[row[0]][-1] for row in changed):
                raise StoreConflict(
                    f"{_KINDS[section]}s changed while they were being imported",
                    hint="import again",
                )
        # SQLite: this transaction holds the database's one write lock (BEGIN IMMEDIATE), so
        # the counter can move first and the rows carry its value from the start. PostgreSQL:
        # rows first, then the counter, then the stamp (the lock order of DirectoryStore).
        version = _bump(cursor) if sql.sqlite else _UNSTAMPED
        # Each row made as the driver takes it: a generator, so that it is gone (and its
        # memory reused, in cache) once bound.
        to_driver, split = sql.driver, len(added)
        if len(indexes) != split + len(changed):
            raise ValueError("an index per row to write expected")
        new = map(to_driver, added, indexes[:split], [version] * split)
        if added and sql.sqlite:
            cursor.executemany(sql.insert, new)
        elif added:  # PostgreSQL: streamed in one COPY, not a statement per row
            cursor.copy_in(sql.table, sql.columns, new)
        if changed:
            moved = map(to_driver, changed, indexes[split:], [version] * len(changed))
            cursor.executemany(sql.update, ((*r[1:], r[0]) for r in moved))
        if not sql.sqlite:
            cursor.execute(sql.stamp, (_bump(cursor), _UNSTAMPED))


class _Sql:
    """The statements writing one section through a driver cursor, and its rows' values as
    the driver takes them (JSON as text, times as each backend stores them)."""

    def __init__(self, store: DirectoryStore, section: str) -> None:
        table = _TABLES[section]
        dialect = store.db.engine.dialect
        self.sqlite = store.db.is_sqlite
        names = COLUMNS[section]
        json_slot = "?" if self.sqlite else "CAST(? AS json)"
        slots = [json_slot if n in _JSON else "?" for n in names]
        self.insert = (
            f"INSERT INTO {table.name} ({', '.join(names)}, auth_idx, seq) "  # noqa: S608
            f"VALUES ({', '.join(slots)}, ?, ?)"
        )
        sets = ", ".join(f"{n} = {slot}" for n, slot in zip(names[1:], slots[1:], strict=True))
        self.update = f"UPDATE {table.name} SET {sets}, auth_idx = ?, seq = ? WHERE id = ?"  # noqa: S608
        self.lock = (
            f"SELECT id, auth_idx FROM {table.name} WHERE id = ?"  # noqa: S608
            + ("" if self.sqlite else " FOR UPDATE")
        )
        self.select = f"SELECT {', '.join(names)}, auth_idx FROM {table.name} WHERE id IN "  # noqa: S608
        self.names = (*names, "auth_idx")
        self.table, self.columns = table.name, (*names, "auth_idx", "seq")
        self.stamp = f"UPDATE {table.name} SET seq = ? WHERE seq = ?"  # noqa: S608
        times = {
            name: _time_for(table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
            if name in _TIMES
        }
        #: A spooled row's columns as the driver takes them (a tuple). Written out per
        #: section, as it runs for every row (tests/directory/test_bulk.py holds the rows
        #: written to org load's).
        self.driver: _Driver = _DRIVER[section](times)

    def read(self, store: DirectoryStore, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        """The stored rows of ``keys`` (those there are), by id, as the driver gives them:
        their columns in :data:`COLUMNS` order, then ``auth_idx``."""
        found: dict[str, tuple[Any, ...]] = {}
        with store.db.cursor() as cursor:
            for at in range(0, len(keys), BATCH):
                part = keys[at : at + BATCH]
                for raw in cursor.execute(self.select + f"({', '.join('?' * len(part))})", part):
                    found[raw[0]] = tuple(raw)
        return found

    def same(self, stored: Sequence[Any], row: Sequence[Any], spooled: Sequence[Any]) -> bool:
        """Whether a stored row (from :meth:`read`) holds the values of ``row`` (its
        ``spooled`` row's columns as the driver takes them). Equal driver values are the
        same; JSON read back as other text or as objects (PostgreSQL's driver decodes it)
        is compared decoded with the spooled value (lists and objects: nothing to decode),
        links stored as NULL reading as none, as :meth:`DirectoryStore.merge` compares
        them."""
        if tuple(stored[:-1]) == tuple(row):
            return True
        for name, old, new, value in zip(self.names, stored, row, spooled, strict=False):
            if old == new:
                continue
            if name not in _JSON:
                return False
            if _decoded(name, old) != _decoded(name, value):
                return False
        return True

    def begin(self, cursor: HotCursor) -> None:
        # SQLite: take the write lock now, so that the check below and the writes are one
        # atomic step (the driver would begin only at the first write).
        if self.sqlite:
            cursor.execute("BEGIN IMMEDIATE")


_JSON = {"groups", "protected", "linked", "extra"}


#: A spooled row as the driver writes it: its columns in :data:`COLUMNS` order, then its
#: ``auth_idx`` and ``seq`` (given; None when only compared).
_Driver = Callable[..., tuple[Any, ...]]


# Empty lists and objects (most values) without a call: spooled rows hold lists and
# objects there, never None.
def _driver_principals(times: Mapping[str, Any]) -> _Driver:
    json_text, role_since = _json_text, times["role_since"]
    return lambda r, index=None, version=None: (
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json_text(r[8]) if r[8] else "[]",
        role_since(r[9]), json_text(r[10]) if r[10] else "{}", index, version,
    )  # fmt: skip


def _driver_subjects(times: Mapping[str, Any]) -> _Driver:
    json_text = _json_text
    return lambda r, index=None, version=None: (
        r[0], r[1], r[2], json_text(r[3]) if r[3] else "[]", r[4],
        json_text(r[5]) if r[5] else "[]", r[6], json_text(r[7]) if r[7] else "{}",
        index, version,
    )  # fmt: skip


def _driver_tickets(times: Mapping[str, Any]) -> _Driver:
    json_text, opened, closed = _json_text, times["opened"], times["closed"]
    return lambda r, index=None, version=None: (
        r[0], r[1], r[2], r[3], r[4], opened(r[5]), closed(r[6]), r[7],
        json_text(r[8]) if r[8] else "{}", index, version,
    )  # fmt: skip


#: Per section, given each time column's conversion: a spooled row as the driver takes it.
_DRIVER: dict[str, Callable[[Mapping[str, Any]], _Driver]] = {
    "principals": _driver_principals,
    "subjects": _driver_subjects,
    "tickets": _driver_tickets,
}


def _texts(items: list[str]) -> str:
    if type(items) is not list:
        raise TypeError(f"a list of strings expected, not {type(items).__name__}")
    return "[" + ",".join(map(_text, items)) + "]" if items else "[]"


#: Per section: the canonical JSON (RFC 8785) of the facts a spooled row sets, written out
#: with the keys in order and each value's JSON form as the general encoder gives it
#: (``encode_basestring`` is how it writes a string, which is JCS's form too): five times
#: faster than a dict per row through the ledger's encoder, with the same bytes
#: (tests/directory/test_bulk.py holds them equal to ``canonical_json`` of
#: :data:`_FACTS_OF`). A value of another type than the facts have raises TypeError. None
#: and empty lists, most values, are written without a call.
_ENCODE: dict[str, Callable[[Sequence[Any]], str]] = {
    "principals": lambda r: (
        f'{{"country":{_text(r[6])},'
        f'"groups":{"[]" if r[8] == [] else _texts(r[8])},'
        f'"id":{_text(r[0])},'
        f'"kind":{_text(r[2])},'
        f'"manager":{"null" if r[5] is None else _text(r[5])},'
        f'"role":{_text(r[3])},'
        f'"role_since":{"null" if r[9] is None else _text(r[9])},'
        f'"status":{_text(r[7])},'
        f'"team":{_text(r[4])}}}'
    ),
    "subjects": lambda r: (
        f'{{"employee":{"null" if r[4] is None else _text(r[4])},'
        f'"id":{_text(r[0])},'
        f'"jurisdiction":{_text(r[1])},'
        f'"link_group":{"null" if r[6] is None else _text(r[6])},'
        f'"linked":{"[]" if r[5] == [] else _texts(r[5])},'
        f'"protected":{"[]" if r[3] == [] else _texts(r[3])}}}'
    ),
    "tickets": lambda r: (
        f'{{"assignee":{_text(r[3])},'
        f'"closed":{"null" if r[6] is None else _text(r[6])},'
        f'"id":{_text(r[0])},'
        f'"kind":{_text(r[1])},'
        f'"opened":{"null" if r[5] is None else _text(r[5])},'
        f'"opened_by":{"null" if r[7] is None else _text(r[7])},'
        f'"status":{_text(r[4])},'
        f'"subject":{_text(r[2])}}}'
    ),
}

#: Per section: the facts a spooled row sets (``Principal.facts`` and friends: the same
#: names, the same values, since spooled rows hold times as ISO text and lists as lists), by
#: position in :data:`COLUMNS`. What :data:`_ENCODE` writes out, and is tested against.
_FACTS_OF: dict[str, Callable[[Sequence[Any]], dict[str, Any]]] = {
    "principals": lambda r: {
        "id": r[0], "kind": r[2], "role": r[3], "team": r[4], "manager": r[5],
        "country": r[6], "status": r[7], "groups": r[8], "role_since": r[9],
    },
    "subjects": lambda r: {
        "id": r[0], "jurisdiction": r[1], "protected": r[3], "employee": r[4],
        "linked": r[5], "link_group": r[6],
    },
    "tickets": lambda r: {
        "id": r[0], "kind": r[1], "subject": r[2], "assignee": r[3], "status": r[4],
        "opened": r[5], "closed": r[6], "opened_by": r[7],
    },
}  # fmt: skip


def _time_for(bind: Any) -> Any:
    def convert(text: str | None) -> Any:
        if text is None:
            return None
        moment = datetime.fromisoformat(text)
        return moment if bind is None else bind(moment)

    return convert


def _decoded(name: str, value: Any) -> Any:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or ()) if name == "linked" else value


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value)


def _locked(cursor: HotCursor, sql: _Sql, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    found: list[tuple[Any, ...]] = []
    for key in keys:
        found.extend(cursor.execute(sql.lock, (key,)))
    return found


def _bump(cursor: HotCursor) -> int:
    """:meth:`DirectoryStore._bump` through a driver cursor: move the version counter by
    one, after this transaction's row writes, and return the new version."""
    moved = cursor.execute(
        "UPDATE directory_version SET version = version + 1 WHERE id = 1 RETURNING version"
    )
    if moved:
        return int(moved[0][0])
    cursor.execute("INSERT INTO directory_version (id, version) VALUES (1, 1)")
    return 1


def _prune(
    store: DirectoryStore,
    plan: _Plan,
    source: str,
    by: Mapping[str, Any] | None,
    report: ImportReport,
) -> None:
    """Remove the planned rows, tickets first (they name subjects and principals)."""
    for section in ("tickets", "subjects", "principals"):
        keys = plan.removals[section]
        table = _TABLES[section]
        for at in range(0, len(keys), CHUNK):
            chunk = keys[at : at + CHUNK]
            if store.record is not None:
                store.record(
                    _KINDS[section], [{"id": k, "removed": True} for k in chunk], source, by
                )
            with store.db.cursor() as cursor:
                cursor.executemany(f"DELETE FROM {table.name} WHERE id = ?", [(k,) for k in chunk])  # noqa: S608
                _bump(cursor)
            report.removed[section] += len(chunk)


def plan_prune(store: DirectoryStore, document: DirectoryDocument, source: str) -> PrunePlan:
    """What ``custos org load --prune`` removes: in each section ``document`` holds, the
    stored rows it does not hold. Raises :class:`ValidationFailed` (nothing planned) when
    the document names a row of such a section that only the store holds (it would be
    removed), or a kept row would name a removed one; :class:`StoreUnavailable`."""
    plan = _Plan()
    for section in SECTIONS:
        plan.ids[section] = {value.id: n for n, value in enumerate(getattr(document, section))}
    pruned = {section for section in SECTIONS if plan.ids[section]}
    problems: list[str] = []
    references = [
        *(("principals", "principals", n, p.id, "manager", p.manager)
          for n, p in enumerate(document.principals)),
        *(("subjects", "principals", n, s.id, "employee", s.employee)
          for n, s in enumerate(document.subjects)),
        *(("subjects", "subjects", n, s.id, "linked", other)
          for n, s in enumerate(document.subjects) for other in s.linked),
        *(("tickets", "principals", n, t.id, "assignee", t.assignee)
          for n, t in enumerate(document.tickets)),
        *(("tickets", "subjects", n, t.id, "subject", t.subject)
          for n, t in enumerate(document.tickets)),
    ]  # fmt: skip
    for section, target, position, key, name, other in references:
        if other is not None and target in pruned and other not in plan.ids[target]:
            problems.append(
                f"{source}: {section}[{position}] (id {key!r}): field '{name}': "
                f"{_KINDS[target]} {other!r} is not in the file, and --prune removes it"
            )
    with store.db.session() as session:
        _plan_removals(session, plan, pruned, source, problems.append)
    if problems:
        raise ValidationFailed(
            f"{source}: {len(problems)} problem(s); nothing was loaded", problems
        )
    return PrunePlan(plan)


@dataclass(frozen=True)
class PrunePlan:
    """The rows :func:`plan_prune` found to remove; :meth:`apply` removes them."""

    _plan: _Plan

    @property
    def removals(self) -> dict[str, list[str]]:
        return self._plan.removals

    def apply(
        self, store: DirectoryStore, source: str, by: Mapping[str, Any] | None = None
    ) -> dict[str, int]:
        """Remove the planned rows, each ledgered first as a removal; the count per section.
        Raises :class:`LedgerUnavailable` and :class:`StoreUnavailable` (the chunks removed
        so far stay removed, each ledgered)."""
        report = ImportReport(lines=0)
        with store._write_lock:
            try:
                _prune(store, self._plan, f"org load --prune: {source}", by, report)
            finally:
                store.invalidate()
        return report.removed


def write_lines(path: Path, entries: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Write ``entries`` (per section, entries as in a directory file) as directory lines."""
    with path.open("w", encoding="utf-8") as out:
        for section in SECTIONS:
            for entry in entries.get(section, ()):
                out.write(json.dumps({SINGULAR[section]: dict(entry)}, default=str) + "\n")
