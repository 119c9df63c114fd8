"""Decisions on the guarded path, against a real home and SQLite database."""

from __future__ import annotations

import dataclasses

import pytest

from custos.access import Custos
from custos.errors import InvalidInput, UnknownPrincipal, UnknownSubject, UnknownTicket
from custos.policy import AccessRequest, Decision
from tests.factories import SUPPORT_WORLD, load_org


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    return system


def decide(system: Custos, **fields: str) -> tuple[str, str | None, list[str]]:
    d = system.decide(AccessRequest(**fields))  # type: ignore[arg-type]
    return d.outcome, d.precision, [r.policy for r in d.reasons]


def test_2022_case_is_denied_with_source_protection(world: Custos) -> None:
    outcome, _, reasons = decide(
        world,
        principal="emp-2001",
        subject="user-42",
        category="ip_history",
        purpose="internal_investigation",
        ticket="T-7",
    )
    assert (outcome, reasons[0]) == ("deny", "source-protection")


def test_support_agent_on_own_ticket(world: Custos) -> None:
    base = {"principal": "emp-1001", "subject": "user-1", "purpose": "support", "ticket": "T-1"}
    assert decide(world, category="profile", **base)[:2] == ("allow", "precise")
    assert decide(world, category="ip_history", **base)[:2] == ("allow", "coarse")


@pytest.mark.parametrize(
    ("principal", "ticket", "reason"),
    [
        ("emp-1001", "T-2", "need-to-know"),  # someone else's ticket
        ("emp-1001", "T-3", "need-to-know"),  # a closed ticket
        ("emp-1001", "T-4", "need-to-know"),  # a ticket about another subject
        ("emp-1004", "T-5", "inactive-staff"),  # a terminated employee
    ],
)
def test_tickets_that_do_not_explain_the_access(
    world: Custos, principal: str, ticket: str, reason: str
) -> None:
    outcome, precision, reasons = decide(
        world,
        principal=principal,
        subject="user-1",
        category="profile",
        purpose="support",
        ticket=ticket,
    )
    assert (outcome, precision, reasons[0]) == ("deny", None, reason)


def test_employee_account_needs_approval(world: Custos) -> None:
    decision = world.decide(
        AccessRequest("emp-1001", "user-77", "profile", "support", ticket="T-6")
    )
    assert decision.outcome == "approval_required"
    assert decision.approvals is not None
    assert (decision.approvals.approvals, decision.approvals.groups) == (2, ("privacy_office",))


def test_a_closed_ticket_takes_effect_at_once(world: Custos) -> None:
    request = AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")
    assert world.decide(request).outcome == "allow"
    world.directory.set_ticket_status("T-1", "closed")
    assert world.decide(request).outcome == "deny"


def test_a_termination_takes_effect_at_once(world: Custos) -> None:
    request = AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")
    world.directory.set_principal_status("emp-1001", "terminated")
    assert world.decide(request).reasons[0].policy == "inactive-staff"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"principal": "emp-404"}, UnknownPrincipal),
        ({"subject": "user-404"}, UnknownSubject),
        ({"ticket": "T-404"}, UnknownTicket),
    ],
)
def test_unknown_ids_are_errors_not_decisions(
    world: Custos, fields: dict[str, str], error: type[Exception]
) -> None:
    base = {
        "principal": "emp-1001",
        "subject": "user-1",
        "category": "profile",
        "purpose": "support",
        "ticket": "T-1",
    }
    with pytest.raises(error, match="404"):
        world.decide(AccessRequest(**{**base, **fields}))  # type: ignore[arg-type]


def test_unknown_vocabulary_is_invalid_input(world: Custos) -> None:
    # The words are the active pack's: refused before anything is decided or logged.
    size = world.ledger.size()
    with pytest.raises(InvalidInput, match=r"unknown category 'ssn'.*unknown purpose 'curiosity'"):
        world.decide(AccessRequest("emp-1001", "user-1", "ssn", "curiosity"))
    with pytest.raises(InvalidInput, match=r"unknown category 'ssn'"):
        world.decide_many(
            [
                AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"),
                AccessRequest("emp-1001", "user-1", "ssn", "support", ticket="T-1"),
            ]
        )
    assert world.ledger.size() == size


def test_batch_decisions_match_single_ones(world: Custos) -> None:
    requests = [
        AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"),
        AccessRequest("emp-1001", "user-1", "ip_history", "support", ticket="T-1"),
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7"),
        AccessRequest("emp-1001", "user-77", "profile", "support", ticket="T-6"),
    ] * 3
    first = world.ledger.size()  # after the policy and the directory's authority entries
    batched = world.decide_many(requests)
    single = [world.decide(r) for r in requests]

    def unlogged(d: Decision) -> Decision:
        return dataclasses.replace(d, event_id=None, ledger_index=None)

    assert [unlogged(d) for d in batched] == [unlogged(d) for d in single]
    assert [d.ledger_index for d in batched] == list(range(first, first + 12))
    assert len({d.event_id for d in batched + single}) == 24


def test_the_active_pack_is_recorded_in_the_policy_history(system: Custos) -> None:
    from sqlalchemy import select

    from custos.store.directory import PolicyVersionRow

    with system.db.session() as session:
        digests = list(session.scalars(select(PolicyVersionRow.digest)))
    assert digests == [system.policy_pack.digest]
