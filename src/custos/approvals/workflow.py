"""The approval workflow: requests, answers, grants, revocation, break-glass and reviews.

Every change runs in one transaction whose first statement bumps the ``lock`` counter of the
request or grant it changes — a row lock on PostgreSQL, the write lock on SQLite — so that
concurrent answers to one request are applied one after the other and exactly one of them can
turn it into a grant. The same transaction writes the change's ledger entries into the
journal and its notifications into the outbox; after the commit the journal is appended to
the ledger, and a grant is honoured only once its entry is there (fail closed).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import String, cast, func, literal, or_, select, text, update
from sqlalchemy.orm import Session

from custos.approvals import independence
from custos.approvals.model import ApprovalSettings, Grant, Request, Vote, covered_actions
from custos.approvals.notify import Outbox
from custos.authority import Vouch
from custos.directory import DirectoryStore
from custos.errors import (
    ApprovalRefused,
    Conflict,
    InvalidInput,
    LedgerUnavailable,
    NotFound,
    UnknownGrant,
    UnknownRequest,
    shown_id,
)
from custos.ledger.entries import (
    AlertEntry,
    ApprovalDeniedEntry,
    ApprovalEntry,
    ApprovalRefusedEntry,
    ApprovalRequestEntry,
    BreakGlassClosedEntry,
    BreakGlassEntry,
    BreakGlassRefusedEntry,
    BreakGlassReviewEntry,
    Entry,
    GrantEndedEntry,
    GrantEntry,
    GrantFields,
    GrantRevokedEntry,
    RequestDeniedEntry,
    RequestExpiredEntry,
    RequestFields,
    RequestWithdrawnEntry,
)
from custos.policy import AccessRequest, ApprovalsNeeded, GrantFacts
from custos.store import Database
from custos.store.approvals import (
    ApprovalJournalRow,
    ApprovalRequestRow,
    ApprovalVoteRow,
    GrantReviewRow,
    GrantRow,
    GrantsVersionRow,
    NotificationRow,
)
from custos.times import iso
from custos.vocabulary import DEFAULT_VOCABULARY, PRECISIONS, Vocabulary, unknown_word

MAX_REASON = 2000
#: The approval graph's PostgreSQL advisory lock (first key; the second is the schema's).
_GRAPH_LOCK = int.from_bytes(
    hashlib.sha256(b"custos:approval-graph").digest()[:4], "big", signed=True
)
#: People per query of the ring search (bound parameters stay well under any limit).
_IN_CHUNK = 500


class Receipt(Protocol):
    @property
    def index(self) -> int: ...


class Operator(Protocol):
    """Who ran an action (a person, a tool, or an unauthenticated host user), as its
    ledger entry names them: :meth:`entry` is the entry's ``operator`` object, a plain
    JSON-able dict (``account``, ``principal``, ``authenticated``, ...)."""

    def entry(self) -> dict[str, Any]: ...


def _by(operator: Operator | None) -> dict[str, Any] | None:
    """The entry's ``operator`` member (left out when None)."""
    return None if operator is None else operator.entry()


_R = TypeVar("_R", bound=RequestFields)
_G = TypeVar("_G", bound=GrantFields)


class Journal(Protocol):
    """Where approval steps are recorded for good: the ledger.

    ``append_many`` durably appends the entries in order and returns one receipt (with the
    entry's ``index``) per entry, or raises :class:`LedgerUnavailable`.
    """

    def append_many(self, entries: Iterable[Mapping[str, Any]]) -> Sequence[Receipt]: ...


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _count(n: int, word: str) -> str:
    return f"{'one' if n == 1 else 'two' if n == 2 else n} {word}{'' if n == 1 else 's'}"


def _reason(text: str | None, what: str) -> str:
    cleaned = (text or "").strip()
    if not cleaned:
        raise InvalidInput(f"a {what} needs a reason", hint="say why, in a sentence")
    if len(cleaned) > MAX_REASON:
        raise InvalidInput(f"the {what} reason is longer than {MAX_REASON} characters")
    return cleaned


def _request(row: ApprovalRequestRow, votes: Sequence[ApprovalVoteRow] = ()) -> Request:
    return Request(
        id=row.id,
        principal=row.principal,
        subject=row.subject,
        categories=tuple(row.categories),
        actions=tuple(row.actions),
        purpose=row.purpose,
        ticket=row.ticket,
        precision=row.precision,
        reason=row.reason,
        duration=timedelta(seconds=row.duration_s),
        approvals_needed=row.approvals_needed,
        groups_needed=tuple(row.groups_needed),
        policies=tuple(row.policies),
        status=row.status,
        created=row.created,
        expires=row.expires,
        closed=row.closed,
        grant_id=row.grant_id,
        votes=tuple(Vote(v.approver, v.verdict, v.reason, v.time) for v in votes),
    )


