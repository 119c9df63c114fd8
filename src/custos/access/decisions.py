"""Deciding requests on the guarded path: load the facts, ask the policies.

This is where the directory (who, about whom, why), approvals (grants) and policy meet.
Unknown principals, subjects and tickets are errors (they name the id) rather than denials,
so that a typo is never mistaken for a policy outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from custos.config import Settings
from custos.directory import DirectoryStore
from custos.policy import AccessRequest, Decision, Facts, GrantFacts, PolicyEngine

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

        Raises ``UnknownPrincipal``, ``UnknownSubject`` or ``UnknownTicket`` for unknown ids.
        """
        principal = self.directory.principal(request.principal)
        subject = self.directory.subject(request.subject)
        ticket = self.directory.ticket(request.ticket) if request.ticket else None
        return Facts(
            principal=principal,
            subject=subject,
            allowed_countries=self.settings.allowed_countries(subject.jurisdiction),
            ticket=ticket,
            grant=self.grants(request),
        )

    def decide(self, request: AccessRequest) -> Decision:
        """Decide one request (see :meth:`PolicyEngine.decide`). Raises for unknown ids."""
        return self.engine.decide(request, self.facts(request))

    def decide_many(self, requests: Sequence[AccessRequest]) -> list[Decision]:
        """Decide many requests in few Cedar calls. Raises for the first unknown id."""
        return self.engine.decide_many([(r, self.facts(r)) for r in requests])
