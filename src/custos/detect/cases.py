"""Alerts as stored, and cases: the triage of alerts (group, assign, comment, close).

New alerts are filed by incident: an alert that names a principal of an open case and whose
time overlaps that case's alerts (each widened by the detection window) joins that case, so
the dozens of alerts of four colleagues acting together over two days are one case, not one
per person and per rule. An alert matching no open case opens one. Closing a case as
``legitimate`` or ``false_positive`` suppresses the same pattern — the rule and principal,
and for rules about particular people also the subject — for ``suppress_days``: such
alerts are still stored, marked suppressed, but not reported or filed. ``confirmed_misuse``
suppresses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, select

from custos.detect.engine import Finding
from custos.errors import InvalidInput, NotFound, Refused, shown_id
from custos.store import Database
from custos.store.approvals import NotificationRow
from custos.store.bulk import BulkAccessRow
from custos.store.events import (
    AccessEventRow,
    AlertRow,
    CaseCommentRow,
    CaseRow,
    SuppressionRow,
)
from custos.times import iso

DISPOSITIONS: Final = ("confirmed_misuse", "legitimate", "false_positive")
#: Rules about particular people: their suppressions name the subject too.
SUBJECT_RULES: Final = frozenset(
    {"repeated_subject", "convergence", "protected_subject_access", "colleague_account_access"}
)
_CHUNK = 500


class UnknownCase(NotFound):
    code = "unknown_case"


class UnknownAlert(NotFound):
    code = "unknown_alert"


@dataclass(frozen=True, slots=True)
class Alert:
    """A stored alert; :meth:`to_dict` is the DESIGN.md alert format (plus ``case``)."""

    id: str
    rule: str
    severity: str
    principals: tuple[str, ...]
    subjects: tuple[str, ...]
    events: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    explanation: str
    case: str | None
    suppressed: bool
    #: When it was raised (first filed), and when the newest of its evidence (as then)
    #: arrived at custos, if recorded: the difference is its time-to-alert.
    raised: datetime | None = None
    evidence_arrived: datetime | None = None

    @property
    def time_to_alert(self) -> float | None:
        """Seconds from its evidence's arrival to its raising (None when not recorded)."""
        if self.raised is None or self.evidence_arrived is None:
            return None
        return max((self.raised - self.evidence_arrived).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "principals": list(self.principals),
            "subjects": list(self.subjects),
            "events": list(self.events),
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "explanation": self.explanation,
            "case": self.case,
            "raised": iso(self.raised) if self.raised else None,
            "evidence_arrived": iso(self.evidence_arrived) if self.evidence_arrived else None,
            "time_to_alert": self.time_to_alert,
        }


@dataclass(frozen=True, slots=True)
class Comment:
    author: str
    time: datetime
    text: str


@dataclass(frozen=True, slots=True)
class Case:
    """A case: its alerts, comments and triage state."""

    id: str
    title: str
    principal: str
    status: str
    assignee: str | None
    disposition: str | None
    opened: datetime
    closed: datetime | None
    alerts: tuple[Alert, ...]
    comments: tuple[Comment, ...]

    @property
    def severity(self) -> str:
        order = ["low", "medium", "high", "critical"]
        return max((a.severity for a in self.alerts), key=order.index, default="low")

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "principal": self.principal,
            "status": self.status,
            "severity": self.severity,
            "assignee": self.assignee,
            "disposition": self.disposition,
            "opened": iso(self.opened),
            "closed": iso(self.closed) if self.closed else None,
            "alerts": [a.to_dict() for a in self.alerts] if full else [a.id for a in self.alerts],
        }
        if full:
            body["comments"] = [
                {"author": c.author, "time": iso(c.time), "text": c.text} for c in self.comments
            ]
        return body


def _alert(row: AlertRow) -> Alert:
    return Alert(
        id=f"al-{row.id}",
        rule=row.rule,
        severity=row.severity,
        principals=tuple(row.principals),
        subjects=tuple(row.subjects),
        events=tuple(row.events),
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        explanation=row.explanation,
        case=f"case-{row.case_id}" if row.case_id is not None else None,
        suppressed=row.suppressed,
        raised=row.created,
        evidence_arrived=row.evidence_arrived,
    )


_KINDS = {"al-": "alert", "case-": "case"}


