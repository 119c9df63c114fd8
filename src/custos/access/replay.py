"""Replaying logged decisions from the ledger alone.

A decision entry names what it asked (principal, subject, category, purpose, action, ticket,
the precision asked for, break-glass), the policy version that decided it and the authority
entries that set its facts. The ledger holds every policy version's files (``policy_version``),
the decision settings (``settings``) and every authority fact, so a follower that reads the log
in order can rebuild the facts as custos had them and decide again. A decision whose outcome or
precision differs was not made on what the ledger says (or the policy code changed how it
reads the same policies): either way, a person should look.

Guarded SQL decisions (``decision`` and ``aggregate_decision`` entries naming a ``data_map``)
must name a map the ledger took before them (a ``data_map`` entry): one that does not was
decided under a ``sources.yaml`` custos never ledgered, which is reported whether or not the
decision is replayed.

What replay does not cover: decisions logged before they named their authority (no
``authority`` field), and refusals for ``authority-mismatch`` (nothing vouched was decided).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from custos.authority.projection import AuthorityProjection
from custos.config import Settings
from custos.directory import Principal, Subject, Ticket
from custos.errors import CustosError
from custos.ledger.entries import (
    AggregateDecisionEntry,
    DataMapEntry,
    DecisionEntry,
    Entry,
    PolicyVersionEntry,
    SettingsEntry,
)
from custos.policy import AccessRequest, AggregateRequest, Facts, GrantFacts, PolicyEngine
from custos.policy.model import strictest
from custos.policy.pack import pack_from_files
from custos.times import utc_instant


@dataclass(frozen=True, slots=True)
class Replayed:
    """One decision decided again: what was logged, what replay decided (None when it could
    not), and ``problem`` saying why they differ or why replay could not run."""

    index: int
    logged: Mapping[str, Any]
    replayed: Mapping[str, Any] | None
    problem: str | None

    @property
    def same(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "same": self.same,
            "logged": dict(self.logged),
            "replayed": dict(self.replayed) if self.replayed is not None else None,
            "problem": self.problem,
        }


def _time(value: Any) -> Any:
    return utc_instant(value) if value is not None else None


def principal_of(facts: Mapping[str, Any]) -> Principal:
    return Principal(
        id=facts["id"],
        name="",
        kind=facts["kind"],
        role=facts["role"],
        team=facts["team"],
        country=facts["country"],
        status=facts["status"],
        manager=facts.get("manager"),
        groups=tuple(facts.get("groups") or ()),
        role_since=_time(facts.get("role_since")),
    )


def subject_of(facts: Mapping[str, Any]) -> Subject:
    return Subject(
        id=facts["id"],
        jurisdiction=facts["jurisdiction"],
        protected=tuple(facts.get("protected") or ()),
        employee=facts.get("employee"),
        linked=tuple(facts.get("linked") or ()),
        link_group=facts.get("link_group"),
    )


def ticket_of(facts: Mapping[str, Any]) -> Ticket:
    return Ticket(
        id=facts["id"],
        kind=facts["kind"],
        subject=facts["subject"],
        assignee=facts["assignee"],
        status=facts["status"],
        opened=_time(facts.get("opened")),
        closed=_time(facts.get("closed")),
        opened_by=facts.get("opened_by"),
    )


def grant_of(facts: Mapping[str, Any], revoked: bool) -> GrantFacts:
    return GrantFacts(
        id=facts["id"],
        principal=facts["principal"],
        subject=facts["subject"],
        categories=tuple(facts["categories"]),
        purpose=facts["purpose"],
        precision=facts["precision"],
        approvals=int(facts["approvals"]),
        approver_groups=tuple(facts["approver_groups"]),
        starts=utc_instant(facts["starts"]),
        ends=utc_instant(facts["ends"]),
        break_glass=bool(facts.get("break_glass")),
        revoked=revoked,
        actions=tuple(facts.get("actions") or ("read",)),
    )


def _outcome(decision: DecisionEntry | AggregateDecisionEntry) -> dict[str, Any]:
    """What was logged: the outcome, and for whom (and through which tool, if one asked on
    the principal's behalf)."""
    found: dict[str, Any] = {
        "decision": decision.decision,
        "precision": decision.precision if isinstance(decision, DecisionEntry) else None,
        "reasons": list(decision.reasons),
        "principal": decision.principal,
    }
    if isinstance(decision, DecisionEntry) and decision.via is not None:
        found["via"] = decision.via
    return found


class Replayer:
    """Follows the ledger in order and replays the decisions it is asked to (``wanted``:
    a set of indexes, or None for every decision that names its authority)."""

    def __init__(
        self, settings: Settings, wanted: set[int] | None = None, *, stride: int = 1
    ) -> None:
        """``stride`` > 1 replays about one decision in every ``stride`` ledger entries (the
        first decision at or after each multiple), for ``--sample`` on big logs."""
        self.settings = settings
        self.wanted = wanted
        self.stride = max(1, stride)
        self._next = 0
        self.projection = AuthorityProjection()
        self.results: list[Replayed] = []
        self._packs: dict[str, Mapping[str, str]] = {}
        self._engines: dict[str, PolicyEngine] = {}
        self._residency: Mapping[str, Any] | None = None
        self._settings: str | None = None
        self._maps: set[str] = set()

    def position(self) -> int:
        """The next index this replayer needs (it lives in memory: it starts at 0)."""
        return self.projection.position()

    def persist(self, end: int) -> None:
        """Nothing to write: replay is run afresh each time."""
        self.projection.persist(end)

    def follow(self, index: int, entry: Entry) -> None:
        """Take in the entry at ``index`` (entries must come in index order)."""
        match entry:
            case PolicyVersionEntry(digest=digest, files=files):
                self._packs[digest] = files
            case SettingsEntry(residency=residency, digest=digest):
                self._residency = residency
                self._settings = digest
            case DataMapEntry(digest=digest):
                self._maps.add(digest)
            case DecisionEntry() | AggregateDecisionEntry() if (
                entry.data_map is not None
                and entry.data_map not in self._maps
                and (self.wanted is None or index in self.wanted)
            ):
                self.results.append(
                    Replayed(
                        index,
                        _outcome(entry),
                        None,
                        f"decision at index {index} was made under data map "
                        f"{entry.data_map[:12]}, which the ledger never took",
                    )
                )
            case DecisionEntry() | AggregateDecisionEntry() if (
                entry.authority is not None
                and (self.wanted is None or index in self.wanted)
                and index >= self._next
            ):
                if isinstance(entry, DecisionEntry):
                    self.results.append(self.replay(index, entry))
                else:
                    self.results.append(self.replay_aggregate(index, entry))
                self._next = (index // self.stride + 1) * self.stride if self.stride > 1 else 0
        self.projection.follow(index, entry)

    def _engine(self, digest: str) -> PolicyEngine:
        engine = self._engines.get(digest)
        if engine is None:
            files = self._packs.get(digest)
            if files is None:
                raise LookupError(f"policy version {digest[:12]} is not in the ledger")
            schemas = [name for name in files if name.endswith(".cedarschema")]
            if len(schemas) != 1:
                raise LookupError(f"policy version {digest[:12]} has no single schema file")
            pack = pack_from_files(f"policy version {digest[:12]}", files)
            if pack.digest != digest:
                raise LookupError(f"policy version {digest[:12]}: its files do not hash to it")
            engine = self._engines[digest] = PolicyEngine(pack)
        return engine

    def _allowed_countries(self, jurisdiction: str) -> tuple[str, ...]:
        if self._residency is None:
            return self.settings.allowed_countries(jurisdiction)
        return tuple(self._residency.get(jurisdiction, (jurisdiction,)))

    def _link_group(self, subject: Subject) -> tuple[Subject, ...]:
        """The other accounts of ``subject``'s link group as the ledger set them so far,
        followed through each one's ledgered links (not through what the decision named:
        the projection checks those were the latest). Raises ``KeyError`` for a link to a
        subject the ledger never set."""
        latest = self.projection.latest
        members = {subject.id: subject}
        waiting = list(subject.linked)
        while waiting:
            key = waiting.pop()
            if key not in members:
                members[key] = subject_of(latest[("subject", key)][1])
                waiting.extend(members[key].linked)
        return tuple(members[key] for key in sorted(members) if key != subject.id)

    def replay(self, index: int, entry: DecisionEntry) -> Replayed:
        """Decide the decision ``entry`` (at ``index``) again on the state followed so far."""
        logged = _outcome(entry)
        latest = self.projection.latest
        used: Mapping[str, Any] = entry.authority or {}
        try:
            principal = principal_of(latest[("principal", entry.principal)][1])
            subject = subject_of(latest[("subject", entry.subject)][1])
            linked = self._link_group(subject)
            ticket = None
            if "ticket" in used and entry.ticket:
                ticket = ticket_of(latest[("ticket", entry.ticket)][1])
            grant = None
            if "grant" in used and entry.grant:
                name = entry.grant
                revoked = name in self.projection.revoked
                grant = grant_of(latest[("grant", name)][1], revoked)
            request = AccessRequest(
                principal=entry.principal,
                subject=entry.subject,
                category=entry.category,
                purpose=entry.purpose,
                action=entry.action,
                ticket=entry.ticket,
                precision=entry.requested_precision,
                break_glass=entry.break_glass,
                time=utc_instant(entry.at or entry.time),
            )
            jurisdictions = sorted({subject.jurisdiction, *(s.jurisdiction for s in linked)})
            facts = Facts(
                principal=principal,
                subject=subject,
                allowed_countries=strictest(self._allowed_countries, jurisdictions),
                ticket=ticket,
                grant=grant,
                linked=linked,
            )
            decision = self._engine(str(entry.policy_version)).decide(request, facts)
        except (KeyError, LookupError, ValueError, TypeError, CustosError) as exc:
            problem = exc.message if isinstance(exc, CustosError) else str(exc)
            return Replayed(index, logged, None, f"cannot replay: {problem}")
        again = {
            "decision": decision.outcome,
            "precision": decision.precision,
            "reasons": [r.policy for r in decision.reasons],
        }
        return self._compared(index, entry, logged, again)

    def replay_aggregate(self, index: int, entry: AggregateDecisionEntry) -> Replayed:
        """Decide the aggregate decision ``entry`` (at ``index``) again on the principal's
        facts as the ledger set them so far."""
        logged = _outcome(entry)
        try:
            principal = principal_of(self.projection.latest[("principal", entry.principal)][1])
            request = AggregateRequest(
                principal=entry.principal,
                category=entry.category,
                purpose=entry.purpose,
                dataset=entry.dataset,
                ticket=entry.ticket,
                time=utc_instant(entry.at or entry.time),
            )
            engine = self._engine(str(entry.policy_version))
            decision = engine.decide_aggregate([(request, principal)])[0]
        except (KeyError, LookupError, ValueError, TypeError, CustosError) as exc:
            problem = exc.message if isinstance(exc, CustosError) else str(exc)
            return Replayed(index, logged, None, f"cannot replay: {problem}")
        again = {
            "decision": decision.outcome,
            "precision": None,
            "reasons": [r.policy for r in decision.reasons],
        }
        return self._compared(index, entry, logged, again)

    def _compared(
        self,
        index: int,
        entry: DecisionEntry | AggregateDecisionEntry,
        logged: dict[str, Any],
        again: dict[str, Any],
    ) -> Replayed:
        named = entry.settings
        if named is not None and named != self._settings:
            # The decision was made under settings the ledger does not hold as the latest:
            # a config changed by hand (and the marker that says it was ledgered with it).
            held = f"{self._settings[:12]}" if self._settings is not None else "none"
            problem = (
                f"decision at index {index} was made under settings {str(named)[:12]}, "
                f"and the latest settings the ledger holds are {held}"
            )
            return Replayed(index, logged, again, problem)
        if (again["decision"], again["precision"]) != (logged["decision"], logged["precision"]):
            problem = (
                f"decision at index {index} was logged as {logged['decision']}"
                f"/{logged['precision']}, and the ledger's authority decides "
                f"{again['decision']}/{again['precision']}"
            )
            return Replayed(index, logged, again, problem)
        return Replayed(index, logged, again, None)
