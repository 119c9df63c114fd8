"""What the approvals part hands out: requests, votes and grants as plain values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from custos import times
from custos.errors import ConfigurationError, InvalidInput
from custos.policy import GrantFacts
from custos.vocabulary import Action


def iso(moment: datetime | None) -> str | None:
    """:func:`custos.times.iso`, passing ``None`` through (a grant not yet revoked, …)."""
    return None if moment is None else times.iso(moment)


def covered_actions(actions: Sequence[str]) -> tuple[str, ...]:
    """The actions a request or grant covers, in the vocabulary's order, each once.
    Raises :class:`InvalidInput` for none or an unknown one."""
    known = get_args(Action)
    unknown = sorted({a for a in actions if a not in known})
    if unknown:
        raise InvalidInput(
            f"unknown action(s) {', '.join(map(repr, unknown))}",
            hint="actions are " + ", ".join(known),
        )
    if not actions:
        raise InvalidInput("a request needs at least one action", hint="e.g. read")
    return tuple(a for a in known if a in actions)


@dataclass(frozen=True)
class ApprovalSettings:
    """``[approvals]`` of config.toml, with the defaults a privacy office would start from."""

    #: Unanswered requests expire after this long.
    request_ttl: timedelta = timedelta(hours=12)
    #: Grants last this long unless the request asks for less (or more, up to the maximum).
    grant_duration: timedelta = timedelta(hours=8)
    max_grant_duration: timedelta = timedelta(hours=24)
    break_glass_duration: timedelta = timedelta(hours=4)
    #: A approving B's request within this window bars B from approving A's.
    reciprocal_window: timedelta = timedelta(days=30)
    #: Groups whose members may approve any request (the obligation's groups may too).
    approver_groups: tuple[str, ...] = ("approvers", "privacy_office")
    #: Groups whose members may review (close) break-glass grants, and how many must.
    review_groups: tuple[str, ...] = ("privacy_office",)
    reviews_needed: int = 2
    #: A responder with this many break-glass grants still awaiting review may not break
    #: glass again until reviewers catch up: each one is precise data taken without approval.
    break_glass_open_limit: int = 3

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ApprovalSettings:
        """Build from the ``[approvals]`` table. Raises :class:`ConfigurationError`."""
        try:
            hours = {
                "request_ttl": float(config.get("request_ttl_hours", 12)),
                "grant_duration": float(config.get("grant_hours", 8)),
                "max_grant_duration": float(config.get("max_grant_hours", 24)),
                "break_glass_duration": float(config.get("break_glass_hours", 4)),
                "reciprocal_window": float(config.get("reciprocal_window_days", 30)) * 24,
            }
            groups = _groups(config, "approver_groups", cls.approver_groups)
            review = _groups(config, "review_groups", cls.review_groups)
            reviews = int(config.get("reviews_needed", 2))
            open_limit = int(config.get("break_glass_open_limit", 3))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"[approvals] has a value of the wrong type: {exc}") from None
        for name, value in hours.items():
            if value <= 0:
                raise ConfigurationError(f"[approvals] {name} must be positive")
        if hours["grant_duration"] > hours["max_grant_duration"]:
            raise ConfigurationError("[approvals] grant_hours exceeds max_grant_hours")
        if reviews < 1:
            raise ConfigurationError("[approvals] reviews_needed must be at least 1")
        if open_limit < 1:
            raise ConfigurationError("[approvals] break_glass_open_limit must be at least 1")
        return cls(
            **{name: timedelta(hours=value) for name, value in hours.items()},
            approver_groups=groups,
            review_groups=review,
            reviews_needed=reviews,
            break_glass_open_limit=open_limit,
        )


@dataclass(frozen=True)
class Vote:
    approver: str
    verdict: str
    reason: str
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "approver": self.approver,
            "verdict": self.verdict,
            "reason": self.reason,
            "time": iso(self.time),
        }


@dataclass(frozen=True)
class Grant:
    """A time-bound grant (see :class:`custos.store.approvals.GrantRow`)."""

    id: str
    request_id: str | None
    principal: str
    subject: str
    categories: tuple[str, ...]
    actions: tuple[str, ...]
    purpose: str
    ticket: str | None
    precision: str
    approvals: int
    approver_groups: tuple[str, ...]
    approvers: tuple[str, ...]
    reason: str
    starts: datetime
    ends: datetime
    break_glass: bool
    review: str
    logged: bool
    revoked: datetime | None
    revoked_by: str | None
    reviews: tuple[Vote, ...] = field(default=())
    #: The ledger index of the entry that set this grant's facts (``grant`` or
    #: ``break_glass``); None until that entry is durable.
    authority: int | None = None

    def active_at(self, moment: datetime) -> bool:
        return self.logged and self.revoked is None and self.starts <= moment < self.ends

    def status(self, moment: datetime) -> str:
        if self.revoked is not None:
            return "revoked"
        if not self.logged:
            return "pending_ledger"
        if moment >= self.ends:
            return "ended"
        return "active" if moment >= self.starts else "scheduled"

    def facts(self) -> GrantFacts:
        return GrantFacts(
            id=self.id,
            principal=self.principal,
            subject=self.subject,
            categories=self.categories,
            purpose=self.purpose,
            precision=self.precision,
            approvals=self.approvals,
            approver_groups=self.approver_groups,
            starts=self.starts,
            ends=self.ends,
            break_glass=self.break_glass,
            revoked=self.revoked is not None,
            actions=self.actions,
            authority=self.authority,
        )

    def ledger_facts(self) -> dict[str, Any]:
        """Every fact a decision reads from this grant, as its ledger entry states it (JSON
        values); custos honours the grant only while its row still says exactly this."""
        return {
            "principal": self.principal,
            "subject": self.subject,
            "categories": list(self.categories),
            "actions": list(self.actions),
            "purpose": self.purpose,
            "ticket": self.ticket,
            "precision": self.precision,
            "approvals": self.approvals,
            "approver_groups": list(self.approver_groups),
            "approvers": list(self.approvers),
            "starts": times.iso(self.starts),
            "ends": times.iso(self.ends),
            "break_glass": self.break_glass,
        }

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "request": self.request_id,
            "status": self.status(now or datetime.now(UTC)),
            # What its ledger entry states (approvals: how many approvers there were).
            **self.ledger_facts(),
            "reason": self.reason,
            "review": self.review,
            "reviews": [r.to_dict() for r in self.reviews],
            "revoked": iso(self.revoked),
            "revoked_by": self.revoked_by,
        }


@dataclass(frozen=True)
class Request:
    """A just-in-time access request and the answers it has had so far."""

    id: str
    principal: str
    subject: str
    categories: tuple[str, ...]
    actions: tuple[str, ...]
    purpose: str
    ticket: str | None
    precision: str
    reason: str
    duration: timedelta
    approvals_needed: int
    groups_needed: tuple[str, ...]
    policies: tuple[str, ...]
    status: str
    created: datetime
    expires: datetime
    closed: datetime | None
    grant_id: str | None
    votes: tuple[Vote, ...] = field(default=())

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(v.approver for v in self.votes if v.verdict == "approve")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "principal": self.principal,
            "subject": self.subject,
            "categories": list(self.categories),
            "actions": list(self.actions),
            "purpose": self.purpose,
            "ticket": self.ticket,
            "precision": self.precision,
            "reason": self.reason,
            "duration_hours": round(self.duration.total_seconds() / 3600, 3),
            "approvals_needed": self.approvals_needed,
            "groups_needed": list(self.groups_needed),
            "approvals_so_far": len(self.approvers),
            "policies": list(self.policies),
            "created": iso(self.created),
            "expires": iso(self.expires),
            "closed": iso(self.closed),
            "grant": self.grant_id,
            "votes": [v.to_dict() for v in self.votes],
        }


def _groups(config: dict[str, Any], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of group names from ``[approvals] key``. Raises :class:`ConfigurationError`:
    a bare string would be taken letter by letter, and any one-letter group would approve."""
    value = config.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise ConfigurationError(
            f'[approvals] {key} must be a list of group names, such as ["privacy_office"]'
        )
    return tuple(value)
