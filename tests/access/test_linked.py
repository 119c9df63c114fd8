"""Decisions about linked accounts (DESIGN.md principle 11): a journalist's second account is
a journalist's account, with the strictest residency of the group, logged with every
member's authority and replayed from the ledger alone. Real homes on both databases."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from custos.access import Custos
from custos.policy import AccessRequest, Decision
from tests.factories import SUPPORT_WORLD, load_org


def linked_world(**extra_subjects: Any) -> dict[str, Any]:
    """SUPPORT_WORLD with user-43, the journalist user-42's second account, and an internal
    investigation ticket about it (T-8), like T-7 about user-42."""
    world = copy.deepcopy(SUPPORT_WORLD)
    world["subjects"].append({"id": "user-43", "jurisdiction": "US", "linked": ["user-42"]})
    world["subjects"].extend(extra_subjects.values())
    world["tickets"].append(
        {
            "id": "T-8",
            "kind": "internal_investigation",
            "subject": "user-43",
            "assignee": "emp-2001",
            "status": "open",
            "opened_by": "emp-2001",
        }
    )
    return world


HUNT_ALT = AccessRequest(
    "emp-2001", "user-43", "ip_history", "internal_investigation", ticket="T-8"
)
HUNT = AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")


def rules(decision: Decision) -> list[str]:
    return [r.policy for r in decision.reasons]


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, linked_world())
    return system


def test_internal_audit_gets_for_the_linked_account_what_it_gets_for_hers(world: Custos) -> None:
    own = world.decide(HUNT)
    alt = world.decide(HUNT_ALT)
    assert (alt.outcome, rules(alt)) == (own.outcome, rules(own)) == ("deny", rules(own))
    assert rules(alt)[0] == "source-protection"
    assert "user-43 is linked to a journalist's account" in alt.explanation
    # The refusal does not say which account it is linked to: that is not the asker's to learn.
    assert "user-42" not in alt.explanation
    assert "linked" not in own.explanation


def test_the_decision_names_every_group_members_entry_and_replays(world: Custos) -> None:
    alt = world.decide(HUNT_ALT)
    journalist = world.directory.subject("user-42")
    assert alt.authority is not None
    assert alt.authority["linked"] == {"user-42": journalist.authority}
    entry = json.loads(world.ledger.entry(alt.ledger_index or 0))
    assert entry["authority"]["linked"] == {"user-42": journalist.authority}
    again = world.replay(alt.ledger_index or 0)
    assert again.same, again.problem
    assert again.replayed is not None
    assert again.replayed["reasons"][0] == "source-protection"
    assert world.verify_authority().projection.findings == []


def test_support_needs_the_two_person_rule_on_the_linked_account(world: Custos) -> None:
    load_org(
        world,
        {
            "tickets": [
                {
                    "id": "T-9",
                    "kind": "support",
                    "subject": "user-43",
                    "assignee": "emp-1001",
                    "status": "open",
                    "opened_by": "subject",
                }
            ]
        },
    )
    decision = world.decide(
        AccessRequest("emp-1001", "user-43", "profile", "support", ticket="T-9")
    )
    assert decision.outcome == "approval_required"
    assert rules(decision) == ["protected-two-person"]
    assert decision.explanation.endswith("user-43 is linked to a journalist's account.")


def test_residency_of_a_group_is_the_strictest_of_its_members(system: Custos) -> None:
    world = linked_world(
        ca={"id": "user-5", "jurisdiction": "CA"},
        de={"id": "user-6", "jurisdiction": "DE"},
    )
    world["tickets"].append(
        {
            "id": "T-10",
            "kind": "support",
            "subject": "user-5",
            "assignee": "emp-1001",
            "status": "open",
            "opened_by": "subject",
        }
    )
    load_org(system, world)
    ask = AccessRequest("emp-1001", "user-5", "profile", "support", ticket="T-10")
    # US staff may see a Canadian account precisely...
    assert system.decide(ask).precision == "precise"
    # ...but not once it is linked to an account under EU residency: coarse only.
    world["subjects"][-1] = {"id": "user-6", "jurisdiction": "DE", "linked": ["user-5"]}
    load_org(system, world)
    decision = system.decide(ask)
    assert (decision.outcome, decision.precision) == ("allow", "coarse")
    assert system.replay(decision.ledger_index or 0).same


def test_a_batch_decides_linked_accounts_as_one_at_a_time_does(world: Custos) -> None:
    asks = [HUNT_ALT, HUNT, AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")]
    batch = world.decide_many(asks)
    alone = [world.decide(a) for a in asks]
    assert [(d.outcome, rules(d), d.explanation) for d in batch] == [
        (d.outcome, rules(d), d.explanation) for d in alone
    ]
