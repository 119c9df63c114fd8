"""The directory as stored in the custos database: idempotent merges and fast look-ups.

Merges are all-or-nothing: cross-references are checked against the file and the stored
directory together, and the whole document is written in one transaction. Look-ups are
cached per process and the cache is dropped whenever the directory's version counter
moves (checked at most every ``max_staleness`` seconds; a change made through this same
object is seen at once).

Every write moves the version counter once, at its end, and stamps each row it added or
changed with the version it created (``seq``); :meth:`DirectoryStore.write_changes` exports
the rows changed after a given version, for a copy of the directory kept between runs.

Why a reader never misses a row. Each write, in one transaction: writes its rows (``seq`` set
to :data:`_UNSTAMPED`), then increments the counter, then stamps its rows with the counter's
new value, then commits. So the rows stamped V commit together with the counter's move to V.
And the counter moves to V only after the write that moved it to V-1 has committed: on
PostgreSQL the increment's ``UPDATE`` waits for the row lock the previous increment holds to
its commit and then reads the committed value (READ COMMITTED); on SQLite a writer holds the
database's write lock from its first write to its commit. By induction, once a reader sees
version V committed, every row stamped V or less is committed and visible to any statement
it runs afterwards. A reader that reads the version V first, and then the rows with
``seq > last``, therefore gets every row changed in (last, V]; it may get rows stamped above
V too (committed in between), which it reads again next time from ``last = V``: duplicates,
never a gap. Rows are deleted only by :meth:`DirectoryStore.remove_subject` and
:meth:`DirectoryStore.remove_ticket` (a feed deleting a record) and by ``org import --prune``
(:mod:`custos.directory.bulk`), each after a tombstone entry in the ledger, and each moving
the counter too; :meth:`DirectoryStore.write_changes` does not report deletions, but a copy
that reads :meth:`DirectoryStore.write_ids` after it drops every row removed up to the version
it read (a removal that moved the counter to V committed before V was visible). Rows are
written before the increment in every write (never the other way round) so that two writers
always take their locks in the same order: rows, then the counter, and cannot deadlock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from custos.authority import Record, Vouch, tombstone
from custos.directory.model import DirectoryDocument, MergeReport, Principal, Subject, Ticket
from custos.errors import (
    AuthorityMismatch,
    CustosError,
    StoreConflict,
    UnknownPrincipal,
    UnknownSubject,
    UnknownTicket,
    ValidationFailed,
    shown_id,
)
from custos.store import Database, WrittenRows
from custos.store.directory import DirectoryVersionRow, PrincipalRow, SubjectRow, TicketRow

_CHUNK = 500
T = TypeVar("T")

_MODELS: dict[str, Any] = {
    "principals": PrincipalRow,
    "subjects": SubjectRow,
    "tickets": TicketRow,
}

#: ``seq`` of a row written by a transaction that has not yet moved the version counter. No
#: committed row ever has it: the same transaction stamps the row before it commits.
_UNSTAMPED = -1

#: Times as UTC text, in the format SQLite stores them (``%Y-%m-%d %H:%M:%S.%f``).
_UTC = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"

#: The directory's tables as detection reads them, per backend, for
#: :meth:`Database.write_rows`: ``(sqlite, postgresql)`` per table, columns in the order of
#: ``custos.detect.engine``'s ``*_COLUMNS``. SQLite writes one ``json_array`` per row with
#: times as the UTC text it stores; PostgreSQL writes the same values (times through
#: ``_UTC``); ``protected`` (a JSON list) becomes its flags joined by ``|`` (NULL when none).
#: ``{where}`` is where a filter goes: ``""`` for every row, or ``" WHERE seq > 41"``.
DIRECTORY_EXPORTS: dict[str, tuple[str, str]] = {
    "principals": (
        "SELECT json_array(id, kind, role, team, manager, country, status, role_since) "
        "FROM principals{where}",
        "SELECT id, kind, role, team, manager, country, status, "  # noqa: S608 - fixed names
        + _UTC.format("role_since")
        + " FROM principals{where}",
    ),
    "subjects": (
        "SELECT json_array(id, (SELECT group_concat(value, '|') FROM json_each(protected)), "
        "employee, link_group) FROM subjects{where}",
        "SELECT id, nullif(array_to_string(ARRAY(SELECT json_array_elements_text(protected)), "
        "'|'), ''), employee, link_group FROM subjects{where}",
    ),
    "tickets": (
        "SELECT json_array(id, kind, subject, assignee, status, opened, closed, opened_by) "
        "FROM tickets{where}",
        "SELECT id, kind, subject, assignee, status, "  # noqa: S608 - fixed names
        + _UTC.format("opened")
        + ", "
        + _UTC.format("closed")
        + ", opened_by FROM tickets{where}",
    ),
}


@dataclass(frozen=True)
class DirectoryChanges:
    """What :meth:`DirectoryStore.write_changes` wrote: the directory ``version`` read before
    the rows (the ``after`` to ask for next time), and per table the file of the rows changed
    after the version asked for (possibly some changed after ``version`` too)."""

    version: int
    principals: WrittenRows
    subjects: WrittenRows
    tickets: WrittenRows


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _principal(row: PrincipalRow) -> Principal:
    return Principal(
        id=row.id,
        name=row.name,
        kind=row.kind,
        role=row.role,
        team=row.team,
        country=row.country,
        status=row.status,
        manager=row.manager,
        groups=tuple(row.groups or ()),
        role_since=row.role_since,
        extra=dict(row.extra or {}),
        authority=row.auth_idx,
    )


def _subject(row: SubjectRow) -> Subject:
    return Subject(
        id=row.id,
        jurisdiction=row.jurisdiction,
        handle=row.handle,
        protected=tuple(row.protected or ()),
        employee=row.employee,
        linked=tuple(row.linked or ()),
        link_group=row.link_group,
        extra=dict(row.extra or {}),
        authority=row.auth_idx,
    )


def _ticket(row: TicketRow) -> Ticket:
    return Ticket(
        id=row.id,
        kind=row.kind,
        subject=row.subject,
        assignee=row.assignee,
        status=row.status,
        opened=row.opened,
        closed=row.closed,
        opened_by=row.opened_by,
        extra=dict(row.extra or {}),
        authority=row.auth_idx,
    )


def _columns(value: Principal | Subject | Ticket) -> dict[str, Any]:
    data = asdict(value)
    data.pop("authority", None)
    for key in ("groups", "protected", "linked"):
        if key in data:
            data[key] = list(data[key])
    return data


_KINDS = {"principals": "principal", "subjects": "subject", "tickets": "ticket"}


class DirectoryStore:
    """Principals, subjects and tickets in the database, with a version-checked cache.

    With ``record``, every write first ledgers the facts it sets (``authority`` entries) and
    stamps each row with the entry's index (``auth_idx``); with ``vouch``, every row is checked
    against that entry as it is loaded, and one that differs is never returned
    (:class:`AuthorityMismatch`). Without them (tools that build a throw-away directory) rows
    are neither ledgered nor checked.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_staleness: float = 1.0,
        vouch: Vouch | None = None,
        record: Record | None = None,
    ) -> None:
        self.db = db
        self.max_staleness = max_staleness
        self.vouch = vouch
        self.record = record
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._version: int | None = None
        self._checked_at = 0.0
        self._principals: dict[str, Principal] = {}
        self._subjects: dict[str, Subject] = {}
        self._tickets: dict[str, Ticket] = {}
        #: Per subject id, the other members of its link group (see :meth:`link_group`).
        self._groups: dict[str, tuple[Subject, ...]] = {}

    # -- writing -----------------------------------------------------------------------

    def merge(
        self,
        document: DirectoryDocument,
        source: str = "input",
        by: Mapping[str, Any] | None = None,
        *,
        feed: bool = False,
    ) -> MergeReport:
        """Upsert every entry of ``document``; idempotent (merging twice changes nothing).
        Its entries' ``source`` is ``org load: <source>``, or ``source`` itself from a
        ``feed`` (SCIM, the REST API, a ticket webhook), which names itself.

        When anything is added or changed, the directory version moves by one and exactly
        the rows added or changed are stamped with it (``seq``); otherwise neither moves.

        Links (``Subject.linked``): the document states the links of each subject it holds in
        full, and a link stated on either side links both. Each stored subject's links to the
        document's subjects follow the document; links between subjects the document does
        not hold are kept. Every row whose links or link group this changes is written (and
        ledgered) too, stored ones included, and counts as changed: linking A and B changes
        both rows, and may move a whole group to another ``link_group``.
        With ``record``, the facts of every added or changed row (and of every stored row
        custos never vouched for that the document states) are ledgered first, in batches,
        by ``by`` (who ran the load); a row is written only with the index of its entry.
        Raises :class:`ValidationFailed` (and writes nothing) when a ticket names a subject or
        assignee, or a subject links to a subject, that is neither in ``document`` nor
        already stored (or links to itself),
        :class:`LedgerUnavailable` (nothing written) when the facts cannot be ledgered, and
        :class:`StoreUnavailable` when the database fails.
        """
        if self.record is None:
            return self._merge(document, source, None)
        with self._write_lock:
            with self.db.session() as session:
                self._check_references(session, document, source)
                document = self._link(session, document)
                planned = {
                    section: [v for v, _ in self._diff(session, section, document)]
                    for section in _KINDS
                }
            vouched: dict[tuple[str, str], int] = {}
            for section, values in planned.items():
                indexes = self.record(
                    _KINDS[section],
                    [v.facts() for v in values],
                    source if feed else f"org load: {source}",
                    by,
                )
                vouched.update({(section, v.id): i for v, i in zip(values, indexes, strict=True)})
            # Only the planned rows are written (and compared again): a row another writer
            # changed in between that this load did not plan to touch keeps that change.
            only = DirectoryDocument(
                principals=tuple(planned["principals"]),  # type: ignore[arg-type]
                subjects=tuple(planned["subjects"]),  # type: ignore[arg-type]
                tickets=tuple(planned["tickets"]),  # type: ignore[arg-type]
            )
            sizes = {section: len(getattr(document, section)) for section in _KINDS}
            if not vouched:
                none = dict.fromkeys(_KINDS, 0)
                return MergeReport(added=none, changed=dict(none), unchanged=sizes)
            return self._merge(only, source, vouched, sizes)

    def _diff(
        self, session: Session, section: str, document: DirectoryDocument
    ) -> Iterator[tuple[Principal | Subject | Ticket, Any]]:
        """The values of ``section`` in ``document`` that add or change a stored row, each
        with that row (None when added). A row custos never vouched for counts as changed
        when this store records authority: loading it again is how it gets vouched for."""
        model = _MODELS[section]
        values: Sequence[Principal | Subject | Ticket] = getattr(document, section)
        for chunk in _chunks(list(values)):
            existing = {
                row.id: row
                for row in session.scalars(select(model).where(model.id.in_([r.id for r in chunk])))
            }
            for value in chunk:
                row = existing.get(value.id)
                if (
                    row is None
                    or (self.record is not None and row.auth_idx is None)
                    or any(_stored(row, k) != v for k, v in _columns(value).items())
                ):
                    yield value, row

    def _merge(
        self,
        document: DirectoryDocument,
        source: str,
        vouched: dict[tuple[str, str], int] | None,
        sizes: dict[str, int] | None = None,
    ) -> MergeReport:
        added = {"principals": 0, "subjects": 0, "tickets": 0}
        changed = dict(added)
        unchanged = dict(added)
        with self.db.session() as session:
            touched: list[Any] = []
            if vouched is None:  # else checked and linked when planned, with the whole document
                self._check_references(session, document, source)
                document = self._link(session, document)
            for section in _KINDS:
                model = _MODELS[section]
                for value, row in self._diff(session, section, document):
                    columns = _columns(value)
                    if vouched is not None:
                        # Only planned rows are in ``document`` then, each with its entry.
                        columns["auth_idx"] = vouched[(section, value.id)]
                    if row is None:
                        session.add(model(**columns, seq=_UNSTAMPED))
                        added[section] += 1
                    else:
                        for key, val in columns.items():
                            setattr(row, key, val)
                        row.seq = _UNSTAMPED
                        changed[section] += 1
                total = sizes[section] if sizes else len(getattr(document, section))
                unchanged[section] = total - added[section] - changed[section]
                if added[section] or changed[section]:
                    touched.append(model)
                session.flush()
            report = MergeReport(added=added, changed=changed, unchanged=unchanged)
            if report.total_changes:
                version = self._bump(session)
                # One statement per table through ix_<table>_seq. It finds this transaction's
                # rows only: no committed row is unstamped, and on PostgreSQL another
                # writer's uncommitted ones are invisible to it (and it never waits for them).
                for model in touched:
                    session.execute(
                        update(model).where(model.seq == _UNSTAMPED).values(seq=version),
                        execution_options={"synchronize_session": False},
                    )
        if report.total_changes:
            self.invalidate()
        return report

    def _check_references(self, session: Session, document: DirectoryDocument, source: str) -> None:
        problems: list[str] = []
        principal_ids = {p.id for p in document.principals}
        subject_ids = {s.id for s in document.subjects}
        # Managers and employees' own accounts too: a dangling one (a typo, a case variant)
        # would cut the management chain short or switch rule own-account off, silently.
        wanted_principals = {
            *(t.assignee for t in document.tickets),
            *(p.manager for p in document.principals if p.manager),
            *(s.employee for s in document.subjects if s.employee),
        } - principal_ids
        wanted_subjects = {
            *(t.subject for t in document.tickets),
            *(other for s in document.subjects for other in s.linked),
        } - subject_ids
        stored_principals = self._existing_ids(session, PrincipalRow, wanted_principals)
        stored_subjects = self._existing_ids(session, SubjectRow, wanted_subjects)
        unknown = wanted_principals - stored_principals
        for position, principal in enumerate(document.principals):
            if principal.manager in unknown:
                problems.append(
                    f"{source}: principals[{position}] (id {principal.id!r}): field 'manager': "
                    f"unknown principal {principal.manager!r}"
                )
        for position, subject in enumerate(document.subjects):
            if subject.employee in unknown:
                problems.append(
                    f"{source}: subjects[{position}] (id {subject.id!r}): field 'employee': "
                    f"unknown principal {subject.employee!r}"
                )
        for position, subject in enumerate(document.subjects):
            for other in subject.linked:
                if other == subject.id:
                    problems.append(
                        f"{source}: subjects[{position}] (id {subject.id!r}): field 'linked': "
                        "a subject cannot be linked to itself"
                    )
                elif other in wanted_subjects and other not in stored_subjects:
                    problems.append(
                        f"{source}: subjects[{position}] (id {subject.id!r}): field 'linked': "
                        f"unknown subject {other!r}"
                    )
        for position, ticket in enumerate(document.tickets):
            label = f"{source}: tickets[{position}] (id {ticket.id!r})"
            if ticket.assignee in wanted_principals and ticket.assignee not in stored_principals:
                problems.append(f"{label}: field 'assignee': unknown principal {ticket.assignee!r}")
            if ticket.subject in wanted_subjects and ticket.subject not in stored_subjects:
                problems.append(f"{label}: field 'subject': unknown subject {ticket.subject!r}")
        if problems:
            raise ValidationFailed(
                f"{source}: {len(problems)} problem(s); nothing was loaded", problems
            )

    def _link(self, session: Session, document: DirectoryDocument) -> DirectoryDocument:
        """``document`` with each subject's links made symmetric and its link group set, and
        with every stored subject whose links or group that changes (see :meth:`merge`).

        The stored link graph is read whole (the rows with a ``link_group``, through its
        index): links are few, and a group can only be re-drawn knowing all its members. A
        document and a directory without links cost one indexed query and nothing else.
        """
        stored: dict[str, tuple[tuple[str, ...], str | None]] = {
            key: (tuple(linked or ()), group)
            for key, linked, group in session.execute(
                select(SubjectRow.id, SubjectRow.linked, SubjectRow.link_group).where(
                    SubjectRow.link_group.is_not(None)
                )
            )
        }
        if not stored and not any(s.linked for s in document.subjects):
            return document
        links: dict[str, set[str]] = {key: set(linked) for key, (linked, _) in stored.items()}
        stated = {s.id for s in document.subjects}
        for key in stated:  # the document states these subjects' links in full
            for other in links.pop(key, set()):
                links.get(other, set()).discard(key)
        for subject in document.subjects:
            for other in subject.linked:
                links.setdefault(subject.id, set()).add(other)
                links.setdefault(other, set()).add(subject.id)
        groups = _components(links)

        def linked(key: str) -> tuple[tuple[str, ...], str | None]:
            return tuple(sorted(links.get(key, ()))), groups.get(key)

        subjects = [
            replace(s, linked=linked(s.id)[0], link_group=linked(s.id)[1])
            for s in document.subjects
        ]
        moved = sorted(
            key
            for key in set(stored) | set(links)
            if key not in stated and linked(key) != stored.get(key, ((), None))
        )
        for chunk in _chunks(moved):
            for row in session.scalars(select(SubjectRow).where(SubjectRow.id.in_(chunk))):
                subjects.append(
                    replace(_subject(row), linked=linked(row.id)[0], link_group=linked(row.id)[1])
                )
        return replace(document, subjects=tuple(subjects))

    @staticmethod
    def _existing_ids(session: Session, model: Any, ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(sorted(ids)):
            found.update(session.scalars(select(model.id).where(model.id.in_(chunk))))
        return found

    @staticmethod
    def _bump(session: Session) -> int:
        """Move the version counter by one, after this transaction's row writes (flushed
        first); returns the new version, which the commit publishes (see the module's
        docstring)."""
        session.flush()
        result = session.execute(
            update(DirectoryVersionRow)
            .where(DirectoryVersionRow.id == 1)
            .values(version=DirectoryVersionRow.version + 1)
        )
        if not getattr(result, "rowcount", 0):
            # The first write ever. Two at once on PostgreSQL: the second's insert waits for
            # the first's commit on the key, then fails (StoreConflict) and writes nothing.
            session.add(DirectoryVersionRow(id=1, version=1))
            session.flush()
            return 1
        # This transaction's own update: the value it wrote, not another writer's.
        return int(
            session.execute(
                select(DirectoryVersionRow.version).where(DirectoryVersionRow.id == 1)
            ).scalar_one()
        )

    def set_ticket_status(
        self, ticket_id: str, status: str, by: Mapping[str, Any] | None = None
    ) -> None:
        """Change one ticket's status (e.g. a sync from the ticket system closing it) and
        stamp it with the new directory version (ledgered first, with ``record``). Raises
        :class:`UnknownTicket`, :class:`LedgerUnavailable` (nothing changed),
        :class:`StoreConflict` and :class:`StoreUnavailable` when the database fails."""
        self._set_status(
            TicketRow,
            _ticket,
            ticket_id,
            status,
            by,
            lambda key: UnknownTicket(f"unknown ticket {shown_id(key)}"),
        )

    def set_principal_status(
        self, principal_id: str, status: str, by: Mapping[str, Any] | None = None
    ) -> None:
        """Change one principal's status (``active``, ``leaving``, ``terminated``) and stamp
        it with the new directory version (ledgered first, with ``record``). Raises
        :class:`UnknownPrincipal`, :class:`LedgerUnavailable` (nothing changed),
        :class:`StoreConflict` and :class:`StoreUnavailable` when the database fails."""
        self._set_status(
            PrincipalRow,
            _principal,
            principal_id,
            status,
            by,
            lambda key: UnknownPrincipal(f"unknown principal {shown_id(key)}"),
        )

    def _set_status(
        self,
        model: Any,
        convert: Callable[[Any], Principal | Subject | Ticket],
        key: str,
        status: str,
        by: Mapping[str, Any] | None,
        missing: Callable[[str], CustosError],
    ) -> None:
        kind = _KINDS[model.__tablename__]
        with self._write_lock:
            index: int | None = None
            facts: Mapping[str, Any] | None = None
            if self.record is not None:
                with self.db.session() as session:
                    row = session.get(model, key)
                    if row is None:
                        raise missing(key)
                    facts = {**convert(row).facts(), "status": status}
                index = self.record(kind, [facts], f"status set to {status}", by)[0]
            with self.db.session() as session:
                row = session.get(model, key)
                if row is None:
                    raise missing(key)
                row.status = status
                if facts is not None:
                    if convert(row).facts() != facts:
                        raise StoreConflict(
                            f"{kind} {shown_id(key)} changed while its status was being set",
                            hint="try again",
                        )
                    row.auth_idx = index
                # Written (so locked) before the bump even when the status is the same: every
                # writer locks rows, then the counter (see the module's docstring).
                row.seq = _UNSTAMPED
                row.seq = self._bump(session)
        self.invalidate()

    def remove_subject(
        self, subject_id: str, source: str, by: Mapping[str, Any] | None = None
    ) -> int:
        """Remove subject ``subject_id`` (a platform account deleted) and its tickets: first
        unlink it from its linked accounts (a merge, ledgered like any), then ledger the
        tombstones (``{"id": ..., "removed": true}``) of its tickets and of itself, and delete
        the rows, handle included, in one transaction. The ledger keeps every entry that set
        them; decisions about it are refused from then on (unknown subject). Returns the
        subject's tombstone's ledger index (-1 without ``record``).

        Raises :class:`UnknownSubject`, :class:`LedgerUnavailable` (nothing removed),
        :class:`StoreConflict` (a row changed meanwhile: nothing removed) and
        :class:`StoreUnavailable`."""
        current = self.subject_row(subject_id)
        if current.linked:
            self.merge(
                DirectoryDocument(subjects=(replace(current, linked=()),)), source, by, feed=True
            )
        with self.db.session() as session:
            tickets = sorted(
                session.scalars(select(TicketRow.id).where(TicketRow.subject == subject_id))
            )
        targets = [(TicketRow, key) for key in tickets] + [(SubjectRow, subject_id)]
        return self._remove(targets, source, by, lambda key: _unknown_subject(key))

    def remove_ticket(
        self, ticket_id: str, source: str, by: Mapping[str, Any] | None = None
    ) -> int:
        """Remove ticket ``ticket_id`` (deleted in the ticket system): its tombstone is
        ledgered, then the row deleted; decisions naming it are refused from then on.
        Returns the tombstone's ledger index (-1 without ``record``). Raises
        :class:`UnknownTicket`, :class:`LedgerUnavailable` (nothing removed),
        :class:`StoreConflict` and :class:`StoreUnavailable`."""
        return self._remove(
            [(TicketRow, ticket_id)],
            source,
            by,
            lambda key: UnknownTicket(f"unknown ticket {shown_id(key)}"),
        )

    def _remove(
        self,
        targets: Sequence[tuple[Any, str]],
        source: str,
        by: Mapping[str, Any] | None,
        missing: Callable[[str], CustosError],
    ) -> int:
        """Ledger the tombstones of ``targets`` (model, id), then delete those rows in one
        transaction, in order; returns the last tombstone's index. ``missing`` makes the
        error for a row that is not there."""
        convert: dict[Any, Callable[[Any], Principal | Subject | Ticket]] = {
            SubjectRow: _subject,
            TicketRow: _ticket,
        }
        with self._write_lock:
            planned: dict[tuple[Any, str], dict[str, Any]] = {}
            with self.db.session() as session:
                for model, key in targets:
                    row = session.get(model, key)
                    if row is None:
                        raise missing(key)
                    planned[(model, key)] = convert[model](row).facts()
            index = -1
            if self.record is not None:
                for model in dict.fromkeys(model for model, _ in targets):
                    keys = [key for other, key in targets if other is model]
                    kind = _KINDS[model.__tablename__]
                    index = self.record(
                        kind, [tombstone(key) for key in keys], f"removed: {source}", by
                    )[-1]
            with self.db.session() as session:
                for model, key in targets:
                    row = session.get(model, key)
                    if row is None or convert[model](row).facts() != planned[(model, key)]:
                        # Its tombstone is ledgered: the row the writer in between made is
                        # no longer vouched for, and `log verify` names it. Say so.
                        kind = _KINDS[model.__tablename__]
                        raise StoreConflict(
                            f"{kind} {shown_id(key)} changed while it was being removed",
                            hint="it is removed in the ledger; set it again if it should stay",
                        )
                    session.delete(row)
                    session.flush()
                self._bump(session)
        self.invalidate()
        return index

    def subject_row(self, subject_id: str) -> Subject:
        """Subject ``subject_id`` as stored, unchecked and uncached (for a writer that is
        about to restate it). Raises :class:`UnknownSubject`."""
        with self.db.session() as session:
            row = session.get(SubjectRow, subject_id)
            if row is None:
                raise _unknown_subject(subject_id)
            return _subject(row)

    def principal_row(self, principal_id: str) -> Principal:
        """Principal ``principal_id`` as stored, unchecked and uncached (for a writer about
        to restate it). Raises :class:`UnknownPrincipal`."""
        with self.db.session() as session:
            row = session.get(PrincipalRow, principal_id)
            if row is None:
                raise UnknownPrincipal(f"unknown principal {shown_id(principal_id)}")
            return _principal(row)

    def ticket_row(self, ticket_id: str) -> Ticket:
        """Ticket ``ticket_id`` as stored, unchecked and uncached. Raises
        :class:`UnknownTicket`."""
        with self.db.session() as session:
            row = session.get(TicketRow, ticket_id)
            if row is None:
                raise UnknownTicket(f"unknown ticket {shown_id(ticket_id)}")
            return _ticket(row)

    # -- exporting ---------------------------------------------------------------------

    def write_changes(self, folder: Path, after: int) -> DirectoryChanges:
        """Write the principals, subjects and tickets changed after version ``after`` into
        ``folder`` (files ``principals``, ``subjects``, ``tickets``, replaced if present), in
        the formats of :meth:`Database.write_rows` and the columns of
        :data:`DIRECTORY_EXPORTS`.

        The returned ``version`` is read before the rows: every row changed up to it is in
        the files, and so may be some changed after it; pass it as ``after`` next time (a
        row is never missed, at worst written twice). A first copy passes ``after=-1``: rows
        stored before the directory had ``seq`` carry the version of that time, 0 when it
        had none. Changes are additions and updates only: a row removed (by a feed, or by
        ``org import --prune``) is not named here; a copy finds its removals with
        :meth:`write_ids`, read after this call, whenever ``version`` moved.
        Raises :class:`TypeError` when ``after`` is not an integer, :class:`StoreUnavailable`
        when the database fails, and :class:`OSError` when ``folder`` cannot take the files.
        """
        if isinstance(after, bool) or not isinstance(after, int):
            raise TypeError("after must be an int (a directory version)")
        version = self.version()  # first: see DirectoryChanges
        where = f" WHERE seq > {int(after)}"
        written: dict[str, WrittenRows] = {}
        for table, (sqlite, postgresql) in DIRECTORY_EXPORTS.items():
            written[table] = self.db.write_rows(
                folder / table,
                sqlite=sqlite.format(where=where),
                postgresql=postgresql.format(where=where),
            )
        return DirectoryChanges(version=version, **written)

    def write_ids(self, folder: Path) -> dict[str, WrittenRows]:
        """Write the ids of every principal, subject and ticket stored into ``folder``
        (files ``principals.ids``, ``subjects.ids``, ``tickets.ids``, replaced if present),
        one column ``id`` in the formats of :meth:`Database.write_rows`; returns the files
        by table name.

        Called after :meth:`write_changes` returned version V, the files name no row removed
        at a version up to V (each removal commits with its move of the counter), so a copy
        that holds the changes up to V and drops every row these files do not name holds
        the directory as of V or later; a row added meanwhile is named but may be missing
        from the copy (it is in the next changes). Raises :class:`StoreUnavailable` when the
        database fails, and :class:`OSError` when ``folder`` cannot take the files."""
        return {
            table: self.db.write_rows(
                folder / f"{table}.ids",
                sqlite=f"SELECT json_array(id) FROM {table}",  # noqa: S608 - fixed names
                postgresql=f"SELECT id FROM {table}",  # noqa: S608 - fixed names
            )
            for table in _MODELS
        }

    # -- reading -----------------------------------------------------------------------

    def version(self) -> int:
        """The directory's change counter (0 when nothing was ever loaded)."""
        with self.db.session() as session:
            value = session.scalar(
                select(DirectoryVersionRow.version).where(DirectoryVersionRow.id == 1)
            )
        return int(value or 0)

    def invalidate(self) -> None:
        with self._lock:
            self._principals.clear()
            self._subjects.clear()
            self._tickets.clear()
            self._groups.clear()
            self._version = None
            self._checked_at = 0.0

    def _fresh(self) -> None:
        now = time.monotonic()
        if self._version is not None and now - self._checked_at < self.max_staleness:
            return
        current = self.version()
        with self._lock:
            if current != self._version:
                self._principals.clear()
                self._subjects.clear()
                self._tickets.clear()
                self._groups.clear()
                self._version = current
            self._checked_at = now

    def _lookup(
        self,
        cache: dict[str, T],
        model: Any,
        key: str,
        convert: Callable[[Any], T],
        missing: Callable[[str], CustosError],
    ) -> T:
        self._fresh()
        found = cache.get(key)
        if found is None:
            with self.db.session() as session:
                row = session.get(model, key)
                if row is None:
                    raise missing(key)
                found = convert(row)
            if self.vouch is not None:
                # Checked once per load: the cache is dropped whenever the directory moves,
                # so a row edited since is loaded, and checked, again.
                value: Any = found
                self.vouch(_KINDS[model.__tablename__], key, value.authority, value.facts())
            cache[key] = found
        return found

    def principal(self, principal_id: str) -> Principal:
        """The principal ``principal_id``. Raises :class:`UnknownPrincipal`."""
        return self._lookup(
            self._principals,
            PrincipalRow,
            principal_id,
            _principal,
            lambda key: UnknownPrincipal(f"unknown principal {shown_id(key)}"),
        )

    def subject(self, subject_id: str) -> Subject:
        """The subject ``subject_id``. Raises :class:`UnknownSubject`."""
        return self._lookup(
            self._subjects,
            SubjectRow,
            subject_id,
            _subject,
            lambda key: UnknownSubject(f"unknown subject {shown_id(key)}"),
        )

    def ticket(self, ticket_id: str) -> Ticket:
        """The ticket ``ticket_id``. Raises :class:`UnknownTicket`."""
        return self._lookup(
            self._tickets,
            TicketRow,
            ticket_id,
            _ticket,
            lambda key: UnknownTicket(f"unknown ticket {shown_id(key)}"),
        )

    def link_group(self, subject: Subject) -> tuple[Subject, ...]:
        """The other accounts of ``subject``'s link group (its linked accounts, theirs, and so
        on), each loaded and checked like any subject, sorted by id; ``()`` when it is linked
        to nothing. Served from the cache, like the subjects themselves.

        The group's rows must agree with each other: every link on both sides, every member
        naming the group's smallest id. Each row alone equals an entry custos wrote, so a
        disagreement means one was put back to an older genuine entry (a link undone on one
        side only). Raises :class:`AuthorityMismatch` then, and when a linked account is
        missing from the directory; :class:`StoreUnavailable` when the database fails.
        """
        if not subject.linked and subject.link_group is None:
            return ()
        found = self._groups.get(subject.id)
        if found is not None and self._subjects.get(subject.id) is subject:
            return found
        members = {subject.id: subject}
        waiting = list(subject.linked)
        while waiting:
            key = waiting.pop()
            if key in members:
                continue
            try:
                member = self.subject(key)
            except UnknownSubject:
                raise _broken_link(
                    subject.id, "is linked to an account missing from the directory"
                ) from None
            members[key] = member
            waiting.extend(member.linked)
        group = min(members) if len(members) > 1 else None
        for member in members.values():
            if member.link_group != group or any(
                member.id not in members[other].linked for other in member.linked
            ):
                raise _broken_link(
                    member.id, "disagrees with its linked accounts about their links"
                )
        others = tuple(members[key] for key in sorted(members) if key != subject.id)
        with self._lock:
            if self._subjects.get(subject.id) is subject:
                self._groups[subject.id] = others
        return others

    def principals(self) -> list[Principal]:
        with self.db.session() as session:
            return [_principal(r) for r in session.scalars(select(PrincipalRow).order_by("id"))]

    def subjects(self) -> list[Subject]:
        with self.db.session() as session:
            return [_subject(r) for r in session.scalars(select(SubjectRow).order_by("id"))]

    def protected_flags(self) -> dict[str, int]:
        """How many subjects carry each protected flag (their own, as stored): the words a
        policy pack must keep declaring while anyone carries them."""
        sql = (
            "SELECT f.value, count(*) FROM subjects, json_each(subjects.protected) f "
            "GROUP BY f.value"
            if self.db.is_sqlite
            else "SELECT f, count(*) FROM subjects, json_array_elements_text(subjects.protected) f "
            "GROUP BY f"
        )
        with self.db.session() as session:
            return {str(flag): int(n) for flag, n in session.execute(text(sql))}

    def tickets(self, *, subject: str | None = None, assignee: str | None = None) -> list[Ticket]:
        query = select(TicketRow).order_by("id")
        if subject is not None:
            query = query.where(TicketRow.subject == subject)
        if assignee is not None:
            query = query.where(TicketRow.assignee == assignee)
        with self.db.session() as session:
            return [_ticket(r) for r in session.scalars(query)]

    def management_chain(self, principal_id: str) -> list[str]:
        """Managers of ``principal_id``, nearest first (cycles in HR data are cut)."""
        chain: list[str] = []
        seen = {principal_id}
        current = self.principal(principal_id).manager
        while current and current not in seen:
            chain.append(current)
            seen.add(current)
            try:
                current = self.principal(current).manager
            except UnknownPrincipal:
                break
        return chain

    def reports(self, principal_id: str) -> set[str]:
        """Everyone below ``principal_id`` in the management tree (direct and indirect)."""
        by_manager: dict[str, list[str]] = {}
        for person in self.principals():
            if person.manager:
                by_manager.setdefault(person.manager, []).append(person.id)
        found: set[str] = set()
        stack = [principal_id]
        while stack:
            for report in by_manager.get(stack.pop(), []):
                if report not in found and report != principal_id:
                    found.add(report)
                    stack.append(report)
        return found


def _stored(row: Any, column: str) -> Any:
    """A row's value as :func:`_columns` gives it (no links are stored as NULL or [])."""
    value = getattr(row, column)
    return list(value or ()) if column == "linked" else value


def _components(links: Mapping[str, set[str]]) -> dict[str, str]:
    """The link group of every id with a link: the smallest id of its connected component."""
    groups: dict[str, str] = {}
    for start in sorted(links):
        if start in groups or not links[start]:
            continue
        component = {start}
        waiting = [start]
        while waiting:
            for other in links.get(waiting.pop(), ()):
                if other not in component:
                    component.add(other)
                    waiting.append(other)
        first = min(component)
        groups.update(dict.fromkeys(component, first))
    return groups


def _unknown_subject(key: str) -> UnknownSubject:
    return UnknownSubject(f"unknown subject {shown_id(key)}")


def _broken_link(key: str, problem: str) -> AuthorityMismatch:
    return AuthorityMismatch(
        f"authority-mismatch: subject {shown_id(key)} {problem}",
        kind="subject",
        key=key,
        hint="a row was put back or changed outside custos; nothing is decided on it. "
        "`custos log verify` names every such row",
    )
