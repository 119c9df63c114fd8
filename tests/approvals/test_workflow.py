"""The approval workflow on a real database: the 2022 case end to end, each independence
rule, expiry, revocation, break-glass, and exactly one grant under concurrent approvals."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos, Viewer
from custos.approvals import Approvals, Outbox
from custos.directory import parse_text
from custos.errors import (
    ApprovalRefused,
    Conflict,
    InvalidInput,
    LedgerUnavailable,
    RequestRefused,
)
from custos.policy import AccessRequest
from custos.store.approvals import GrantRow
from tests.factories import APPROVALS_WORLD, ask, load_org, logins, take_break_glass


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    return system


def precise_read(
    system: Custos, principal: str = "emp-3001", ticket: str = "T-10", at: datetime | None = None
) -> Any:
    return system.read(
        AccessRequest(
            principal,
            "user-42",
            "ip_history",
            "trust_safety",
            ticket=ticket,
            precision="precise",
            time=at,
        )
    )


def refused_rule(call: Any) -> str:
    with pytest.raises(ApprovalRefused) as caught:
        call()
    assert caught.value.rule in caught.value.to_dict()["rule"]
    return caught.value.rule


def ledger_types(system: Custos, since: int) -> list[str]:
    return [json.loads(e)["type"] for _, e in system.ledger.entries(since, system.ledger.size())]


def test_the_2022_case_end_to_end(world: Custos) -> None:
    approvals = world.approvals
    # Source protection: internal audit may not use a journalist's data, and no request can
    # change that.
    with pytest.raises(RequestRefused) as caught:
        ask(world, "emp-2001", "T-7", purpose="internal_investigation")
    assert caught.value.rule == "source-protection"
    assert approvals.requests() == []

    start = world.ledger.size()
    request_id = ask(world)
    request = approvals.request(request_id)
    assert (request.status, request.approvals_needed, request.groups_needed) == (
        "pending",
        2,
        ("privacy_office",),
    )
    before = precise_read(world)
    assert before.decision.outcome == "approval_required"
    assert before.records == []

    # The people who must not be the second pair of eyes.
    assert refused_rule(lambda: approvals.approve(request_id, "emp-3001", "ok")) == "self-approval"
    assert refused_rule(lambda: approvals.approve(request_id, "emp-3000", "ok")) == (
        "management-chain"
    )
    assert refused_rule(lambda: approvals.approve(request_id, "emp-3003", "ok")) == (
        "management-chain"
    )
    assert refused_rule(lambda: approvals.approve(request_id, "emp-6001", "ok")) == (
        "not-an-approver"
    )
    assert refused_rule(lambda: approvals.approve(request_id, "emp-3009", "ok")) == (
        "inactive-approver"
    )

    approvals.approve(request_id, "emp-3002", "checked the abuse report")
    assert approvals.request(request_id).status == "pending"
    assert precise_read(world).records == []
    done = approvals.approve(request_id, "emp-4001", "proportionate, time-limited")
    assert done.status == "approved"
    assert done.grant_id is not None

    after = precise_read(world)
    assert (after.decision.outcome, after.decision.precision) == ("allow", "precise")
    assert after.decision.grant == done.grant_id
    assert sorted(r["ip"] for r in after.records) == [f"198.51.100.{n}" for n in (1, 2, 3)]

    # The grant ends on time: a read after its end is no longer precise.
    grant = approvals.grant(done.grant_id)
    late = precise_read(world, at=grant.ends + timedelta(seconds=1))
    assert late.decision.outcome == "approval_required"
    assert late.records == []

    # And on revocation, at once.
    approvals.revoke(done.grant_id, "emp-4002", "investigation closed")
    assert precise_read(world).records == []

    types = ledger_types(world, start)
    for step in ("approval_request", "approval_refused", "approval", "grant", "grant_revoked"):
        assert step in types
    assert types.index("approval_request") < types.index("grant") < types.index("grant_revoked")


def test_the_policy_names_the_groups_and_the_last_approval_must_cover_them(
    world: Custos,
) -> None:
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "looked at the report")
    # Two approvers but none from the privacy office is not enough: the second must be.
    assert refused_rule(lambda: world.approvals.approve(request_id, "emp-3000", "fine by me")) in (
        "management-chain",
        "group-coverage",
    )
    world.directory.merge(
        __import__("custos.directory", fromlist=["parse_text"]).parse_text(
            json.dumps(
                {
                    "principals": [
                        {
                            "id": "emp-3100",
                            "name": "X",
                            "role": "fraud_analyst",
                            "team": "fraud",
                            "country": "US",
                            "groups": ["approvers"],
                        }
                    ]
                }
            ),
            "extra",
        )
    )
    assert refused_rule(lambda: world.approvals.approve(request_id, "emp-3100", "fine")) == (
        "group-coverage"
    )
    assert world.approvals.request(request_id).status == "pending"


def test_reciprocal_approvals_are_refused(world: Custos) -> None:
    theirs = ask(world, "emp-3002", "T-13")
    world.approvals.approve(theirs, "emp-3001", "checked")  # peers: independent
    mine = ask(world)
    assert refused_rule(lambda: world.approvals.approve(mine, "emp-3002", "returning")) == (
        "reciprocal-approval"
    )


def test_nobody_approves_access_to_their_own_account(world: Custos) -> None:
    request_id = ask(world, subject="user-77", ticket="T-14")
    assert refused_rule(lambda: world.approvals.approve(request_id, "emp-3002", "ok")) == (
        "subject-owner"
    )


def test_one_denial_closes_a_request_and_answers_after_it_conflict(world: Custos) -> None:
    request_id = ask(world)
    denied = world.approvals.deny(request_id, "emp-4001", "not proportionate")
    assert denied.status == "denied"
    with pytest.raises(Conflict, match="denied"):
        world.approvals.approve(request_id, "emp-4002", "ok")
    assert precise_read(world).records == []


def test_an_approver_who_approved_cannot_then_deny(world: Custos) -> None:
    request_id = ask(world)
    assert world.approvals.approve(request_id, "emp-3002", "report checked").status == "pending"
    assert refused_rule(lambda: world.approvals.deny(request_id, "emp-3002", "changed mind")) == (
        "already-answered"
    )
    assert world.approvals.request(request_id).status == "pending"


def test_a_reason_is_required(world: Custos) -> None:
    with pytest.raises(Exception, match="needs a reason"):
        ask(world, reason="   ")
    request_id = ask(world)
    with pytest.raises(Exception, match="needs a reason"):
        world.approvals.approve(request_id, "emp-4001", "")


def test_durations_are_bounded(world: Custos) -> None:
    with pytest.raises(Exception, match="maximum of 24 hours"):
        ask(world, duration=timedelta(hours=25))
    request_id = ask(world, duration=timedelta(hours=2))
    world.approvals.approve(request_id, "emp-3002", "ok")
    grant_id = world.approvals.approve(request_id, "emp-4001", "ok").grant_id
    assert grant_id is not None
    grant = world.approvals.grant(grant_id)
    assert grant.ends - grant.starts == timedelta(hours=2)


def test_unanswered_requests_expire(world: Custos) -> None:
    request_id = ask(world)
    later = datetime.now(UTC) + timedelta(hours=12, seconds=1)
    assert world.approvals.sweep(later)["requests_expired"] == 1
    assert world.approvals.request(request_id).status == "expired"
    with pytest.raises(Conflict, match="expired"):
        world.approvals.approve(request_id, "emp-4001", "too late", now=later)
    kinds = [n["kind"] for n in world.approvals.outbox.notifications()]
    assert kinds == ["request", "request_expired"]


def test_a_second_pending_request_for_the_same_thing_conflicts(world: Custos) -> None:
    first = ask(world)
    with pytest.raises(Conflict, match=first):
        ask(world)


def test_access_already_allowed_needs_no_request(world: Custos) -> None:
    with pytest.raises(Conflict, match="already allowed"):
        ask(world, subject="user-1", ticket="T-11", precision="coarse")


def test_break_glass_is_immediate_alerted_and_reviewed_by_two(world: Custos) -> None:
    start = world.ledger.size()
    grant = world.break_glass(
        principal="emp-5001",
        subject="user-1",
        categories=["ip_history", "credentials"],
        purpose="security_incident",
        ticket="T-12",
        reason="credential stuffing from this account's sessions",
    )
    assert (grant.break_glass, grant.review, grant.precision) == (True, "open", "precise")
    read = world.read(
        AccessRequest(
            "emp-5001",
            "user-1",
            "ip_history",
            "security_incident",
            ticket="T-12",
            precision="precise",
        )
    )
    assert read.decision.allowed
    assert read.decision.review_required
    assert len(read.records) == 3
    entries = [json.loads(e) for _, e in world.ledger.entries(start, world.ledger.size())]
    alerts = [e for e in entries if e["type"] == "alert"]
    assert alerts[0]["severity"] == "critical"
    assert alerts[0]["principals"] == ["emp-5001"]
    assert "break_glass" in [n["kind"] for n in world.approvals.outbox.notifications()]
    # The person whose data it was sees the break-glass, and the alert it raised.
    report = world.subject_report("user-1", viewer=Viewer("test"))
    kinds = [a["type"] for a in report["approvals"]]
    assert "break_glass" in kinds
    assert "alert" in kinds

    assert refused_rule(lambda: world.approvals.review(grant.id, "emp-5001", "fine")) == (
        "self-approval"
    )
    assert refused_rule(lambda: world.approvals.review(grant.id, "emp-3002", "fine")) == (
        "not-a-reviewer"
    )
    assert world.approvals.review(grant.id, "emp-4001", "incident INC-4 confirms").review == "open"
    assert refused_rule(lambda: world.approvals.review(grant.id, "emp-4001", "again")) == (
        "already-answered"
    )
    assert world.approvals.review(grant.id, "emp-4002", "agree").review == "closed"
    assert world.approvals.grants(review_open=True) == []


def test_break_glass_stops_while_too_many_await_review(world: Custos) -> None:
    # Each break-glass grant is precise data taken without approval: a responder may not
    # keep taking them faster than reviewers look (default limit 3).
    taken = [take_break_glass(world, f"incident step {n}") for n in range(3)]
    start = world.ledger.size()
    assert refused_rule(lambda: take_break_glass(world)) == "unreviewed-break-glass"
    assert len(world.approvals.grants(review_open=True)) == 3
    refusal = [json.loads(e) for _, e in world.ledger.entries(start, world.ledger.size())][-1]
    assert refusal["type"] == "break_glass_refused"
    assert (refusal["principal"], refusal["awaiting_review"]) == ("emp-5001", 3)
    assert refusal["decisions"]  # the allowing decisions it refers to are in the ledger
    # The person whose data it was sees the refused attempt in their report, without names.
    report = world.subject_report("user-1", viewer=Viewer("test"))
    shown = [a for a in report["approvals"] if a["type"] == "break_glass_refused"]
    assert len(shown) == 1
    assert "principal" not in shown[0]
    world.approvals.review(taken[0].id, "emp-4001", "incident INC-4 confirms")
    assert refused_rule(lambda: take_break_glass(world)) == "unreviewed-break-glass"
    world.approvals.review(taken[0].id, "emp-4002", "agree")  # closed: one slot frees
    assert take_break_glass(world).review == "open"
    assert len(world.approvals.grants(review_open=True)) == 3


def test_break_glass_at_the_same_moment_keeps_the_limit(world: Custos) -> None:
    systems = [
        Custos(world.settings, world.db.__class__(str(world.db.engine.url))) for _ in range(6)
    ]
    barrier = threading.Barrier(len(systems))
    outcomes: list[str] = []

    def attempt(system: Custos) -> None:
        barrier.wait()
        try:
            # The workflow itself, so the transactions overlap (the decisions before it
            # queue on the ledger's lock and would stagger the threads).
            system.approvals.break_glass(
                principal="emp-5001",
                subject="user-1",
                categories=["ip_history"],
                purpose="security_incident",
                ticket="T-12",
                reason="live incident",
                duration=None,
            )
            outcomes.append("granted")
        except ApprovalRefused as exc:
            outcomes.append(exc.rule)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in systems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in systems:
        s.close()
    assert sorted(outcomes) == ["granted"] * 3 + ["unreviewed-break-glass"] * 3
    assert len(world.approvals.grants(review_open=True)) == 3


def test_break_glass_asserted_on_a_read_or_decision_is_refused(world: Custos) -> None:
    # The flag on a request would release precise data with no grant, alert or review.
    asserted = AccessRequest(
        "emp-5001",
        "user-1",
        "ip_history",
        "security_incident",
        precision="precise",
        break_glass=True,
    )
    start = world.ledger.size()
    attempts: list[Callable[[], object]] = [
        lambda: world.read(asserted),
        lambda: world.read_many([asserted]),
        lambda: world.decide(asserted),
        lambda: world.decide_many([asserted]),
    ]
    for attempt in attempts:
        with pytest.raises(RequestRefused) as caught:
            attempt()
        assert caught.value.rule == "break-glass"
        assert "/v1/break-glass" in str(caught.value)
    assert world.ledger.size() == start  # nothing decided, nothing released
    assert world.approvals.grants() == []


def test_break_glass_is_only_for_incident_responders(world: Custos) -> None:
    with pytest.raises(RequestRefused):
        world.break_glass(
            principal="emp-3001",
            subject="user-42",
            categories=["ip_history"],
            purpose="security_incident",
            ticket=None,
            reason="I want to see it now",
        )
    assert world.approvals.grants() == []


class BrokenLedger:
    """A journal whose storage is gone: every append fails (fault injection)."""

    def append_many(self, entries: Iterable[Mapping[str, Any]]) -> Sequence[Any]:
        raise LedgerUnavailable("the ledger is unavailable: disk gone")


def test_a_grant_is_not_honoured_until_its_ledger_entry_is_durable(world: Custos) -> None:
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "ok")
    broken = Approvals(
        world.db, world.directory, BrokenLedger(), Outbox(world.db, None), world.approvals.settings
    )
    with pytest.raises(LedgerUnavailable):
        broken.approve(request_id, "emp-4001", "ok")
    # The approval was committed, but its grant waits for the ledger.
    grant_id = world.approvals.request(request_id).grant_id
    assert grant_id is not None
    assert world.approvals.grant(grant_id).status(datetime.now(UTC)) == "pending_ledger"
    world.approvals._invalidate()
    assert precise_read(world).records == []
    # The next operation that can reach the ledger appends the entry; then it is honoured.
    assert world.approvals.flush() >= 2
    assert len(precise_read(world).records) == 3


def test_a_revocation_elsewhere_takes_effect_at_once(world: Custos, tmp_path: Path) -> None:
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "ok")
    grant_id = world.approvals.approve(request_id, "emp-4001", "ok").grant_id
    assert grant_id is not None
    other = Custos(world.settings, world.db.__class__(str(world.db.engine.url)))
    try:
        assert len(precise_read(other).records) == 3  # the other process caches the grant
        world.approvals.revoke(grant_id, "emp-3001", "done")
        assert precise_read(other).records == []
    finally:
        other.close()


def test_only_holder_approvers_or_privacy_office_revoke(world: Custos) -> None:
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "ok")
    grant_id = world.approvals.approve(request_id, "emp-4001", "ok").grant_id
    assert grant_id is not None
    assert refused_rule(lambda: world.approvals.revoke(grant_id, "emp-6001", "meddling")) == (
        "not-allowed-to-revoke"
    )
    world.approvals.revoke(grant_id, "emp-3002", "no longer needed")
    with pytest.raises(Conflict, match="already revoked"):
        world.approvals.revoke(grant_id, "emp-4001", "again")


def test_concurrent_approvals_of_one_request_make_exactly_one_grant(world: Custos) -> None:
    world.directory.merge(
        __import__("custos.directory", fromlist=["parse_text"]).parse_text(
            json.dumps(
                {
                    "principals": [
                        {
                            "id": f"emp-47{n:02d}",
                            "name": "P",
                            "role": "privacy_officer",
                            "team": "privacy",
                            "country": "US",
                            "groups": ["privacy_office"],
                        }
                        for n in range(8)
                    ]
                }
            ),
            "extra",
        )
    )
    for _round in range(3):
        request_id = ask(world)
        world.approvals.approve(request_id, "emp-3002", "ok")
        systems = [
            Custos(world.settings, world.db.__class__(str(world.db.engine.url))) for _ in range(8)
        ]
        barrier = threading.Barrier(len(systems))
        outcomes: list[str] = []

        def approve(
            system: Custos,
            n: int,
            request_id: str = request_id,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                system.approvals.approve(request_id, f"emp-47{n:02d}", "ok")
                outcomes.append("approved")
            except Conflict:
                outcomes.append("conflict")

        threads = [threading.Thread(target=approve, args=(s, n)) for n, s in enumerate(systems)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in systems:
            s.close()
        assert outcomes.count("approved") == 1, outcomes
        with world.db.session() as session:
            grants = session.query(GrantRow).filter(GrantRow.request_id == request_id).count()
        assert grants == 1
        assert world.approvals.request(request_id).status == "approved"
        world.approvals.revoke(
            world.approvals.request(request_id).grant_id or "", "emp-3001", "next round"
        )


def approved(system: Custos, request_id: str) -> str:
    """Approve ``request_id`` by the two approvers APPROVALS_WORLD's policy asks for."""
    system.approvals.approve(request_id, "emp-3002", "checked the abuse report")
    return str(system.approvals.approve(request_id, "emp-4001", "proportionate").grant_id)