def _grant(row: GrantRow, reviews: Sequence[GrantReviewRow] = ()) -> Grant:
    return Grant(
        id=row.id,
        request_id=row.request_id,
        principal=row.principal,
        subject=row.subject,
        categories=tuple(row.categories),
        actions=tuple(row.actions),
        purpose=row.purpose,
        ticket=row.ticket,
        precision=row.precision,
        approvals=row.approvals,
        approver_groups=tuple(row.approver_groups),
        approvers=tuple(row.approvers),
        reason=row.reason,
        starts=row.starts,
        ends=row.ends,
        break_glass=row.break_glass,
        review=row.review,
        logged=row.logged,
        revoked=row.revoked,
        revoked_by=row.revoked_by,
        reviews=tuple(Vote(r.reviewer, "close", r.note, r.time) for r in reviews),
        authority=row.auth_idx,
    )


def _path(
    came_from: Mapping[str, tuple[str, datetime]], requester: str, approver: str
) -> independence.Ring:
    people = [approver]
    times: list[datetime] = []
    while people[-1] != requester:
        source, when = came_from[people[-1]]
        people.append(source)
        times.append(when)
    return independence.Ring(people=tuple(reversed(people)), times=tuple(reversed(times)))


LockedRow = TypeVar("LockedRow", ApprovalRequestRow, GrantRow)


def _locked(session: Session, model: type[LockedRow], key: str, missing: NotFound) -> LockedRow:
    """The row ``key`` of ``model``, locked for this transaction; raises ``missing`` if none.

    The UPDATE comes first so that this transaction holds the lock (a row lock on
    PostgreSQL, the write lock on SQLite) before it reads.
    """
    result = session.execute(update(model).where(model.id == key).values(lock=model.lock + 1))
    if getattr(result, "rowcount", 0) != 1:
        raise missing
    row = session.get(model, key, populate_existing=True)
    assert row is not None
    return row