def _number(text: str, prefix: str, error: type[NotFound]) -> int:
    raw = text.removeprefix(prefix)
    # ASCII digits only ("³".isdigit() is true, int("³") fails) and short enough for a
    # 64-bit column: anything else is simply not one of ours.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        kind = _KINDS.get(prefix, prefix.rstrip("-"))
        raise error(f"unknown {kind} {shown_id(text)} (expected {prefix}N, e.g. {prefix}12)")
    return int(raw)


class Casebook:
    """Alerts, cases, comments and suppressions in the custos database."""

    def __init__(self, db: Database, *, suppress_days: int = 30, window_days: int = 7) -> None:
        self.db = db
        self.suppress_days = suppress_days
        #: How far apart in time two alerts sharing a principal may be and still be filed
        #: as one incident: the detection window, the span a rule itself looks across.
        self.window = timedelta(days=window_days)

    def record(self, findings: Sequence[Finding], now: datetime | None = None) -> list[Alert]:
        """Store findings as alerts: a finding seen before (same fingerprint) updates its
        alert; a new one is filed into a case unless a suppression covers it. Returns the
        alerts of these findings that are not suppressed (see :meth:`record_new`)."""
        return self.record_new(findings, now)[0]

    def record_new(
        self, findings: Sequence[Finding], now: datetime | None = None
    ) -> tuple[list[Alert], list[Alert]]:
        """As :meth:`record`, and also which of those alerts were raised now.

        Each alert raised (new and not suppressed) is announced in the same transaction as
        it is filed: a notification ``alert-al-N`` (kind ``alert``, the alert as its body)
        joins the outbox the approvals' webhook delivers from. Its id is the alert's, and an
        alert is raised once (its fingerprint is unique), so it is announced once, whoever
        runs detection and however often. Records when its newest evidence arrived.
        """
        now = now or datetime.now(UTC)
        out: dict[int, Alert] = {}
        raised: dict[int, Alert] = {}
        # Filed widest first, then oldest: an alert naming several people (a team's) opens
        # the case its members' own alerts then join, rather than each opening one of their
        # own first. Returned in the order given.
        order = sorted(
            range(len(findings)),
            key=lambda n: (-len(findings[n].principals), findings[n].first_seen, n),
        )
        with self.db.session() as session:
            existing: dict[str, AlertRow] = {}
            prints = [f.fingerprint for f in findings]
            for start in range(0, len(prints), _CHUNK):
                chunk = prints[start : start + _CHUNK]
                for row in session.scalars(select(AlertRow).where(AlertRow.fingerprint.in_(chunk))):
                    existing[row.fingerprint] = row
            suppressions = list(
                session.scalars(select(SuppressionRow).where(SuppressionRow.until > now))
            )
            open_cases = _open_cases(session)
            for n in order:
                finding = findings[n]
                known = existing.get(finding.fingerprint)
                if known is not None:
                    row = known
                    row.severity = finding.severity
                    row.principals = list(finding.principals)
                    row.subjects = list(finding.subjects)
                    row.events = list(finding.events)
                    row.first_seen = finding.first_seen
                    row.last_seen = finding.last_seen
                    row.explanation = finding.explanation
                    session.flush()
                    if not row.suppressed:
                        out[n] = _alert(row)
                    continue
                suppressed = _covered(finding, suppressions)
                row = AlertRow(
                    fingerprint=finding.fingerprint,
                    rule=finding.rule,
                    severity=finding.severity,
                    principals=list(finding.principals),
                    subjects=list(finding.subjects),
                    events=list(finding.events),
                    first_seen=finding.first_seen,
                    last_seen=finding.last_seen,
                    explanation=finding.explanation,
                    created=now,
                    suppressed=suppressed,
                )
                if not suppressed:
                    row.case_id = self._file(session, finding, open_cases, now, self.window)
                    row.evidence_arrived = _arrival(session, finding.events)
                session.add(row)
                session.flush()
                existing[finding.fingerprint] = row
                if not suppressed:
                    alert = _alert(row)
                    out[n] = alert
                    raised[n] = alert
                    session.add(
                        NotificationRow(
                            id=f"alert-{alert.id}",
                            kind="alert",
                            body={"event": "alert", **alert.to_dict()},
                            created=now,
                            status="pending",
                            attempts=0,
                            next_attempt=now,
                        )
                    )
        return [out[n] for n in sorted(out)], [raised[n] for n in sorted(raised)]

    @staticmethod
    def _file(
        session: Any,
        finding: Finding,
        open_cases: list[_OpenCase],
        now: datetime,
        window: timedelta,
    ) -> int:
        """The id of the open case ``finding`` belongs to (the oldest sharing a principal
        and overlapping in time, see the module docstring), opening one if none does."""
        principals = set(finding.principals)
        case = next(
            (
                c
                for c in open_cases
                if c.principals & principals
                and finding.first_seen <= c.last + window
                and finding.last_seen >= c.first - window
            ),
            None,
        )
        if case is None:
            single = len(finding.principals) == 1
            principal = finding.principals[0] if finding.principals else "(none)"
            rule = finding.rule.replace("_", " ")
            # A finding naming nobody (a data map weakened: a file has no author) is its own
            # case, titled by its rule alone rather than "0 people".
            if not finding.principals:
                title = rule
            elif single:
                title = f"{principal}: {rule}"
            else:
                title = f"{len(finding.principals)} people: {rule}"
            row = CaseRow(
                title=title[:512],
                principal=principal if len(finding.principals) <= 1 else "(several)",
                status="open",
                opened=now,
            )
            session.add(row)
            session.flush()
            case = _OpenCase(row, set(), finding.first_seen, finding.last_seen)
            open_cases.append(case)
        grown = principals - case.principals
        case.principals |= principals
        case.first = min(case.first, finding.first_seen)
        case.last = max(case.last, finding.last_seen)
        if grown and len(case.principals) > 1:
            # The incident involves more people than the case said: say so where cases are
            # listed (the rule named is still the one that opened it).
            case.row.principal = "(several)"
            rule = case.row.title.partition(": ")[2] or finding.rule.replace("_", " ")
            case.row.title = f"{len(case.principals)} people: {rule}"[:512]
        return int(case.row.id)

    # -- reading -------------------------------------------------------------------------

    def alerts(self, *, since: datetime | None = None, suppressed: bool = False) -> list[Alert]:
        """Stored alerts (last seen at or after ``since``), oldest first."""
        query = select(AlertRow).order_by(AlertRow.first_seen, AlertRow.id)
        if since is not None:
            query = query.where(AlertRow.last_seen >= since)
        if not suppressed:
            query = query.where(AlertRow.suppressed.is_(False))
        with self.db.session() as session:
            return [_alert(r) for r in session.scalars(query)]

    def alert(self, alert_id: str) -> Alert:
        """One alert. Raises :class:`UnknownAlert`."""
        with self.db.session() as session:
            row = session.get(AlertRow, _number(alert_id, "al-", UnknownAlert))
            if row is None:
                raise UnknownAlert(f"unknown alert {alert_id!r}")
            return _alert(row)

    def triage_rows(
        self,
    ) -> tuple[list[tuple[str, str, str | None, str | None]], list[tuple[int, str | None]]]:
        """Every case's ``(id, status, assignee, disposition)`` and every suppression's
        ``(row id, case id)`` as stored, for ``custos log verify`` to hold to the ledger."""
        with self.db.session() as session:
            cases = [
                (f"case-{r.id}", r.status, r.assignee, r.disposition)
                for r in session.scalars(select(CaseRow).order_by(CaseRow.id))
            ]
            suppressions = [
                (r.id, f"case-{r.case_id}" if r.case_id is not None else None)
                for r in session.scalars(select(SuppressionRow).order_by(SuppressionRow.id))
            ]
        return cases, suppressions

    def cases(self, status: str | None = None) -> list[Case]:
        """Cases, newest first; ``status`` ``open`` or ``closed`` filters."""
        query = select(CaseRow).order_by(CaseRow.id.desc())
        if status is not None:
            if status not in ("open", "closed"):
                raise InvalidInput(f"status {status!r}: expected open or closed")
            query = query.where(CaseRow.status == status)
        with self.db.session() as session:
            return [self._case(session, row) for row in session.scalars(query)]

    def case(self, case_id: str) -> Case:
        """One case. Raises :class:`UnknownCase`."""
        with self.db.session() as session:
            return self._case(session, self._row(session, case_id))

    @staticmethod
    def _row(session: Any, case_id: str) -> CaseRow:
        row = session.get(CaseRow, _number(case_id, "case-", UnknownCase))
        if row is None:
            raise UnknownCase(f"unknown case {case_id!r}")
        assert isinstance(row, CaseRow)
        return row

    @staticmethod
    def _case(session: Any, row: CaseRow) -> Case:
        alerts = session.scalars(
            select(AlertRow).where(AlertRow.case_id == row.id).order_by(AlertRow.id)
        )
        comments = session.scalars(
            select(CaseCommentRow)
            .where(CaseCommentRow.case_id == row.id)
            .order_by(CaseCommentRow.id)
        )
        return Case(
            id=f"case-{row.id}",
            title=row.title,
            principal=row.principal,
            status=row.status,
            assignee=row.assignee,
            disposition=row.disposition,
            opened=row.opened,
            closed=row.closed,
            alerts=tuple(_alert(a) for a in alerts),
            comments=tuple(Comment(c.author, c.time, c.text) for c in comments),
        )

    # -- triage --------------------------------------------------------------------------

    def check_triage(self, case_id: str, verb: str, *, acting_as: str | None = None) -> Case:
        """The case, if ``acting_as`` may ``verb`` it now (``assign``, ``close``,
        ``comment``), changing nothing: what the triage methods would refuse, said first, so
        that a caller can log an action before it takes effect without logging a refusal as
        done.

        Raises :class:`UnknownCase`, :class:`Refused` (rule ``own-case``, for ``assign`` and
        ``close``) and :class:`InvalidInput` (closing a closed case).
        """
        with self.db.session() as session:
            row = self._row(session, case_id)
            if verb in ("assign", "close"):
                _refuse_own_case(session, row, acting_as, verb)
            if verb == "close" and row.status == "closed":
                raise InvalidInput(f"case-{row.id} is already closed ({row.disposition})")
            return self._case(session, row)

    def group(self, alert_ids: Sequence[str], into: str | None = None) -> Case:
        """Move alerts into one case (``into``, else the first alert's case).

        Raises :class:`UnknownAlert`, :class:`UnknownCase`, or :class:`InvalidInput` when
        the target case is closed.
        """
        if not alert_ids:
            raise InvalidInput("name at least one alert to group")
        with self.db.session() as session:
            rows = []
            for alert_id in alert_ids:
                row = session.get(AlertRow, _number(alert_id, "al-", UnknownAlert))
                if row is None:
                    raise UnknownAlert(f"unknown alert {alert_id!r}")
                rows.append(row)
            target: CaseRow | None = None
            if into is not None:
                target = self._row(session, into)
            elif rows[0].case_id is not None:
                target = session.get(CaseRow, rows[0].case_id)
            if target is None:
                target = CaseRow(
                    title=f"{rows[0].principals[0] if rows[0].principals else '(none)'}: grouped",
                    principal=rows[0].principals[0] if rows[0].principals else "(none)",
                    status="open",
                    opened=datetime.now(UTC),
                )
                session.add(target)
                session.flush()
            if target.status != "open":
                raise InvalidInput(f"case-{target.id} is closed; alerts cannot be added to it")
            for row in rows:
                row.case_id = target.id
            session.flush()
            return self._case(session, target)

    def assign(self, case_id: str, assignee: str, *, acting_as: str | None = None) -> Case:
        """Assign a case to a reviewer, by someone acting as principal ``acting_as`` (None
        for the host's operator). Raises :class:`UnknownCase`, or :class:`Refused` when
        ``acting_as`` is a principal the case is about."""
        if not assignee.strip():
            raise InvalidInput("the assignee must not be empty")
        with self.db.session() as session:
            row = self._row(session, case_id)
            _refuse_own_case(session, row, acting_as, "assign")
            row.assignee = assignee.strip()[:128]
            return self._case(session, row)

    def comment(self, case_id: str, author: str, text: str) -> Case:
        """Add a comment. Raises :class:`UnknownCase`, or :class:`InvalidInput` when empty."""
        if not text.strip():
            raise InvalidInput("a comment must not be empty")
        with self.db.session() as session:
            row = self._row(session, case_id)
            session.add(
                CaseCommentRow(
                    case_id=row.id, author=author[:128], time=datetime.now(UTC), text=text.strip()
                )
            )
            session.flush()
            return self._case(session, row)

    def close(
        self,
        case_id: str,
        disposition: str,
        *,
        author: str,
        acting_as: str | None = None,
        comment: str | None = None,
        suppress_days: int | None = None,
        now: datetime | None = None,
    ) -> Case:
        """Close a case with a disposition; ``legitimate`` and ``false_positive`` suppress
        its alerts' patterns for ``suppress_days`` (default from the config). ``acting_as``
        is the closer's principal (None for the host's operator).

        Raises :class:`UnknownCase`, :class:`InvalidInput` for an unknown disposition or
        a case already closed, and :class:`Refused` when ``acting_as`` is a principal the
        case is about: closing it would silence the alerts about oneself.
        """
        if disposition not in DISPOSITIONS:
            raise InvalidInput(
                f"disposition {disposition!r}: expected one of {', '.join(DISPOSITIONS)}"
            )
        now = now or datetime.now(UTC)
        days = self.suppress_days if suppress_days is None else suppress_days
        with self.db.session() as session:
            row = self._row(session, case_id)
            _refuse_own_case(session, row, acting_as, "close")
            if row.status == "closed":
                raise InvalidInput(f"case-{row.id} is already closed ({row.disposition})")
            row.status = "closed"
            row.disposition = disposition
            row.closed = now
            if comment and comment.strip():
                session.add(
                    CaseCommentRow(
                        case_id=row.id, author=author[:128], time=now, text=comment.strip()
                    )
                )
            if disposition != "confirmed_misuse" and days > 0:
                until = now + timedelta(days=days)
                alerts = session.scalars(select(AlertRow).where(AlertRow.case_id == row.id))
                for alert in alerts:
                    subjects: list[str | None] = (
                        list(alert.subjects) if alert.rule in SUBJECT_RULES else [None]
                    )
                    for principal in alert.principals:
                        for subject in subjects:
                            session.add(
                                SuppressionRow(
                                    rule=alert.rule,
                                    principal=principal,
                                    subject=subject,
                                    until=until,
                                    case_id=row.id,
                                    created=now,
                                )
                            )
            session.flush()
            return self._case(session, row)