def test_a_grant_covers_only_the_actions_its_approvers_approved(world: Custos) -> None:
    # Approved to *read* a journalist's contact details is not approved to *change* them
    # (an account takeover); the request names the actions and the grant covers those only.
    world.directory.merge(
        parse_text(
            json.dumps(
                {
                    "tickets": [
                        {
                            "id": "T-20",
                            "kind": "support",
                            "subject": "user-42",
                            "assignee": "emp-6001",
                            "status": "open",
                            "opened_by": "subject",
                        }
                    ]
                }
            ),
            "extra",
        )
    )

    def decide(action: str) -> Any:
        return world.decide(
            AccessRequest("emp-6001", "user-42", "contact", "support", ticket="T-20", action=action)
        )

    def contact_request(**kw: Any) -> str:
        return ask(world, "emp-6001", "T-20", categories=["contact"], purpose="support", **kw)

    assert decide("modify").outcome == "approval_required"
    read_only = approved(world, contact_request())
    assert world.approvals.grant(read_only).actions == ("read",)
    assert decide("read").allowed
    assert decide("modify").outcome == "approval_required"
    world.approvals.revoke(read_only, "emp-6001", "done reading")

    start = world.ledger.size()
    both = approved(world, contact_request(actions=["modify", "read", "modify"]))
    assert world.approvals.grant(both).actions == ("read", "modify")
    assert decide("modify").allowed
    grant_entry = next(
        json.loads(e)
        for _, e in world.ledger.entries(start, world.ledger.size())
        if json.loads(e)["type"] == "grant"
    )
    assert grant_entry["actions"] == ["read", "modify"]


