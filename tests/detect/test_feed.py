"""custos's own decisions reach detection: the ledger is fed into the access events."""

from __future__ import annotations

from custos.access import Custos
from custos.policy import AccessRequest
from tests.factories import APPROVALS_WORLD, load_org, logins


def test_decisions_and_releases_feed_the_events_once(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", net="203.0.113"), "logins.jsonl")
    result = system.read(
        AccessRequest("emp-3001", "user-1", "ip_history", "trust_safety", ticket="T-11")
    )
    denied = system.decide(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    assert system.feed_events() > 0
    assert system.feed_events() == 0  # nothing new
    (read_event,) = system.events.get([result.decision.event_id or ""])
    assert (read_event.decision, read_event.records) == ("allow", 3)
    assert read_event.extras()["role"] == "trust_safety_investigator"
    (deny_event,) = system.events.get([denied.event_id or ""])
    assert deny_event.decision == "deny"
    before = system.events.count()
    again = system.read(
        AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11")
    )
    system.feed_events()
    assert system.events.count() == before + 2  # the decision and its release
    (folded,) = system.events.get([again.decision.event_id or ""])
    assert folded.records == 0  # no profile records: the release said so, folded in


def test_detection_sees_custos_own_refusals(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    for _ in range(3):
        system.decide(
            AccessRequest(
                "emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7"
            )
        )
    run = system.detect()
    assert run.events >= 3
    flagged = [a for a in run.alerts if "emp-2001" in a.principals]
    assert flagged, [a.to_dict() for a in run.alerts]
    assert any("user-42" in a.subjects for a in flagged)
