"""Deciding requests on the guarded path: load the facts, ask the policies.

This is where the directory (who, about whom, why), approvals (grants) and policy meet.
Unknown principals, subjects and tickets are errors (they name the id) rather than denials,
so that a typo is never mistaken for a policy outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from custos import telemetry
from custos.config import Settings
from custos.directory import DirectoryStore
from custos.errors import AuthorityMismatch
from custos.policy import AccessRequest, Decision, Facts, GrantFacts, PolicyEngine, Reason
from custos.policy.model import strictest

#: The rule of a decision denied because a fact it rests on is not what the ledger set.
AUTHORITY_MISMATCH = "authority-mismatch"

#: Finds the active grant covering (principal, subject, category, purpose) at a time, if any.
GrantLookup = Callable[[AccessRequest], GrantFacts | None]


def _no_grants(_request: AccessRequest) -> GrantFacts | None:
    return None


class DecisionMaker:
    """Loads :class:`Facts` for requests and decides them with a :class:`PolicyEngine`."""

    def __init__(
        self,
        settings: Settings,
        directory: DirectoryStore,
        engine: PolicyEngine,
        grants: GrantLookup = _no_grants,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.engine = engine
        self.grants = grants

    def facts(self, request: AccessRequest) -> Facts:
        """The facts of ``request``.

        The subject comes with the other accounts of its link group (from the directory's
        cache: no query per decision once loaded) and the residency of the whole group.
        Raises ``UnknownPrincipal``, ``UnknownSubject`` or ``UnknownTicket`` for unknown ids,
        ``AuthorityMismatch`` for a row (or a link group) the ledger does not vouch for.
        """
        principal = self.directory.principal(request.principal)
        subject = self.directory.subject(request.subject)
        linked = self.directory.link_group(subject)
        ticket = self.directory.ticket(request.ticket) if request.ticket else None
        if linked:
            jurisdictions = {subject.jurisdiction, *(s.jurisdiction for s in linked)}
            allowed = strictest(self.settings.allowed_countries, sorted(jurisdictions))
        else:
            allowed = self.settings.allowed_countries(subject.jurisdiction)
        return Facts(
            principal=principal,
            subject=subject,
            allowed_countries=allowed,
            ticket=ticket,
            grant=self.grants(request),
            linked=linked,
        )

    def decide(self, request: AccessRequest) -> Decision:
        """Decide one request (see :meth:`PolicyEngine.decide`). Raises for unknown ids."""
        return self.decide_many([request])[0]

    def decide_many(self, requests: Sequence[AccessRequest]) -> list[Decision]:
        """Decide many requests in few Cedar calls. Raises for the first unknown id.

        A request whose facts the ledger does not vouch for (:class:`AuthorityMismatch`: a
        row edited, inserted or moved outside custos) is denied with the rule
        ``authority-mismatch``, never decided on those facts. Each decision names the ledger
        entries that set the facts it used (``authority``).
        """
        with telemetry.span("custos.decide", **{"custos.requests": len(requests)}) as current:
            decisions = self._decide_many(requests)
            outcomes = Counter(d.outcome for d in decisions)
            telemetry.annotate(
                current, **{f"custos.decisions.{k}": v for k, v in sorted(outcomes.items())}
            )
            return decisions

    def _decide_many(self, requests: Sequence[AccessRequest]) -> list[Decision]:
        known: list[tuple[AccessRequest, Facts]] = []
        refused: dict[int, Decision] = {}
        for position, request in enumerate(requests):
            try:
                known.append((request, self.facts(request)))
            except AuthorityMismatch as exc:
                refused[position] = self._refusal(request, exc)
        decided = iter(self.engine.decide_many(known))
        facts = iter(known)
        out: list[Decision] = []
        for position in range(len(requests)):
            if position in refused:
                out.append(refused[position])
            else:
                decision = next(decided)
                out.append(replace(decision, authority=_authority(next(facts)[1])))
        return out

    def _refusal(self, request: AccessRequest, exc: AuthorityMismatch) -> Decision:
        return Decision(
            request=request,
            outcome="deny",
            precision=None,
            reasons=(
                Reason(policy="authority-mismatch", effect="forbid", explanation=exc.message),
            ),
            explanation=f"Denied: {exc.message}.",
            policy_version=self.engine.pack.digest,
        )


def _authority(facts: Facts) -> dict[str, Any]:
    """The ledger entries that set ``facts``, by kind (only those known); ``linked`` maps
    each other account of the subject's link group to its entry."""
    found: dict[str, Any] = {
        "principal": facts.principal.authority,
        "subject": facts.subject.authority,
        "ticket": facts.ticket.authority if facts.ticket is not None else None,
        "grant": facts.grant.authority if facts.grant is not None else None,
    }
    if facts.linked:
        found["linked"] = {s.id: s.authority for s in facts.linked if s.authority is not None}
    return {kind: index for kind, index in found.items() if index is not None}