class Approvals:
    """Requests, grants and their history, in the custos database. Thread-safe."""

    def __init__(
        self,
        db: Database,
        directory: DirectoryStore,
        journal: Journal,
        outbox: Outbox,
        settings: ApprovalSettings | None = None,
        *,
        max_staleness: float = 1.0,
        vouch: Vouch | None = None,
        vocabulary: Callable[[], Vocabulary] | None = None,
    ) -> None:
        """``vocabulary`` gives the active pack's words when a request is opened (default:
        the shipped pack's)."""
        self.db = db
        self.vocabulary = vocabulary or (lambda: DEFAULT_VOCABULARY)
        self.directory = directory
        self.journal = journal
        #: Checks a grant against the ledger entry that set it before it is honoured.
        self.vouch = vouch
        self.outbox = outbox
        self.settings = settings or ApprovalSettings()
        self.max_staleness = max_staleness
        self._cache_lock = threading.Lock()
        self._cache_version: int | None = None
        self._checked_at = 0.0
        self._by_principal: dict[str, list[Grant]] = {}

    # -- requests ----------------------------------------------------------------------

    def open_request(
        self,
        *,
        principal: str,
        subject: str,
        categories: Sequence[str],
        purpose: str,
        ticket: str | None,
        precision: str,
        reason: str | None,
        duration: timedelta | None,
        needed: ApprovalsNeeded,
        policies: Sequence[str],
        actions: Sequence[str] = ("read",),
        decisions: Sequence[str] = (),
        now: datetime | None = None,
    ) -> Request:
        """Open a request that the policies said needs ``needed`` approvals.

        The caller (the access path) has decided every category and found approval
        required. Raises :class:`InvalidInput` for a missing reason or a bad duration and
        :class:`Conflict` when the principal already has a pending request for the same
        subject and purpose.
        """
        now = now or datetime.now(UTC)
        reason = _reason(reason, "request")
        cats = tuple(dict.fromkeys(categories))
        acts = covered_actions(actions)
        words = self.vocabulary()
        problems = words.problems([*(("category", c) for c in cats), ("purpose", purpose)])
        if not cats:
            problems.append("at least one category is needed")
        if precision not in PRECISIONS:
            problems.append(unknown_word("precision", precision))
        if problems:
            raise InvalidInput("invalid request: " + "; ".join(problems))
        length = self._duration(duration, self.settings.grant_duration)
        request_id = _new_id("req")
        with self.db.session() as session:
            self._bump_version(session)
            pending = session.scalar(
                select(ApprovalRequestRow.id)
                .where(ApprovalRequestRow.principal == principal)
                .where(ApprovalRequestRow.subject == subject)
                .where(ApprovalRequestRow.purpose == purpose)
                .where(ApprovalRequestRow.status == "pending")
                .where(ApprovalRequestRow.expires > now)
            )
            if pending is not None:
                raise Conflict(
                    f"{principal} already has request {pending} pending for {subject} ({purpose})",
                    hint="wait for its answer or withdraw it with 'custos approvals revoke'",
                )
            row = ApprovalRequestRow(
                id=request_id,
                principal=principal,
                subject=subject,
                categories=list(cats),
                actions=list(acts),
                purpose=purpose,
                ticket=ticket,
                precision=precision,
                reason=reason,
                duration_s=int(length.total_seconds()),
                approvals_needed=needed.approvals,
                groups_needed=list(needed.groups),
                policies=list(policies),
                status="pending",
                created=now,
                expires=now + self.settings.request_ttl,
                closed=None,
                grant_id=None,
                lock=0,
            )
            session.add(row)
            view = _request(row)
            self._record(
                session,
                self._request_entry(ApprovalRequestEntry, view, now, decisions=tuple(decisions)),
                notify="request",
                now=now,
            )
        self.flush()
        return view

    def approve(
        self,
        request_id: str,
        approver: str,
        reason: str | None,
        now: datetime | None = None,
        *,
        operator: Operator | None = None,
    ) -> Request:
        """Record ``approver``'s approval; the last one needed creates the grant.

        ``operator`` (who ran it, as a ledger entry's ``operator`` object) is recorded in the
        answer's entry, and in the entry of a refused attempt.
        Raises :class:`ApprovalRefused` naming the independence rule broken,
        :class:`UnknownRequest`, and :class:`Conflict` when the request is no longer pending.
        """
        return self._answer(request_id, approver, "approve", reason, now, operator)

    def deny(
        self,
        request_id: str,
        approver: str,
        reason: str | None,
        now: datetime | None = None,
        *,
        operator: Operator | None = None,
    ) -> Request:
        """Deny a request (one eligible denial closes it). Raises as :meth:`approve`."""
        return self._answer(request_id, approver, "deny", reason, now, operator)

    def _answer(
        self,
        request_id: str,
        who: str,
        verdict: str,
        reason: str | None,
        now: datetime | None,
        operator: Operator | None,
    ) -> Request:
        now = now or datetime.now(UTC)
        reason = _reason(reason, "denial" if verdict == "deny" else "approval")
        person = self.directory.principal(who)
        refused: ApprovalRefused | None = None
        rings: list[independence.Ring] = []
        with self.db.session() as session:
            row = self._locked_request(session, request_id)
            self._expire_if_due(session, row, now)
            if row.status != "pending":
                raise Conflict(
                    f"request {request_id} is {row.status}; it can no longer be answered"
                )
            request = _request(row, self._votes(session, request_id))
            owner = self.directory.subject(row.subject).employee

            def find_ring(request: Request = request) -> independence.Ring | None:
                found = self._ring(session, request.principal, who, now)
                if found is not None:
                    rings.append(found)
                return found

            try:
                if verdict == "approve":
                    independence.check_approver(
                        self.directory, self.settings, request, owner, person, ring=find_ring
                    )
                else:
                    independence.check_relationship(self.directory, row.principal, owner, person)
                    independence.check_eligible(self.settings, request, person)
                    independence.check_not_answered(request, person)
            except ApprovalRefused as exc:
                refused = exc
            if refused is None:
                session.add(
                    ApprovalVoteRow(
                        request_id=request_id,
                        approver=who,
                        verdict=verdict,
                        reason=reason,
                        time=now,
                    )
                )
                vote = Vote(who, verdict, reason, now)
                request = replace(request, votes=(*request.votes, vote))
                self._record(
                    session,
                    (ApprovalEntry if verdict == "approve" else ApprovalDeniedEntry)(
                        time=iso(now),
                        request=request_id,
                        principal=row.principal,
                        subject=row.subject,
                        approver=who,
                        reason=reason,
                        operator=_by(operator),
                    ),
                )
                if verdict == "deny":
                    row.status, row.closed = "denied", now
                    self._record(
                        session,
                        self._request_entry(RequestDeniedEntry, _request(row), now),
                        notify="request_denied",
                        now=now,
                    )
                elif len(request.approvers) >= row.approvals_needed and not (
                    independence.missing_groups(
                        request, [self.directory.principal(a) for a in request.approvers]
                    )
                ):
                    self._make_grant(session, row, request, now)
                request = _request(row, self._votes(session, request_id))
        if refused is not None:
            # A refused attempt changes nothing but is itself evidence worth keeping.
            self.journal.append_many(
                [
                    ApprovalRefusedEntry(
                        time=iso(now),
                        request=request_id,
                        approver=who,
                        verdict=verdict,
                        rule=refused.rule,
                        # Added fields (the entry is a contract: nothing renamed): whose
                        # request it was and about whom, so the refusal reaches the
                        # subject's report beside the request it concerns.
                        principal=row.principal,
                        subject=row.subject,
                        ring=tuple(rings[0].people) if rings else (),
                        operator=_by(operator),
                    ).to_json()
                ]
            )
            raise refused
        self.flush()
        return request

    def _make_grant(
        self, session: Session, row: ApprovalRequestRow, request: Request, now: datetime
    ) -> None:
        groups = sorted({g for a in request.approvers for g in self.directory.principal(a).groups})
        grant = GrantRow(
            id=_new_id("grant"),
            request_id=row.id,
            principal=row.principal,
            subject=row.subject,
            categories=list(row.categories),
            actions=list(row.actions),
            purpose=row.purpose,
            ticket=row.ticket,
            precision=row.precision,
            approvals=len(request.approvers),
            approver_groups=groups,
            approvers=list(request.approvers),
            reason=row.reason,
            starts=now,
            ends=now + timedelta(seconds=row.duration_s),
            break_glass=False,
            review="none",
            logged=False,
            revoked=None,
            revoked_by=None,
            revoke_reason=None,
            end_notified=False,
            lock=0,
        )
        session.add(grant)
        row.status, row.closed, row.grant_id = "approved", now, grant.id
        self._bump_version(session)
        self._record(
            session,
            self._grant_entry(GrantEntry, _grant(grant)),
            notify="grant",
            grant=grant.id,
            now=now,
        )

    def withdraw(
        self,
        request_id: str,
        by: str,
        reason: str | None,
        now: datetime | None = None,
        *,
        operator: Operator | None = None,
    ) -> Request:
        """Withdraw a pending request (its requester or the privacy office).

        Raises :class:`ApprovalRefused`, :class:`UnknownRequest` or :class:`Conflict`.
        """
        now = now or datetime.now(UTC)
        reason = _reason(reason, "withdrawal")
        person = self.directory.principal(by)
        with self.db.session() as session:
            row = self._locked_request(session, request_id)
            self._expire_if_due(session, row, now)
            if row.status != "pending":
                raise Conflict(f"request {request_id} is {row.status}; nothing to withdraw")
            if by != row.principal and not set(self.settings.review_groups) & set(person.groups):
                raise ApprovalRefused(
                    f"only {row.principal} or the privacy office may withdraw request {request_id}",
                    rule="not-allowed-to-revoke",
                )
            row.status, row.closed = "withdrawn", now
            self._record(
                session,
                self._request_entry(
                    RequestWithdrawnEntry,
                    _request(row),
                    now,
                    by=by,
                    reason=reason,
                    operator=_by(operator),
                ),
                notify="request_withdrawn",
                now=now,
            )
            view = _request(row, self._votes(session, request_id))
        self.flush()
        return view

    # -- grants ------------------------------------------------------------------------

    def revoke(
        self,
        grant_id: str,
        by: str,
        reason: str | None,
        now: datetime | None = None,
        *,
        operator: Operator | None = None,
    ) -> Grant:
        """End a grant now. Allowed to its holder, its approvers and the review groups.

        Raises :class:`ApprovalRefused`, :class:`UnknownGrant` or :class:`Conflict` (already
        revoked or ended).
        """
        now = now or datetime.now(UTC)
        reason = _reason(reason, "revocation")
        person = self.directory.principal(by)
        with self.db.session() as session:
            row = self._locked_grant(session, grant_id)
            if row.revoked is not None:
                raise Conflict(f"grant {grant_id} was already revoked")
            if now >= row.ends:
                raise Conflict(f"grant {grant_id} has already ended")
            allowed = by == row.principal or by in row.approvers
            if not allowed and not set(self.settings.review_groups) & set(person.groups):
                raise ApprovalRefused(
                    f"{by} may not revoke grant {grant_id}: only its holder, its approvers and "
                    f"the {', '.join(self.settings.review_groups)} may",
                    rule="not-allowed-to-revoke",
                )
            row.revoked, row.revoked_by, row.revoke_reason = now, by, reason
            self._bump_version(session)
            self._record(
                session,
                self._grant_entry(
                    GrantRevokedEntry,
                    _grant(row),
                    time=iso(now),
                    reason=reason,
                    by=by,
                    operator=_by(operator),
                ),
                notify="grant_revoked",
                now=now,
            )
            view = _grant(row, self._reviews(session, grant_id))
        self._invalidate()
        self.flush()
        return view

    def break_glass(
        self,
        *,
        principal: str,
        subject: str,
        categories: Sequence[str],
        purpose: str,
        ticket: str | None,
        reason: str | None,
        duration: timedelta | None,
        actions: Sequence[str] = ("read",),
        decisions: Sequence[str] = (),
        now: datetime | None = None,
    ) -> Grant:
        """An immediate precise grant for an incident responder, flagged for review.

        The caller has checked that policy allows break-glass for this principal and
        purpose. The grant raises a critical alert at once and stays flagged (``review`` =
        ``open``) until ``reviews_needed`` reviewers close it. Raises :class:`InvalidInput`,
        and :class:`ApprovalRefused` (logged as ``break_glass_refused``) when the principal
        already has ``break_glass_open_limit`` grants awaiting review.
        """
        now = now or datetime.now(UTC)
        reason = _reason(reason, "break-glass")
        acts = covered_actions(actions)
        length = self._duration(duration, self.settings.break_glass_duration)
        row = GrantRow(
            id=_new_id("grant"),
            request_id=None,
            principal=principal,
            subject=subject,
            categories=list(dict.fromkeys(categories)),
            actions=list(acts),
            purpose=purpose,
            ticket=ticket,
            precision="precise",
            approvals=0,
            approver_groups=[],
            approvers=[],
            reason=reason,
            starts=now,
            ends=now + length,
            break_glass=True,
            review="open",
            logged=False,
            revoked=None,
            revoked_by=None,
            revoke_reason=None,
            end_notified=False,
            lock=0,
        )
        refused: ApprovalRefused | None = None
        with self.db.session() as session:
            # The version row's update takes the write lock (SQLite) or that row's lock
            # (PostgreSQL) before the count, so two break-glass calls at once see each other.
            self._bump_version(session)
            waiting = self._awaiting_review(session, principal)
            limit = self.settings.break_glass_open_limit
            if waiting >= limit:
                refused = ApprovalRefused(
                    f"{principal} already has {waiting} break-glass grant(s) awaiting review "
                    f"(the limit is {limit}); reviewers must close them before another",
                    rule=independence.UNREVIEWED_BREAK_GLASS,
                )
                session.rollback()
            else:
                session.add(row)
                grant = _grant(row)
                self._record(
                    session,
                    self._grant_entry(BreakGlassEntry, grant, decisions=tuple(decisions)),
                    grant=row.id,
                )
                self._record(
                    session,
                    AlertEntry(
                        rule="break_glass",
                        severity="critical",
                        time=iso(now),
                        principals=(principal,),
                        subjects=(subject,),
                        # One subject: named as every entry about a subject is, so the
                        # alert is in their report with the grant it is about.
                        subject=subject,
                        grant=row.id,
                        explanation=(
                            f"{principal} invoked break-glass on {subject}'s "
                            f"{', '.join(grant.categories)} for a security incident; "
                            f"{_count(self.settings.reviews_needed, 'reviewer')} must close it"
                        ),
                    ),
                    notify="break_glass",
                    now=now,
                )
        if refused is not None:
            # Nothing was granted, but an attempt to take precise data without approval
            # past the limit is itself evidence.
            self.journal.append_many(
                [
                    BreakGlassRefusedEntry(
                        time=iso(now),
                        principal=principal,
                        subject=subject,
                        categories=tuple(row.categories),
                        purpose=purpose,
                        ticket=ticket,
                        decisions=tuple(decisions),
                        rule=refused.rule,
                        awaiting_review=waiting,
                    ).to_json()
                ]
            )
            raise refused
        self._invalidate()
        self.flush()
        # The row as the ledger left it (logged, with the entry that vouches for it), not the
        # one built before the append: the caller shows what is honoured.
        return self.grant(grant.id)

    def review(
        self,
        grant_id: str,
        reviewer: str,
        note: str | None,
        now: datetime | None = None,
        *,
        operator: Operator | None = None,
    ) -> Grant:
        """Close a break-glass grant's review as one of the reviewers needed.

        Raises :class:`ApprovalRefused` (the holder, their chain, someone outside the review
        groups, or a second note by the same reviewer), :class:`UnknownGrant` and
        :class:`Conflict` (not a break-glass grant, or already closed).
        """
        now = now or datetime.now(UTC)
        note = _reason(note, "review")
        person = self.directory.principal(reviewer)
        refused: ApprovalRefused | None = None
        view: Grant | None = None
        with self.db.session() as session:
            row = self._locked_grant(session, grant_id)
            if not row.break_glass:
                raise Conflict(f"grant {grant_id} is not a break-glass grant; it needs no review")
            if row.review == "closed":
                raise Conflict(f"the review of grant {grant_id} is already closed")
            holder, subject = row.principal, row.subject
            owner = self.directory.subject(row.subject).employee
            reviews = self._reviews(session, grant_id)
            try:
                independence.check_reviewer(
                    self.directory, self.settings, row.principal, owner, person
                )
                if any(r.reviewer == reviewer for r in reviews):
                    raise ApprovalRefused(
                        f"{reviewer} has already reviewed grant {grant_id}",
                        rule=independence.ALREADY_ANSWERED,
                    )
            except ApprovalRefused as exc:
                refused = exc
            else:
                session.add(
                    GrantReviewRow(grant_id=grant_id, reviewer=reviewer, note=note, time=now)
                )
                closing = len(reviews) + 1 >= self.settings.reviews_needed
                if closing:
                    row.review = "closed"
                self._record(
                    session,
                    (BreakGlassClosedEntry if closing else BreakGlassReviewEntry)(
                        time=iso(now),
                        grant=grant_id,
                        principal=row.principal,
                        subject=row.subject,
                        reviewer=reviewer,
                        note=note,
                        operator=_by(operator),
                    ),
                    notify="break_glass_closed" if closing else None,
                    now=now,
                )
                session.flush()
                view = _grant(row, self._reviews(session, grant_id))
        if refused is not None:
            # Logged as a refused approval is: a colleague trying to wave a break-glass
            # through is evidence too. Nothing else of the attempt was kept.
            self.journal.append_many(
                [
                    ApprovalRefusedEntry(
                        time=iso(now),
                        grant=grant_id,
                        approver=reviewer,
                        verdict="review",
                        rule=refused.rule,
                        principal=holder,
                        subject=subject,
                        operator=_by(operator),
                    ).to_json()
                ]
            )
            raise refused
        assert view is not None
        self.flush()
        return view

    # -- time passing ----------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Expire unanswered requests past their time and announce grants that ended.

        Idempotent; run by every CLI command and periodically by the service.
        """
        now = now or datetime.now(UTC)
        expired = ended = 0
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(ApprovalRequestRow.id)
                    .where(ApprovalRequestRow.status == "pending")
                    .where(ApprovalRequestRow.expires <= now)
                )
            )
        for request_id in ids:
            with self.db.session() as session:
                row = self._locked_request(session, request_id)
                expired += self._expire_if_due(session, row, now)
        with self.db.session() as session:
            ids = list(
                session.scalars(
                    select(GrantRow.id)
                    .where(GrantRow.end_notified.is_(False))
                    .where(or_(GrantRow.ends <= now, GrantRow.revoked.is_not(None)))
                )
            )
        for grant_id in ids:
            with self.db.session() as session:
                grant = self._locked_grant(session, grant_id)
                if grant.end_notified:
                    continue
                grant.end_notified = True
                if grant.revoked is None:
                    ended += 1
                    self._record(
                        session,
                        self._grant_entry(GrantEndedEntry, _grant(grant), time=iso(grant.ends)),
                        notify="grant_ended",
                        now=now,
                    )
        self.flush()
        return {"requests_expired": expired, "grants_ended": ended}

    def _expire_if_due(self, session: Session, row: ApprovalRequestRow, now: datetime) -> int:
        if row.status != "pending" or row.expires > now:
            return 0
        row.status, row.closed = "expired", row.expires
        self._record(
            session,
            self._request_entry(RequestExpiredEntry, _request(row), now),
            notify="request_expired",
            now=now,
        )
        return 1

    # -- the ledger journal ----------------------------------------------------------------

    def flush(self) -> int:
        """Append every journal entry not yet in the ledger and activate their grants.

        Returns how many were appended. Raises :class:`LedgerUnavailable` (the entries stay
        queued and their grants inactive).
        """
        with self.db.session() as session:
            rows = list(
                session.scalars(
                    select(ApprovalJournalRow)
                    .where(ApprovalJournalRow.ledger_index.is_(None))
                    .order_by(ApprovalJournalRow.id)
                )
            )
            session.expunge_all()
        if not rows:
            return 0
        receipts = self.journal.append_many([{**row.entry, "journal": row.id} for row in rows])
        with self.db.session() as session:
            activated = False
            for row, receipt in zip(rows, receipts, strict=True):
                session.execute(
                    update(ApprovalJournalRow)
                    .where(ApprovalJournalRow.id == row.id)
                    .values(ledger_index=receipt.index)
                )
                if row.grant_id is not None:
                    # The entry just made durable is the one that vouches for the grant.
                    session.execute(
                        update(GrantRow)
                        .where(GrantRow.id == row.grant_id)
                        .values(logged=True, auth_idx=receipt.index)
                    )
                    activated = True
            if activated:
                self._bump_version(session)
        self._invalidate()
        return len(rows)

    def _record(
        self,
        session: Session,
        entry: Entry,
        *,
        notify: str | None = None,
        grant: str | None = None,
        now: datetime | None = None,
    ) -> None:
        """Queue ``entry`` in the journal (appended by :meth:`flush`, which adds its
        ``journal`` member) and its notification ``notify`` in the outbox."""
        data = entry.to_json()
        session.add(ApprovalJournalRow(entry=data, grant_id=grant, ledger_index=None))
        if notify is not None:
            moment = now or datetime.now(UTC)
            body = {"event": notify, **{k: v for k, v in data.items() if k != "type"}}
            session.add(
                NotificationRow(
                    id=_new_id("ntf"),
                    kind=notify,
                    body=body,
                    created=moment,
                    status="pending",
                    attempts=0,
                    next_attempt=moment,
                )
            )

    # -- reading ---------------------------------------------------------------------------

    def request(self, request_id: str) -> Request:
        """The request ``request_id`` with its votes. Raises :class:`UnknownRequest`."""
        with self.db.session() as session:
            row = session.get(ApprovalRequestRow, request_id)
            if row is None:
                raise UnknownRequest(f"unknown request {shown_id(request_id)}")
            return _request(row, self._votes(session, request_id))

    def requests(
        self, *, status: str | None = None, principal: str | None = None, limit: int = 200
    ) -> list[Request]:
        """Requests, newest first, optionally filtered."""
        query = select(ApprovalRequestRow).order_by(ApprovalRequestRow.created.desc()).limit(limit)
        if status is not None:
            query = query.where(ApprovalRequestRow.status == status)
        if principal is not None:
            query = query.where(ApprovalRequestRow.principal == principal)
        with self.db.session() as session:
            return [_request(r, self._votes(session, r.id)) for r in session.scalars(query)]

    def grant(self, grant_id: str) -> Grant:
        """The grant ``grant_id`` with its reviews. Raises :class:`UnknownGrant`."""
        with self.db.session() as session:
            row = session.get(GrantRow, grant_id)
            if row is None:
                raise UnknownGrant(f"unknown grant {shown_id(grant_id)}")
            return _grant(row, self._reviews(session, grant_id))

    def grants(
        self,
        *,
        principal: str | None = None,
        active_at: datetime | None = None,
        review_open: bool = False,
        limit: int = 200,
    ) -> list[Grant]:
        """Grants, newest first; ``active_at`` keeps those honoured at that moment."""
        query = select(GrantRow).order_by(GrantRow.starts.desc()).limit(limit)
        if principal is not None:
            query = query.where(GrantRow.principal == principal)
        if review_open:
            query = query.where(GrantRow.review == "open")
        if active_at is not None:
            query = query.where(GrantRow.ends > active_at).where(GrantRow.revoked.is_(None))
        with self.db.session() as session:
            found = [_grant(r, self._reviews(session, r.id)) for r in session.scalars(query)]
        if active_at is not None:
            found = [g for g in found if g.active_at(active_at)]
        return found

    def active_grant(self, request: AccessRequest) -> GrantFacts | None:
        """The grant covering ``request`` at its time, if one is honoured (a GrantLookup).

        Grants are cached per process; a grant about to be used is re-read from the
        database, so a revocation anywhere takes effect at once. A grant made in another
        process is seen within ``max_staleness`` seconds (until then: no grant, fail closed).
        """
        moment = request.at()
        candidates = [
            g
            for g in self._cached(request.principal)
            if g.subject == request.subject
            and request.category in g.categories
            # Approved for reading is not approved for changing or exporting.
            and request.action in g.actions
            and g.purpose == request.purpose
            # The approvers judged this ticket: another one, even open and on the same subject
            # (staff can open tickets themselves), is not what they approved.
            and (g.ticket is None or g.ticket == request.ticket)
            and g.active_at(moment)
            and (
                request.precision is None
                or request.precision == g.precision
                or g.precision == "precise"
            )
        ]
        for grant in sorted(candidates, key=lambda g: (g.precision != "precise", g.ends)):
            # Re-read what can change (revocation), cheaply: one indexed row, no ORM.
            with self.db.engine.connect() as conn:
                state = conn.execute(
                    select(GrantRow.revoked, GrantRow.logged, GrantRow.auth_idx).where(
                        GrantRow.id == grant.id
                    )
                ).first()
            if state is not None and state.revoked is None and state.logged:
                if self.vouch is not None:
                    # Honoured only as its ledger entry set it (raises AuthorityMismatch).
                    # Only the grant's own entry sets facts for its id, and a cached grant
                    # is active only once logged, which set its auth_idx in the same write.
                    self.vouch("grant", grant.id, state.auth_idx, grant.ledger_facts())
                return grant.facts()
        return None

    def _cached(self, principal: str) -> list[Grant]:
        now = time.monotonic()
        with self._cache_lock:
            fresh = self._cache_version is not None and now - self._checked_at < self.max_staleness
        if not fresh:
            with self.db.session() as session:
                version = int(session.scalar(select(GrantsVersionRow.version)) or 0)
            with self._cache_lock:
                if version != self._cache_version:
                    self._by_principal.clear()
                    self._cache_version = version
                self._checked_at = now
        with self._cache_lock:
            found = self._by_principal.get(principal)
        if found is None:
            cutoff = datetime.now(UTC) - timedelta(days=1)
            with self.db.session() as session:
                found = [
                    _grant(r)
                    for r in session.scalars(
                        select(GrantRow)
                        .where(GrantRow.principal == principal)
                        .where(GrantRow.revoked.is_(None))
                        .where(GrantRow.ends > cutoff)
                    )
                ]
            with self._cache_lock:
                self._by_principal[principal] = found
        return found

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._by_principal.clear()
            self._cache_version = None

    # -- helpers ---------------------------------------------------------------------------

    def _duration(self, asked: timedelta | None, default: timedelta) -> timedelta:
        length = asked if asked is not None else default
        if length <= timedelta(0):
            raise InvalidInput("the duration must be positive")
        if length > self.settings.max_grant_duration:
            hours = self.settings.max_grant_duration.total_seconds() / 3600
            raise InvalidInput(f"the duration exceeds the maximum of {hours:g} hours")
        return length

    def _locked_request(self, session: Session, request_id: str) -> ApprovalRequestRow:
        return _locked(
            session,
            ApprovalRequestRow,
            request_id,
            UnknownRequest(f"unknown request {shown_id(request_id)}"),
        )

    def _locked_grant(self, session: Session, grant_id: str) -> GrantRow:
        missing = UnknownGrant(f"unknown grant {shown_id(grant_id)}")
        return _locked(session, GrantRow, grant_id, missing)

    def _awaiting_review(self, session: Session, principal: str) -> int:
        """How many of ``principal``'s break-glass grants still await review (ended or not:
        each is precise data taken without approval that nobody has looked at yet)."""
        count = session.scalar(
            select(func.count())
            .select_from(GrantRow)
            .where(
                GrantRow.principal == principal,
                GrantRow.break_glass.is_(True),
                GrantRow.review == "open",
            )
        )
        return int(count or 0)

    def _bump_version(self, session: Session) -> None:
        # One statement that inserts the row or bumps it: the first writers of a new
        # database would otherwise both find no row, both insert it and all but one fail;
        # and the row's lock is what serialises the checks made after it (the break-glass
        # limit), so it must be taken even when the row is new.
        session.execute(
            text(
                "INSERT INTO grants_version (id, version) VALUES (1, 1) ON CONFLICT (id) "
                "DO UPDATE SET version = grants_version.version + 1"
            )
        )

    def _votes(self, session: Session, request_id: str) -> list[ApprovalVoteRow]:
        return list(
            session.scalars(
                select(ApprovalVoteRow)
                .where(ApprovalVoteRow.request_id == request_id)
                .order_by(ApprovalVoteRow.time, ApprovalVoteRow.id)
            )
        )

    def _reviews(self, session: Session, grant_id: str) -> list[GrantReviewRow]:
        return list(
            session.scalars(
                select(GrantReviewRow)
                .where(GrantReviewRow.grant_id == grant_id)
                .order_by(GrantReviewRow.time, GrantReviewRow.id)
            )
        )

    def _ring(
        self, session: Session, requester: str, approver: str, now: datetime
    ) -> independence.Ring | None:
        """The shortest chain of approvals within the reciprocal window from ``requester``
        to ``approver`` (``requester`` approved a request of someone who approved … one of
        ``approver``'s), or None: ``approver`` approving ``requester`` would close it.

        It first takes the approval graph's lock, held to the end of the transaction: two
        approvals that each close a ring only together (1 approving 4 while 2 approves 1,
        with 4 → 3 → 2 already there) touch different requests and different pairs, so only
        one lock over every approval's edge makes them take turns. On PostgreSQL that is a
        transaction advisory lock (per schema, so homes sharing a database do not wait on
        each other); SQLite needs none, as answering already holds its one write lock.

        Whether ``approver`` is reachable at all is one recursive query over the votes
        index (by approver and time), each person visited once; only then (a refusal,
        rare) is the path itself found, breadth-first, to name it.
        """
        if not self.db.is_sqlite:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"),
                {"key": _GRAPH_LOCK},
            )
        since = now - self.settings.reciprocal_window
        approved = (
            select(ApprovalVoteRow.approver, ApprovalRequestRow.principal)
            .join(ApprovalRequestRow, ApprovalRequestRow.id == ApprovalVoteRow.request_id)
            .where(ApprovalVoteRow.verdict == "approve")
            .where(ApprovalVoteRow.time >= since)
        )
        start = select(cast(literal(requester), String(128)).label("person"))
        reach = start.cte("reach", recursive=True)
        step = approved.with_only_columns(ApprovalRequestRow.principal).join(
            reach, ApprovalVoteRow.approver == reach.c.person
        )
        reach = reach.union(step)
        found = session.scalar(select(reach.c.person).where(reach.c.person == approver).limit(1))
        if found is None:
            return None
        # came_from[p] = (who p was reached from, when they approved p's request)
        came_from: dict[str, tuple[str, datetime]] = {}
        seen = {requester}
        frontier = [requester]
        while frontier:
            reached: list[str] = []
            for at in range(0, len(frontier), _IN_CHUNK):
                edges = session.execute(
                    approved.with_only_columns(
                        ApprovalVoteRow.approver,
                        ApprovalRequestRow.principal,
                        func.max(ApprovalVoteRow.time),
                    )
                    .where(ApprovalVoteRow.approver.in_(frontier[at : at + _IN_CHUNK]))
                    .group_by(ApprovalVoteRow.approver, ApprovalRequestRow.principal)
                    .order_by(ApprovalVoteRow.approver, ApprovalRequestRow.principal)
                )
                for source, target, when in edges:
                    if target in seen:
                        continue
                    seen.add(target)
                    came_from[target] = (source, when)
                    if target == approver:
                        return _path(came_from, requester, approver)
                    reached.append(target)
            frontier = reached
        return None  # not reachable after all: the query and the walk disagree on nothing

    @staticmethod
    def _request_entry(kind: type[_R], request: Request, now: datetime, **more: Any) -> _R:
        """The entry ``kind`` about ``request`` at ``now``; ``more`` sets the members only
        that kind has (or overrides ``reason``, a withdrawal's own)."""
        members: dict[str, Any] = {
            "time": iso(now),
            "request": request.id,
            "principal": request.principal,
            "subject": request.subject,
            "categories": tuple(request.categories),
            "actions": tuple(request.actions),
            "purpose": request.purpose,
            "ticket": request.ticket,
            "precision": request.precision,
            "reason": request.reason,
            "approvals_needed": request.approvals_needed,
            "groups_needed": tuple(request.groups_needed),
            "expires": iso(request.expires),
        }
        return kind(**{**members, **more})

    @staticmethod
    def _grant_entry(kind: type[_G], grant: Grant, **more: Any) -> _G:
        """The entry ``kind`` about ``grant``: every fact a decision reads from it, as
        :meth:`Grant.ledger_facts` states them (the authority check compares the two);
        ``more`` sets the members only that kind has, or overrides ``time``/``reason``."""
        facts = grant.ledger_facts()
        members: dict[str, Any] = {
            "time": iso(grant.starts),
            "grant": grant.id,
            "request": grant.request_id,
            **{k: tuple(v) if isinstance(v, list) else v for k, v in facts.items()},
            "reason": grant.reason,
        }
        return kind(**{**members, **more})


__all__ = ["Approvals", "Journal", "LedgerUnavailable"]
