"""Independence beyond pairs: teammates do not answer each other (rule same-team), and
approvals that close a ring of any length within the window are refused (rule approval-ring),
also when the two approvals that close it arrive at the same moment."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.access import Custos
from custos.approvals import Approvals
from custos.errors import ApprovalRefused
from tests.factories import APPROVALS_WORLD, ask, load_org, logins, org, take_break_glass

#: Four approvers in four teams, none managing another: only rings can tie them together.
RING = [f"emp-91{n:02d}" for n in range(1, 5)]


def ring_world() -> dict[str, Any]:
    extra = org(
        principals=[
            *(
                {
                    "id": person,
                    "role": "trust_safety_investigator",
                    "team": f"audit-{n}",
                    "groups": ["approvers"],
                }
                for n, person in enumerate(RING, 1)
            ),
            # emp-3001's teammate, outside their management chain: independent by every
            # other rule, and the reason for same-team.
            {
                "id": "emp-3005",
                "role": "trust_safety_investigator",
                "team": "ts",
                "groups": ["approvers"],
            },
            # emp-5001's teammate in the review group.
            {
                "id": "emp-5002",
                "role": "security_responder",
                "team": "security",
                "groups": ["privacy_office"],
            },
        ],
        tickets=[
            {
                "id": f"T-91{n:02d}",
                "kind": "trust_safety",
                "subject": "user-1",
                "assignee": person,
                "status": "open",
                "opened_by": "system",
            }
            for n, person in enumerate(RING, 1)
        ],
    )
    return {
        "principals": [*APPROVALS_WORLD["principals"], *extra["principals"]],
        "subjects": APPROVALS_WORLD["subjects"],
        "tickets": [*APPROVALS_WORLD["tickets"], *extra["tickets"]],
    }


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, ring_world())
    system.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    return system


def request_of(system: Custos, n: int) -> str:
    """A request by the n-th ring member (1-based) for user-1's precise IP history: one
    approval from the approvers makes it a grant."""
    return ask(system, RING[n - 1], f"T-91{n:02d}", subject="user-1")


def refusal(call: Any) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as caught:
        call()
    return caught.value


def refused_entries(system: Custos, since: int) -> list[dict[str, Any]]:
    found = [json.loads(raw) for _, raw in system.ledger.entries(since, system.ledger.size())]
    return [e for e in found if e["type"] == "approval_refused"]


def test_a_teammate_may_not_approve_deny_or_review(world: Custos) -> None:
    request_id = ask(world)  # emp-3001 (team ts), user-42
    before = world.ledger.size()
    for answer in (world.approvals.approve, world.approvals.deny):
        refused = refusal(lambda answer=answer: answer(request_id, "emp-3005", "my colleague"))
        assert refused.rule == "same-team"
        assert "ts" in refused.message
    assert world.approvals.request(request_id).votes == ()
    # The same person from another team is independent: emp-3002 is in ts-escalations.
    assert world.approvals.approve(request_id, "emp-3002", "checked").status == "pending"

    grant = take_break_glass(world)  # emp-5001, security
    review = refusal(lambda: world.approvals.review(grant.id, "emp-5002", "looks fine"))
    assert review.rule == "same-team"
    assert world.approvals.grant(grant.id).review == "open"

    logged = refused_entries(world, before)
    assert [(e["rule"], e["verdict"]) for e in logged] == [
        ("same-team", "approve"),
        ("same-team", "deny"),
        ("same-team", "review"),
    ]
    # Whose request it was and whom it was about: the subject's report lists it.
    assert [(e["principal"], e["subject"]) for e in logged] == [
        ("emp-3001", "user-42"),
        ("emp-3001", "user-42"),
        ("emp-5001", "user-1"),
    ]
    assert logged[2]["grant"] == grant.id


def test_rings_of_three_and_four_are_refused(world: Custos) -> None:
    world.approvals.approve(request_of(world, 1), RING[1], "checked")  # 2 approved 1
    world.approvals.approve(request_of(world, 2), RING[2], "checked")  # 3 approved 2
    third = request_of(world, 3)
    before = world.ledger.size()
    three = refusal(lambda: world.approvals.approve(third, RING[0], "returning the favour"))
    assert three.rule == "approval-ring"
    assert "emp-9103 → emp-9102 → emp-9101 → emp-9103" in three.message

    world.approvals.approve(third, RING[3], "checked")  # 4 approved 3
    fourth = request_of(world, 4)
    # The ring: 2 approves 1, 3 approves 2, 4 approves 3; 1 approving 4 closes it.
    four = refusal(lambda: world.approvals.approve(fourth, RING[0], "fine"))
    assert four.rule == "approval-ring"
    assert "emp-9104 → emp-9103 → emp-9102 → emp-9101 → emp-9104" in four.message
    assert world.approvals.request(fourth).status == "pending"
    # A pair is still the reciprocal rule, with its own message.
    pair = refusal(lambda: world.approvals.approve(fourth, RING[2], "fine"))
    assert pair.rule == "reciprocal-approval"

    logged = refused_entries(world, before)
    assert [e["ring"] for e in logged] == [
        ["emp-9103", "emp-9102", "emp-9101"],
        ["emp-9104", "emp-9103", "emp-9102", "emp-9101"],
        ["emp-9104", "emp-9103"],
    ]
    assert {e["subject"] for e in logged} == {"user-1"}
    # Anyone outside the ring may still approve.
    assert world.approvals.approve(fourth, "emp-3002", "checked").status == "approved"


def test_a_ring_older_than_the_window_is_allowed(world: Custos) -> None:
    window = world.approvals.settings.reciprocal_window
    long_ago = datetime.now(UTC) - window - timedelta(days=1)
    recently = datetime.now(UTC) - window + timedelta(days=1)
    world.approvals.approve(request_of(world, 1), RING[1], "checked", now=long_ago)
    world.approvals.approve(request_of(world, 2), RING[2], "checked", now=recently)
    world.approvals.approve(request_of(world, 3), RING[3], "checked", now=recently)
    # 4 → 3 → 2 are within the window, 2 → 1 is not: no ring inside the window.
    done = world.approvals.approve(request_of(world, 4), RING[0], "checked")
    assert done.status == "approved"


@pytest.mark.parametrize("closing_first", [False, True])
def test_two_approvals_that_close_a_ring_together_are_not_both_granted(
    world: Custos, monkeypatch: pytest.MonkeyPatch, closing_first: bool
) -> None:
    world.approvals.approve(request_of(world, 2), RING[2], "checked")  # 3 approved 2
    world.approvals.approve(request_of(world, 3), RING[3], "checked")  # 4 approved 3
    first, fourth = request_of(world, 1), request_of(world, 4)
    # Alone, each is fine: 2 approving 1 (1 approved nobody) and 1 approving 4 (4 → 3 → 2
    # stops short of 1). Together they close 1 → 4 → 3 → 2 → 1. Widen the window between
    # the search and the commit so that both are inside it unless something serialises them.
    searched = Approvals._ring

    def slowly(self: Approvals, *args: Any) -> Any:
        found = searched(self, *args)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(Approvals, "_ring", slowly)
    refusals: list[str] = []
    started = threading.Barrier(2)

    def answer(request_id: str, approver: str) -> None:
        started.wait()
        try:
            world.approvals.approve(request_id, approver, "looks fine")
        except ApprovalRefused as exc:
            refusals.append(exc.rule)

    pairs = [(first, RING[1]), (fourth, RING[0])]
    threads = [
        threading.Thread(target=answer, args=pair)
        for pair in (reversed(pairs) if closing_first else pairs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refusals == ["approval-ring"]
    statuses = sorted(world.approvals.request(r).status for r in (first, fourth))
    assert statuses == ["approved", "pending"]