@pytest.mark.parametrize("actions", [[], ["delete"], ["read", "Read"]])
def test_a_request_names_known_actions(world: Custos, actions: list[str]) -> None:
    with pytest.raises(InvalidInput, match="action"):
        ask(world, actions=actions)
    assert world.approvals.requests() == []


def test_a_coarse_grant_never_releases_precise_data(world: Custos) -> None:
    contact = {
        "id": "c-1",
        "kind": "contact",
        "subject": "user-42",
        "time": "2026-01-05T10:00:00Z",
        "email": "jane@example.org",
        "phone": "+1 555 0100",
    }
    world.ingest([json.dumps(contact)], "contact.jsonl")
    grant = approved(world, ask(world, categories=["contact"], precision="coarse"))
    asked = AccessRequest("emp-3001", "user-42", "contact", "trust_safety", ticket="T-10")
    best = world.read(asked)  # no precision named: the best the grant allows
    assert (best.decision.outcome, best.decision.precision) == ("allow", "coarse")
    assert best.decision.grant == grant
    assert "jane@example.org" not in json.dumps(best.records)
    precise = world.read(dataclasses.replace(asked, precision="precise"))
    assert precise.decision.outcome != "allow"
    assert precise.records == []


def test_a_grant_is_for_the_ticket_it_was_approved_on(world: Custos) -> None:
    world.directory.merge(
        parse_text(
            json.dumps(
                {
                    "tickets": [
                        {
                            "id": "T-99",
                            "kind": "trust_safety",
                            "subject": "user-42",
                            "assignee": "emp-3001",
                            "status": "open",
                            "opened_by": "emp-3001",  # a pretext is easy to make
                        }
                    ]
                }
            ),
            "tickets",
        ),
        source="tickets",
    )
    grant = approved(world, ask(world, ticket="T-10"))
    assert precise_read(world, ticket="T-10").decision.grant == grant
    world.directory.set_ticket_status("T-10", "closed")
    elsewhere = precise_read(world, ticket="T-99")
    assert elsewhere.decision.outcome != "allow"
    assert elsewhere.decision.grant is None
    assert elsewhere.records == []


