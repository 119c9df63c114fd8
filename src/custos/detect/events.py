"""Access events (DESIGN.md, *Access events*): parsing JSON Lines and the event store.

An import takes the whole file or nothing: every bad line is reported by number and field
(never with its value, which may be personal data), unless a rejects file is named, in which
case bad lines are set aside there and the good ones stored. Events already stored (same id)
are left as they are, so importing a file twice changes nothing.
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    model_validator,
)
from sqlalchemy import CursorResult, func, insert, select, text, update
from sqlalchemy.orm import Session

from custos.directory.files import Id
from custos.errors import ValidationFailed
from custos.store import Database, WrittenRows
from custos.store.events import AccessEventRow, EventSequenceRow

# Ids follow the directory's rule: an event names its principal, subject and ticket by them.
from custos.textfiles import check_plain_json, strict_json, write_rejects
from custos.timefields import UtcTime
from custos.times import iso
from custos.vocabulary import DEFAULT_VOCABULARY, Action, Outcome, Precision, Vocabulary

MAX_LINE = 64 * 1024
_CHUNK = 500
FIELDS = (
    "id",
    "time",
    "principal",
    "action",
    "subject",
    "category",
    "purpose",
    "ticket",
    "decision",
    "precision",
    "records",
    "source",
)


Time = UtcTime
#: A category or purpose: a word of the active pack's vocabulary (checked on import, by
#: :func:`parse_event`; an event stored under an earlier pack stays readable).
Word = Annotated[str, Field(min_length=1, max_length=64)]


class AccessEvent(BaseModel):
    """One access event. Unknown fields are kept (``model_extra``) and stored in ``extra``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Id
    time: Time
    principal: Id
    action: Action
    subject: Id
    category: Word
    purpose: Word
    ticket: Id | None = None
    decision: Outcome
    # Custos's own deny decisions carry no precision, so null is accepted.
    precision: Precision | None = None
    # At most JSON's largest exact integer: every store and reader holds it.
    records: Annotated[StrictInt, Field(ge=0, le=2**53)] | None = None
    source: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _plain_extras(self) -> AccessEvent:
        check_plain_json(self.model_extra or {})
        return self

    def extras(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def to_dict(self) -> dict[str, Any]:
        """The event in the DESIGN.md JSON shape (absent optional fields left out)."""
        body: dict[str, Any] = {
            "id": self.id,
            "time": iso(self.time),
            "principal": self.principal,
            "action": self.action,
            "subject": self.subject,
            "category": self.category,
            "purpose": self.purpose,
            "decision": self.decision,
            "precision": self.precision,
        }
        for key in ("ticket", "records", "source"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body.update(self.extras())
        return body


def _describe(err: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "(event)"
    if err["type"] == "missing":
        return f"field '{field}': missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"field '{field}': {message}"


@dataclass(frozen=True, slots=True)
class ParsedEvents:
    """The good events of a file and its bad lines as ``(line number, problem)``."""

    events: list[AccessEvent]
    rejected: list[tuple[int, str]]


def parse_event(data: Any, vocabulary: Vocabulary | None = None) -> AccessEvent:
    """Validate one decoded event; with ``vocabulary``, its category and purpose must be
    words of it. Raises :class:`ValidationFailed` naming every bad field."""
    if not isinstance(data, Mapping):
        raise ValidationFailed("not an access event", ["must be a JSON object"])
    try:
        event = AccessEvent.model_validate(dict(data))
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise ValidationFailed("not a valid access event", problems) from None
    if vocabulary is not None:
        problems = [
            f"field '{name}': {vocabulary.unknown(name, getattr(event, name))}"
            for name in ("category", "purpose")
            if not vocabulary.knows(name, getattr(event, name))
        ]
        if problems:
            raise ValidationFailed("not a valid access event", problems)
    return event


def parse_lines(
    lines: Sequence[str], source: str, vocabulary: Vocabulary | None = None
) -> ParsedEvents:
    """Validate every line of a JSON Lines file (against ``vocabulary``, when given, the
    active pack's words); blank lines are skipped.

    Never raises for bad content: each bad line becomes ``(number, "SOURCE: line N: …")``.
    """
    events: list[AccessEvent] = []
    rejected: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}: line {number}"
        if len(line) > MAX_LINE:
            rejected.append((number, f"{where}: longer than {MAX_LINE} bytes"))
            continue
        try:
            data = strict_json(line)
        except (ValueError, RecursionError):
            rejected.append((number, f"{where}: not valid JSON"))
            continue
        try:
            event = parse_event(data, vocabulary)
        except ValidationFailed as exc:
            rejected.append((number, f"{where}: {'; '.join(exc.problems)}"))
            continue
        if event.id in seen:
            rejected.append((number, f"{where}: duplicate id (first on line {seen[event.id]})"))
            continue
        seen[event.id] = number
        events.append(event)
    return ParsedEvents(events, rejected)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: events added, already present (same id) and set aside."""

    added: int
    unchanged: int
    rejected: int


@dataclass(frozen=True, slots=True)
class ChangedRows:
    """What :meth:`EventStore.write_changes` wrote, and the change sequence as it stood in
    the same snapshot: the store's identity (``store``; another identity means another
    database, so a copy of the old one is no base for changes), how many events it holds
    (``count``) and the highest number handed out (``high``; pass it as ``after`` next
    time)."""

    rows: WrittenRows
    store: str
    count: int
    high: int


#: What the guarded path writes in ``explained`` (see
#: :func:`custos.policy.model.ticket_explanation`).
EXPLANATIONS = frozenset({"ticket", "own_ticket"})


def _explained(event: AccessEvent) -> str | None:
    """The guarded path's explanation of one of its own decisions, as its ledger entry gives
    it (``explained``: ``ticket`` or ``own_ticket``), or None.

    Only for an allowed decision that cites a ticket and is neither an export nor
    break-glass: detection does not check such an access against the tickets again, so
    nothing else may claim it.
    """
    extra = event.model_extra or {}
    explained = extra.get("explained")
    routine = (
        extra.get("type") == "decision"
        and explained in EXPLANATIONS
        and event.decision == "allow"
        and event.ticket is not None
        and event.action != "export"
        and extra.get("break_glass") is not True
    )
    return str(explained) if routine else None


def _row(event: AccessEvent, *, from_ledger: bool = False) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.time,
        "principal": event.principal,
        "action": event.action,
        "subject": event.subject,
        "category": event.category,
        "purpose": event.purpose,
        "ticket": event.ticket,
        "decision": event.decision,
        "precision": event.precision,
        "records": event.records,
        "source": event.source,
        "extra": event.extras(),
        "explained": _explained(event) if from_ledger else None,
    }


class EventStore:
    """The access events custos knows: imported from other tools' logs and its own."""

    def __init__(self, db: Database, *, vocabulary: Callable[[], Vocabulary] | None = None) -> None:
        """``vocabulary`` gives the active pack's words, which imported events must use
        (default: the shipped pack's)."""
        self.db = db
        self.vocabulary = vocabulary or (lambda: DEFAULT_VOCABULARY)

    def append(
        self, events: Iterable[AccessEvent | Mapping[str, Any]], *, from_ledger: bool = False
    ) -> ImportReport:
        """Store events given as :class:`AccessEvent` or as dicts in the DESIGN.md event
        format (the way the guarded path feeds its own decisions and reads in).

        Custos's own ledger entries can be passed as they are: a decision entry is one access;
        a release entry (``type`` ``release`` with a ``decision_id``) is folded into its
        decision — its ``records`` count is copied there and it is not counted as a second
        access by the rules. ``from_ledger`` says that the events are entries of custos's own
        ledger: only then is a decision's ``explained`` field (what the guarded path checked
        when it decided) taken as the event's explanation. From anywhere else it is kept as an
        extra field and explains nothing, so an imported event cannot excuse itself.

        All or nothing: raises :class:`ValidationFailed` listing every bad event (by position
        and field) and stores none. Events whose id is already stored are skipped.

        Every row stored or changed takes the next number of the change sequence (see
        :meth:`write_changes`). Writers take turns, holding the sequence's row from their
        first statement to commit, so they commit in the order of their numbers.
        """
        parsed: list[AccessEvent] = []
        problems: list[str] = []
        # The guarded path's own entries were checked against the pack when decided.
        words = None if from_ledger else self.vocabulary()
        for position, item in enumerate(events):
            if isinstance(item, AccessEvent):
                parsed.append(item)
                continue
            try:
                parsed.append(parse_event(item, words))
            except ValidationFailed as exc:
                problems.extend(f"event {position}: {p}" for p in exc.problems)
        if problems:
            raise ValidationFailed(f"{len(problems)} problem(s); nothing was stored", problems)
        added, unchanged = self._store(parsed, from_ledger=from_ledger)
        return ImportReport(added, unchanged, 0)

    def import_lines(
        self, lines: Sequence[str], source: str, *, rejects: Path | None = None
    ) -> ImportReport:
        """Import JSON Lines, all or nothing (see the module docstring).

        Raises :class:`ValidationFailed` listing every bad line unless ``rejects`` is given;
        then bad lines are written there (mode 0600) and the rest stored.
        """
        parsed = parse_lines(lines, source, self.vocabulary())
        if parsed.rejected and rejects is None:
            raise ValidationFailed(
                f"{source}: {len(parsed.rejected)} bad line(s); nothing was stored",
                [problem for _, problem in parsed.rejected],
                hint="fix them, or pass --rejects FILE to set them aside",
            )
        if rejects is not None and parsed.rejected:
            write_rejects(rejects, [n for n, _ in parsed.rejected], lines)
        added, unchanged = self._store(parsed.events)
        return ImportReport(added, unchanged, len(parsed.rejected))

    def _store(self, events: list[AccessEvent], *, from_ledger: bool = False) -> tuple[int, int]:
        """Store the events not stored yet, all or nothing; returns (added, already stored).

        Every row stored or changed takes the next number of the change sequence (see
        :meth:`write_changes`): each new row, a decision a release's count is folded into,
        and a release stored before its decision, which is folded from now on. Raises
        :class:`ValidationFailed` when an id is stored as a different access.
        """
        unique: dict[str, AccessEvent] = {}
        for event in events:
            unique.setdefault(event.id, event)
        ids = list(unique)
        with self.db.session() as session:
            last = _lock_sequence(session)
            existing = _stored(session, ids)
            # Something stored is never changed by an import: an id seen again must be the
            # same event, or the whole import is refused.
            clashes = [
                f"event {key!r} is stored already as a different access"
                for key, row in existing.items()
                if not _same_event(row, _row(unique[key]))
            ]
            if clashes:
                raise ValidationFailed(
                    f"{len(clashes)} event id(s) already stored differently; nothing was stored",
                    clashes,
                )
            rows = [
                _row(e, from_ledger=from_ledger) for key, e in unique.items() if key not in existing
            ]
            # Releases stored before their decision, which is among the new rows: folded
            # from now on (one in this import is found among ``existing``).
            releases = existing | _stored(
                session,
                [f"{row['id']}:release" for row in rows if f"{row['id']}:release" not in unique],
            )
            # When custos learned of each access, for time-to-alert: a decision of its own
            # when it was decided (the ledger feed copies it later), anything else now.
            arrived = datetime.now(UTC)
            for row in rows:
                last += 1
                row["seq"] = last
                row["arrived"] = min(row["time"], arrived) if from_ledger else arrived
            for start in range(0, len(rows), 2000):
                session.execute(insert(AccessEventRow), rows[start : start + 2000])
            for row in rows:
                decision_id = _release_of(row["id"], row["extra"])
                if decision_id is not None and row["records"] is not None:
                    # Folded only into its own decision (same person, subject and
                    # category), and only while that decision has no count of its own.
                    statement = (
                        update(AccessEventRow)
                        .where(
                            AccessEventRow.id == decision_id,
                            AccessEventRow.principal == row["principal"],
                            AccessEventRow.subject == row["subject"],
                            AccessEventRow.category == row["category"],
                            AccessEventRow.records.is_(None),
                        )
                        .values(records=row["records"], seq=last + 1)
                    )
                    # An UPDATE's result is a cursor result (the ORM types it as any result).
                    folded = cast("CursorResult[Any]", session.execute(statement))
                    last += folded.rowcount
                release = releases.get(f"{row['id']}:release")
                if release is not None and _folds_into(release, row):
                    # Left out of detection from now on: a copy of the events must learn
                    # that it is gone.
                    last += 1
                    session.execute(
                        update(AccessEventRow)
                        .where(AccessEventRow.id == release.id)
                        .values(seq=last)
                    )
            if rows:
                session.execute(
                    update(EventSequenceRow)
                    .where(EventSequenceRow.id == 1)
                    .values(value=last, rows=EventSequenceRow.rows + len(rows))
                )
        return len(rows), len(events) - len(rows)

    def count(self) -> int:
        with self.db.session() as session:
            return int(session.scalar(select(func.count()).select_from(AccessEventRow)) or 0)

    def per_day(self, days: Sequence[date]) -> dict[date, dict[str, int]]:
        """How many events each UTC day of ``days`` holds, by decision (one indexed count a
        day, so the dashboard never loads the events themselves)."""
        found: dict[date, dict[str, int]] = {}
        with self.db.session() as session:
            for day in days:
                start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                rows = session.execute(
                    select(AccessEventRow.decision, func.count())
                    .where(
                        AccessEventRow.time >= start,
                        AccessEventRow.time < start + timedelta(days=1),
                    )
                    .group_by(AccessEventRow.decision)
                )
                found[day] = {decision: int(n) for decision, n in rows}
        return found

    def get(self, ids: Sequence[str]) -> list[AccessEvent]:
        """The stored events among ``ids``, in time order (unknown ids are left out)."""
        with self.db.session() as session:
            found = [_event(row) for row in _stored(session, ids).values()]
        return sorted(found, key=lambda e: (e.time, e.id))

    def search(
        self,
        *,
        principal: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> list[AccessEvent]:
        """Events matching every filter given, newest first, at most ``limit``."""
        query = select(AccessEventRow).order_by(AccessEventRow.time.desc()).limit(limit)
        if principal is not None:
            query = query.where(AccessEventRow.principal == principal)
        if subject is not None:
            query = query.where(AccessEventRow.subject == subject)
        if since is not None:
            query = query.where(AccessEventRow.time >= since)
        if until is not None:
            query = query.where(AccessEventRow.time < until)
        with self.db.session() as session:
            return [_event(row) for row in session.scalars(query)]

    def write_rows(self, path: Path) -> WrittenRows:
        """Write every event for DuckDB to load (:meth:`Database.write_rows`), in one
        consistent snapshot of the store: the columns of
        :data:`custos.detect.tables.EVENT_COLUMNS` in order (times as UTC
        ``YYYY-MM-DD HH:MM:SS.ffffff``; ``break_glass`` and ``granted`` read from ``extra``
        as the strings ``true``/``false``; ``explained`` as stored), custos releases left
        out (folded into their decisions, see :meth:`append`). Raises :class:`StoreUnavailable`.

        The database does the work: every stored event passes through here on each detection
        run, and making each one a Python object cost ~20 µs an event (over three minutes for
        ten million, against seconds for the rules).
        """
        return self.db.write_rows(path, sqlite=_EXPORT_SQLITE, postgresql=_EXPORT_POSTGRESQL)

    def write_changes(self, path: Path, after: int) -> ChangedRows:
        """Write every row changed after number ``after`` of the change sequence (stored or
        changed since: see :meth:`append`) for DuckDB to load, as :meth:`write_rows` writes
        (:meth:`Database.write_rows` formats, the columns of
        :data:`custos.detect.tables.EVENT_COLUMNS` in order) with two more columns: ``seq``,
        the row's number (an integer), and ``folded``, the string ``true`` for a custos
        release folded into its stored decision (a row :meth:`write_rows` leaves out; it is
        written here so that a copy can drop it), else ``false``.

        The rows, and the sequence's identity, event count and highest number returned with
        them, are read in one snapshot: a copy holding every row up to ``high`` that applies
        these rows (by id) holds every row up to the new ``high``, since writers commit in
        the order of their numbers (see :meth:`append`). ``after`` 0 writes every row.
        Raises :class:`StoreUnavailable`, and :class:`OSError` when ``path`` cannot be
        written.
        """
        after = operator.index(after)
        with self.db.cursor(snapshot=True) as cursor:
            found = cursor.execute("SELECT store, rows, value FROM event_sequence WHERE id = 1")
            if found:
                store, count, high = found[0]
            else:
                # Deleted (the next write makes it again, under a new identity): a copy made
                # now is of no store a later one can continue.
                store = ""
                count, high = cursor.execute(
                    "SELECT count(*), coalesce(max(seq), 0) FROM access_events"
                )[0]
            # Most rows changed (a first copy): reading the table through beats one index
            # lookup per row.
            scan = (int(high) - after) * 2 > int(count)
            written = cursor.write_rows(
                path,
                sqlite=_export_sql("sqlite", after=after, scan=scan),
                postgresql=_export_sql("postgresql", after=after, scan=scan),
            )
        return ChangedRows(written, str(store), int(count), int(high))


# What the exports select, per backend (:func:`_export_sql`). ``extra`` is the JSON object of
# the fields the format does not name: ``break_glass`` counts only as JSON true, ``grant`` when
# truthy (as in Python), and a custos release (see :func:`_release_of`) whose decision is
# stored, for the same principal, subject and category, was folded into that decision
# (``_FOLDED``); any other event that calls itself a release counts as the access it records.
# SQLite keeps times as UTC text in exactly the format wanted; its ``json_array`` is the
# fastest way it has to write text that quotes anything safely.
_COLUMNS = {
    "sqlite": """
    id, time, principal, action, subject, category, purpose, ticket, decision, precision,
    records, source,
    CASE WHEN json_type(extra, '$.break_glass') = 'true' THEN 'true' ELSE 'false' END,
    CASE WHEN CASE json_type(extra, '$.grant')
                   WHEN 'true' THEN 1
                   WHEN 'text' THEN json_extract(extra, '$.grant') <> ''
                   WHEN 'integer' THEN json_extract(extra, '$.grant') <> 0
                   WHEN 'real' THEN json_extract(extra, '$.grant') <> 0
                   WHEN 'array' THEN json_array_length(extra, '$.grant') > 0
                   WHEN 'object' THEN json_extract(extra, '$.grant') <> '{}'
                   ELSE 0 END
         THEN 'true' ELSE 'false' END,
    explained""",
    "postgresql": """
       id, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), principal, action,
       subject, category, purpose, ticket, decision, precision, records, source,
       CASE WHEN json_typeof(extra -> 'break_glass') = 'boolean'
                 AND (extra ->> 'break_glass')::boolean THEN 'true' ELSE 'false' END,
       CASE WHEN CASE json_typeof(extra -> 'grant')
                      WHEN 'boolean' THEN (extra ->> 'grant')::boolean
                      WHEN 'string' THEN extra ->> 'grant' <> ''
                      WHEN 'number' THEN (extra ->> 'grant')::numeric <> 0
                      WHEN 'array' THEN json_array_length(extra -> 'grant') > 0
                      WHEN 'object' THEN EXISTS (SELECT FROM json_object_keys(extra -> 'grant'))
                      ELSE false END
            THEN 'true' ELSE 'false' END,
       explained""",
}
_FOLDED = {
    "sqlite": """coalesce(json_extract(extra, '$.type') = 'release'
                   AND json_type(extra, '$.decision_id') = 'text'
                   AND id = json_extract(extra, '$.decision_id') || ':release'
                   AND EXISTS (SELECT 1 FROM access_events d
                               WHERE d.id = json_extract(e.extra, '$.decision_id')
                                 AND d.principal = e.principal AND d.subject = e.subject
                                 AND d.category = e.category), 0)""",
    "postgresql": """coalesce(extra ->> 'type' = 'release'
                   AND json_typeof(extra -> 'decision_id') = 'string'
                   AND id = (extra ->> 'decision_id') || ':release'
                   AND EXISTS (SELECT FROM access_events d
                               WHERE d.id = e.extra ->> 'decision_id'
                                 AND d.principal = e.principal AND d.subject = e.subject
                                 AND d.category = e.category), false)""",
}


def _export_sql(backend: str, *, after: int | None = None, scan: bool = False) -> str:
    """The export query for ``backend`` (``sqlite``: one ``json_array`` per row;
    ``postgresql``: the columns): without ``after``, every event but folded releases (what
    :meth:`EventStore.write_rows` writes); with it, every row numbered above ``after``,
    folded releases included, followed by ``seq`` and ``folded`` (``'true'``/``'false'``).
    ``scan`` keeps SQLite from reading the rows through the index on ``seq`` (for when most
    of them are wanted: one lookup in the table per row is slower than reading it through).
    """
    if after is None:
        columns = _COLUMNS[backend]
        where = f"NOT {_FOLDED[backend]}"
    else:
        columns = (
            f"{_COLUMNS[backend]}, seq, CASE WHEN {_FOLDED[backend]} THEN 'true' ELSE 'false' END"
        )
        # An int, so nothing but digits goes into the text (COPY takes no parameters).
        where = f"{'+' if scan and backend == 'sqlite' else ''}seq > {operator.index(after)}"
    if backend == "sqlite":
        columns = f"json_array({columns})"
    return f"SELECT {columns}\nFROM access_events e\nWHERE {where}\n"


_EXPORT_SQLITE = _export_sql("sqlite")
_EXPORT_POSTGRESQL = _export_sql("postgresql")


def _stored(session: Session, ids: Sequence[str]) -> dict[str, AccessEventRow]:
    """The stored events among ``ids``, by id."""
    found: dict[str, AccessEventRow] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = select(AccessEventRow).where(AccessEventRow.id.in_(chunk))
        found.update((row.id, row) for row in session.scalars(query))
    return found


def _release_of(key: str, extra: Mapping[str, Any]) -> str | None:
    """The decision a custos release entry (stored as event ``key`` with ``extra``) says it
    belongs to, or None for any other event: type ``release``, and the id custos gives
    releases, ``<decision id>:release``."""
    decision_id = extra.get("decision_id")
    if (
        extra.get("type") == "release"
        and isinstance(decision_id, str)
        and key == f"{decision_id}:release"
    ):
        return decision_id
    return None


def _folds_into(release: AccessEventRow, decision: Mapping[str, Any]) -> bool:
    """Whether stored ``release`` is a custos release of ``decision`` (a row about to be
    stored) that detection leaves out once the decision is stored: as the exports' folded
    test (:func:`_export_sql`) decides it."""
    return _release_of(release.id, release.extra or {}) == decision["id"] and (
        release.principal,
        release.subject,
        release.category,
    ) == (decision["principal"], decision["subject"], decision["category"])


def _lock_sequence(session: Session) -> int:
    """Lock the change sequence's row for the rest of ``session``'s transaction and return
    its value, making the row first if it is missing.

    Run as the transaction's first statement, it serialises the writers of events: on
    PostgreSQL the row lock is held to commit, so they commit in the order of their numbers;
    on SQLite a write as the first statement takes the database's write lock before
    anything is read, so no writer reads a snapshot older than the last commit. A reader
    that has every row up to the value it saw therefore never misses a lower number
    committed later.
    """
    lock = (
        update(EventSequenceRow)
        .where(EventSequenceRow.id == 1)
        .values(value=EventSequenceRow.value)
        .returning(EventSequenceRow.value)
    )
    value = session.execute(lock).scalar_one_or_none()
    if value is None:
        # Only if the row was deleted (the migration makes it): carry on from the rows
        # stored, under a new identity, so that copies of the events start again. Two
        # writers may get here at once; the second one's insert does nothing.
        session.execute(
            text(
                "INSERT INTO event_sequence (id, value, rows, store) "
                "SELECT 1, coalesce(max(seq), 0), count(*), :store FROM access_events "
                "WHERE true ON CONFLICT (id) DO NOTHING"
            ),
            {"store": secrets.token_hex(16)},
        )
        value = session.execute(lock).scalar_one()
    return int(value)


_CORE = ("time", "principal", "action", "subject", "category", "purpose", "ticket", "decision")


def _same_event(stored: AccessEventRow, new: Mapping[str, Any]) -> bool:
    """Whether ``new`` is the event already stored under its id: the same access, and no
    other count or precision (a count folded in later from a release is no difference)."""
    # Times on both sides are aware (UTCDateTime, UtcTime), so they compare as instants.
    if any(getattr(stored, name) != new[name] for name in _CORE):
        return False
    if new["precision"] is not None and new["precision"] != stored.precision:
        return False
    return new["records"] is None or new["records"] == stored.records


def _event(row: AccessEventRow) -> AccessEvent:
    data = {name: getattr(row, name) for name in FIELDS}
    data = {k: v for k, v in data.items() if v is not None or k == "precision"}
    data.update(row.extra or {})
    return AccessEvent.model_validate(data)