@dataclass(slots=True)
class _OpenCase:
    """An open case as filing sees it: who its alerts name and the time they span."""

    row: CaseRow
    principals: set[str]
    first: datetime
    last: datetime


def _open_cases(session: Any) -> list[_OpenCase]:
    """Every open case with at least one alert, oldest first (an empty one, all of its
    alerts moved away by ``group``, has no incident to match)."""
    cases = {
        row.id: row
        for row in session.scalars(
            select(CaseRow).where(CaseRow.status == "open").order_by(CaseRow.id)
        )
    }
    found: dict[int, _OpenCase] = {}
    ids = list(cases)
    for start in range(0, len(ids), _CHUNK):
        query = select(
            AlertRow.case_id, AlertRow.principals, AlertRow.first_seen, AlertRow.last_seen
        ).where(AlertRow.case_id.in_(ids[start : start + _CHUNK]))
        for case_id, principals, first, last in session.execute(query):
            case = found.get(case_id)
            if case is None:
                found[case_id] = _OpenCase(cases[case_id], set(principals), first, last)
            else:
                case.principals.update(principals)
                case.first, case.last = min(case.first, first), max(case.last, last)
    return [found[i] for i in ids if i in found]


def _arrival(session: Any, events: Sequence[str]) -> datetime | None:
    """When the newest of these events (access events, or bulk accesses for ``bulk_read``)
    arrived (None if none records it)."""
    newest: datetime | None = None
    for start in range(0, len(events), _CHUNK):
        chunk = list(events[start : start + _CHUNK])
        for row in (AccessEventRow, BulkAccessRow):
            found = session.scalar(select(func.max(row.arrived)).where(row.id.in_(chunk)))
            if found is not None and (newest is None or found > newest):
                newest = found
    return newest


def _covered(finding: Finding, suppressions: Sequence[SuppressionRow]) -> bool:
    if not finding.principals:
        return False
    for principal in finding.principals:
        mine = [s for s in suppressions if s.rule == finding.rule and s.principal == principal]
        if not mine:
            return False
        if any(s.subject is None for s in mine):
            continue
        if not set(finding.subjects) <= {s.subject for s in mine}:
            return False
    return True


def _refuse_own_case(session: Any, row: CaseRow, acting_as: str | None, verb: str) -> None:
    """Nobody triages a case about themselves: its principal, or one named by its alerts."""
    if acting_as is None:
        return
    named = {row.principal}
    for principals in session.scalars(
        select(AlertRow.principals).where(AlertRow.case_id == row.id)
    ):
        named.update(principals)
    if acting_as in named:
        raise Refused(
            f"{acting_as} may not {verb} case-{row.id}: the case is about them",
            rule="own-case",
        )
