"""What is asked (:class:`AccessRequest`), what is known (:class:`Facts`), and what is
decided (:class:`Decision`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from custos.directory.model import Principal, Subject, Ticket
from custos.errors import InvalidInput
from custos.vocabulary import ACTIONS, PRECISIONS, Vocabulary, unknown_word


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One request for one category of one subject's data.

    ``precision`` None means "the best the policies allow": custos asks coarse first for the
    pack's coarse-by-default categories unless a grant covers the request. ``category`` and
    ``purpose`` are words of the deciding pack's vocabulary (:func:`check_words`). ``via``
    names the tool that asks on ``principal``'s behalf (its principal id), if one does.
    """

    principal: str
    subject: str
    category: str
    purpose: str
    action: str = "read"
    ticket: str | None = None
    precision: str | None = None
    break_glass: bool = False
    reason: str | None = None
    time: datetime | None = None
    via: str | None = None

    def __post_init__(self) -> None:
        problems = []
        # Category and purpose are the pack's words, checked against it (check_words).
        for name in ("category", "purpose"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string")
        if self.action not in ACTIONS:
            problems.append(unknown_word("action", self.action))
        if self.precision is not None and self.precision not in PRECISIONS:
            problems.append(unknown_word("precision", self.precision))
        if self.time is not None and self.time.tzinfo is None:
            problems.append("time must carry a time zone")
        if problems:
            raise InvalidInput("invalid access request: " + "; ".join(problems))

    def at(self) -> datetime:
        return self.time or datetime.now(UTC)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "principal": self.principal,
            "subject": self.subject,
            "category": self.category,
            "purpose": self.purpose,
            "action": self.action,
        }
        for key in ("ticket", "precision", "reason", "via"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.break_glass:
            body["break_glass"] = True
        if self.time is not None:
            body["time"] = self.time.isoformat().replace("+00:00", "Z")
        return body


def check_words(requests: Iterable[AccessRequest], vocabulary: Vocabulary) -> None:
    """Refuse requests whose category or purpose ``vocabulary`` does not know, before
    anything is decided. Raises :class:`InvalidInput` naming the valid words."""
    for request in requests:
        problems = vocabulary.problems(
            [("category", request.category), ("purpose", request.purpose)]
        )
        if problems:
            raise InvalidInput("invalid access request: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class GrantFacts:
    """An approved, time-bound grant as the policies see it."""

    id: str
    principal: str
    subject: str
    categories: tuple[str, ...]
    purpose: str
    precision: str
    approvals: int
    approver_groups: tuple[str, ...]
    starts: datetime
    ends: datetime
    break_glass: bool = False
    revoked: bool = False
    #: What the approvers approved; the least (reading) unless they approved more.
    actions: tuple[str, ...] = ("read",)
    #: The ledger index of the entry that set this grant's facts.
    authority: int | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the policies need about one request, loaded by the caller.

    ``linked`` holds the other accounts of the subject's link group: the policies see the
    subject with the protection of the whole group and the strictest residency of its
    jurisdictions (DESIGN.md principle 11), so ``allowed_countries`` must be that of every
    jurisdiction in the group together (:func:`strictest`).
    """

    principal: Principal
    subject: Subject
    allowed_countries: tuple[str, ...]
    ticket: Ticket | None = None
    grant: GrantFacts | None = None
    linked: tuple[Subject, ...] = ()

    @property
    def protected(self) -> tuple[str, ...]:
        """The protected flags of the subject's whole link group, sorted."""
        if not self.linked:
            return self.subject.protected
        return tuple(sorted({f for s in (self.subject, *self.linked) for f in s.protected}))

    @property
    def jurisdictions(self) -> tuple[str, ...]:
        """The jurisdictions of the subject's whole link group, sorted."""
        if not self.linked:
            return (self.subject.jurisdiction,)
        return tuple(sorted({s.jurisdiction for s in (self.subject, *self.linked)}))


def strictest(
    allowed: Callable[[str], tuple[str, ...]], jurisdictions: Iterable[str]
) -> tuple[str, ...]:
    """The countries whose staff may see data beyond coarse level under every one of
    ``jurisdictions`` (``allowed`` gives each one's countries): a linked group's residency is
    the strictest of its members', so an account cannot be reached through its twin."""
    found: tuple[str, ...] | None = None
    for jurisdiction in jurisdictions:
        countries = allowed(jurisdiction)
        found = countries if found is None else tuple(c for c in found if c in countries)
    return found or ()


@dataclass(frozen=True, slots=True)
class Reason:
    """A policy that determined the outcome, and what it means in words."""

    policy: str
    effect: str
    explanation: str

    def to_dict(self) -> dict[str, str]:
        return {"policy": self.policy, "effect": self.effect, "explanation": self.explanation}


@dataclass(frozen=True, slots=True)
class ApprovalsNeeded:
    """What an approval must look like: N distinct approvers covering these groups."""

    approvals: int
    groups: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"approvals": self.approvals, "groups": list(self.groups)}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request, with its reasons and obligations.

    ``outcome`` is ``allow``, ``deny`` or ``approval_required``; ``precision`` is what may be
    released (None unless allowed); ``approvals`` is set when approval is required.
    """

    request: AccessRequest
    outcome: str
    precision: str | None
    reasons: tuple[Reason, ...]
    explanation: str
    policy_version: str
    approvals: ApprovalsNeeded | None = None
    review_required: bool = False
    grant: str | None = None
    #: How the request's own ticket explained it as it was decided (``ticket`` or
    #: ``own_ticket``, see :func:`ticket_explanation`); None otherwise.
    explained: str | None = None
    errors: tuple[str, ...] = field(default=())
    #: The ledger entries that set the facts this decision used, by kind (``principal``,
    #: ``subject``, ``ticket``, ``grant``: an index each; ``linked``: the index of each other
    #: account of the subject's link group, by id): what ``custos log verify`` replays it
    #: against.
    authority: Mapping[str, Any] | None = None
    #: Set by the access path once the decision is durably in the ledger.
    event_id: str | None = None
    ledger_index: int | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.outcome,
            "precision": self.precision,
            "reasons": [r.to_dict() for r in self.reasons],
            "explanation": self.explanation,
            "approvals_needed": self.approvals.to_dict() if self.approvals else None,
            "review_required": self.review_required,
            "grant": self.grant,
            "policy_version": self.policy_version,
            "request": self.request.to_dict(),
            "event_id": self.event_id,
            "ledger_index": self.ledger_index,
        }


#: The action of an aggregate query: counting over many subjects (see :class:`AggregateRequest`).
AGGREGATE = "aggregate"


@dataclass(frozen=True, slots=True)
class AggregateRequest:
    """A request to count one category over many subjects (an aggregate SQL query of the
    data map's source ``dataset``): no subject, so no ticket, grant or subject-level policy
    applies; the policies say which roles may count what, for which purpose. Not an
    :class:`AccessRequest`: no grant can ever cover it (grants are per subject)."""

    principal: str
    category: str
    purpose: str
    dataset: str
    ticket: str | None = None
    time: datetime | None = None

    action: str = AGGREGATE

    def __post_init__(self) -> None:
        # Words are the active pack's: the caller checks them (as for AccessRequest).
        problems = []
        if self.action != AGGREGATE:
            problems.append(f"an aggregate request's action is {AGGREGATE}")
        if self.time is not None and self.time.tzinfo is None:
            problems.append("time must carry a time zone")
        if problems:
            raise InvalidInput("invalid aggregate request: " + "; ".join(problems))

    def at(self) -> datetime:
        return self.time or datetime.now(UTC)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "principal": self.principal,
            "dataset": self.dataset,
            "category": self.category,
            "purpose": self.purpose,
            "action": self.action,
        }
        if self.ticket is not None:
            body["ticket"] = self.ticket
        if self.time is not None:
            body["time"] = self.time.isoformat().replace("+00:00", "Z")
        return body


@dataclass(frozen=True, slots=True)
class AggregateDecision:
    """The outcome of an :class:`AggregateRequest`: ``allow`` or ``deny`` (no approval can
    lift a refusal: grants are per subject), with its reasons. ``precision`` and
    ``approvals`` are always None (an aggregate releases counts, not a subject's values)."""

    request: AggregateRequest
    outcome: str
    reasons: tuple[Reason, ...]
    explanation: str
    policy_version: str
    errors: tuple[str, ...] = field(default=())
    #: ``{"principal": index}``: the ledger entry that set the principal's facts.
    authority: Mapping[str, Any] | None = None
    event_id: str | None = None
    ledger_index: int | None = None
    precision: None = None
    approvals: None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == "allow"

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.outcome,
            "precision": None,
            "reasons": [r.to_dict() for r in self.reasons],
            "explanation": self.explanation,
            "policy_version": self.policy_version,
            "request": self.request.to_dict(),
            "event_id": self.event_id,
            "ledger_index": self.ledger_index,
        }


def ticket_explanation(req: AccessRequest, facts: Facts) -> str | None:
    """How the ticket ``req`` cites explains it as it is decided: ``ticket`` when the ticket
    covers it (:meth:`Ticket.covers`) and was opened by someone else, ``own_ticket`` when it
    covers it but the principal opened it themselves, None otherwise — and None for
    break-glass and exports, which detection reviews whatever explains them.

    Only allowed decisions carry it, in their ledger entry (``explained``). Detection takes
    such an access as explained that way without looking the ticket up again: the guarded
    path checked it against the directory when it let the access through.
    """
    ticket = facts.ticket
    if (
        ticket is None
        or ticket.id != req.ticket
        or req.break_glass
        or (facts.grant is not None and facts.grant.break_glass)
        or req.action == "export"
        or not ticket.covers(req.principal, req.subject, req.purpose, req.at())
    ):
        return None
    return "own_ticket" if ticket.opened_by == req.principal else "ticket"