def test_a_leap_day_decides_like_any_other(world: Custos) -> None:
    leap = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)
    fine = AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11", time=leap)
    needs = AccessRequest(
        "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
    )
    decided = world.decide_many([fine, dataclasses.replace(needs, time=leap)])
    assert [d.outcome for d in decided] == ["allow", "approval_required"]


def test_colleagues_approving_each_other_at_once_are_not_both_granted(
    world: Custos, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.directory.merge(
        parse_text(
            json.dumps(
                {
                    "tickets": [
                        {
                            "id": "T-98",
                            "kind": "trust_safety",
                            "subject": "user-1",
                            "assignee": "emp-3002",
                            "status": "open",
                            "opened_by": "system",
                        }
                    ]
                }
            ),
            "tickets",
        ),
        source="tickets",
    )
    mine = ask(world, "emp-3001", "T-11", subject="user-1")
    theirs = ask(world, "emp-3002", "T-98", subject="user-1")
    # Widen the window between "is there a vote the other way?" and the commit, so that
    # both answers are inside it together unless something makes them take turns.
    looked = Approvals._ring

    def slowly(self: Approvals, *args: Any) -> Any:
        found = looked(self, *args)
        time.sleep(0.3)
        return found

    monkeypatch.setattr(Approvals, "_ring", slowly)
    refusals: list[str] = []

    def answer(request_id: str, approver: str) -> None:
        try:
            world.approvals.approve(request_id, approver, "looks fine")
        except ApprovalRefused as exc:
            refusals.append(exc.rule)

    both = [
        threading.Thread(target=answer, args=(mine, "emp-3002")),
        threading.Thread(target=answer, args=(theirs, "emp-3001")),
    ]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join()
    assert refusals == ["reciprocal-approval"]
    votes = [world.approvals.request(r).approvers for r in (mine, theirs)]
    assert sorted(len(v) for v in votes) == [0, 1]
