"""How the ticket a request cites explains it as it is decided (``Decision.explained``).

Detection takes an access custos's ledger calls explained by its ticket without looking the
ticket up again, so this is held to the definition detection would apply: an open ticket,
assigned to the principal, about the subject, of the purpose's kind, at that time; and who
opened it. Exports and break-glass are never called explained: detection reviews them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from custos.access.journal import decision_entry
from custos.directory.model import Principal, Subject, Ticket
from custos.policy import AccessRequest, Facts, PolicyEngine, load_pack
from custos.policy.model import ticket_explanation

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
AGENT = Principal(
    id="emp-1",
    name="Agent",
    kind="employee",
    role="support_agent",
    team="support",
    country="US",
    status="active",
)
USER = Subject(id="user-1", jurisdiction="US")
TICKET = Ticket(
    id="T-1",
    kind="support",
    subject="user-1",
    assignee="emp-1",
    status="open",
    opened=NOW - timedelta(hours=2),
    opened_by="subject",
)
ENGINE = PolicyEngine(load_pack())


def _request(**changes: object) -> AccessRequest:
    base = AccessRequest("emp-1", "user-1", "profile", "support", ticket="T-1", time=NOW)
    return replace(base, **changes)  # type: ignore[arg-type]


def _facts(ticket: Ticket | None = TICKET) -> Facts:
    return Facts(principal=AGENT, subject=USER, allowed_countries=("US",), ticket=ticket)


def test_a_read_allowed_on_its_open_ticket_is_explained_by_it_in_the_ledger() -> None:
    decision = ENGINE.decide(_request(), _facts())
    assert (decision.outcome, decision.explained) == ("allow", "ticket")
    assert decision_entry(decision, "ev-1", "test")["explained"] == "ticket"


def test_a_ticket_the_principal_opened_explains_it_as_their_own() -> None:
    decision = ENGINE.decide(_request(), _facts(replace(TICKET, opened_by="emp-1")))
    assert (decision.outcome, decision.explained) == ("allow", "own_ticket")


@pytest.mark.parametrize(
    ("ticket", "why"),
    [
        (replace(TICKET, assignee="emp-2"), "assigned to someone else"),
        (replace(TICKET, subject="user-2"), "about someone else"),
        (replace(TICKET, kind="fraud"), "of another kind"),
        (replace(TICKET, status="closed"), "closed"),
        (replace(TICKET, opened=NOW + timedelta(minutes=1)), "opened later"),
        (replace(TICKET, closed=NOW - timedelta(minutes=1)), "closed before"),
        (replace(TICKET, id="T-2"), "not the ticket cited"),
    ],
)
def test_a_ticket_that_does_not_cover_the_access_explains_nothing(ticket: Ticket, why: str) -> None:
    assert ticket_explanation(_request(), _facts(ticket)) is None, why


def test_the_edges_of_a_tickets_times_still_cover_it() -> None:
    edges = replace(TICKET, opened=NOW, closed=NOW)
    assert ticket_explanation(_request(), _facts(edges)) == "ticket"
    assert ticket_explanation(_request(), _facts(replace(TICKET, opened=None))) == "ticket"


def test_exports_and_break_glass_are_never_called_explained() -> None:
    assert ticket_explanation(_request(action="export"), _facts()) is None
    assert ticket_explanation(_request(break_glass=True), _facts()) is None
    assert ticket_explanation(_request(ticket=None), _facts(None)) is None


def test_refusals_carry_no_explanation() -> None:
    decision = ENGINE.decide(_request(), _facts(replace(TICKET, assignee="emp-2")))
    assert decision.outcome == "deny"
    assert decision.explained is None
    assert "explained" not in decision_entry(decision, "ev-2", "test")
