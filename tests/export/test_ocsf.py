"""OCSF events made from a real ledger and real alerts: every one has what its class
requires, the classes and activities say what happened, and no value read ever leaves."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custos.access import Custos
from custos.export import API_ACTIVITY, DETECTION_FINDING, REQUIRED, from_entry, problems
from custos.export.destinations import encode
from custos.export.exporter import _record
from custos.export.ocsf import from_alert
from custos.ledger.entries import parse, read
from custos.store.events import AlertRow
from tests.export.conftest import SECRET_IP

#: The required attributes of the two classes, written from the OCSF schema (base_event,
#: finding, detection_finding; application, api_activity; the objects' own requirements):
#: the module's list must not drop any of them.
SCHEMA_REQUIRED = {
    API_ACTIVITY: {
        "activity_id", "category_uid", "class_uid", "metadata", "metadata.product",
        "metadata.version", "severity_id", "time", "type_uid", "actor", "api",
        "api.operation", "src_endpoint",
    },
    DETECTION_FINDING: {
        "activity_id", "category_uid", "class_uid", "metadata", "metadata.product",
        "metadata.version", "severity_id", "time", "type_uid", "finding_info",
        "finding_info.uid",
    },
}  # fmt: skip


def exported(system: Custos) -> list[dict[str, Any]]:
    events = []
    for index, raw in system.ledger.entries(0, system.ledger.size()):
        event = from_entry(index, read(raw), system.ledger.origin)
        if event is not None:
            events.append(event)
    with system.db.session() as session:
        for row in session.query(AlertRow).order_by(AlertRow.id):
            events.append(from_alert(_record(row), system.ledger.origin))
    return events


def test_required_fields_are_the_schemas() -> None:
    for class_uid, wanted in SCHEMA_REQUIRED.items():
        assert set(REQUIRED[class_uid]) == wanted


def test_every_event_of_a_real_ledger_is_valid_ocsf(world: Custos) -> None:
    events = exported(world)
    assert events
    for event in events:
        assert problems(event) == [], event
    kinds = Counter(e["unmapped"]["custos"].get("entry_type", "alert") for e in events)
    assert kinds["decision"] >= 4
    assert kinds["release"] == 1
    for wanted in ("approval_request", "approval", "grant", "break_glass", "alert"):
        assert kinds[wanted] >= 1, wanted
    classes = Counter(e["class_uid"] for e in events)
    assert classes[DETECTION_FINDING] == kinds["alert"]


def test_decisions_say_who_did_what_to_whom_and_the_outcome(world: Custos) -> None:
    decisions = [
        e for e in exported(world) if e["unmapped"]["custos"].get("entry_type") == "decision"
    ]
    denied = [e for e in decisions if e["unmapped"]["custos"]["decision"] == "deny"]
    assert denied, "the support agent's look at the journalist is denied"
    one = denied[0]
    assert one["class_uid"] == 6003
    assert one["category_uid"] == 6
    assert (one["activity_id"], one["type_uid"]) == (2, 600302)
    assert (one["status_id"], one["status"]) == (2, "Failure")
    assert one["actor"]["user"]["uid"] == "emp-6001"
    assert one["api"]["operation"] == "custos.read"
    assert one["resources"][0]["uid"] == "user-42"
    assert "category:ip_history" in one["resources"][0]["labels"]
    assert one["actor"]["authorizations"][0]["policy"]["uid"]
    assert isinstance(one["time"], int)
    assert one["time"] > 1_700_000_000_000
    assert one["metadata"]["sequence"] == one["unmapped"]["custos"]["ledger_index"]


def test_alerts_are_detection_findings(world: Custos) -> None:
    findings = [e for e in exported(world) if e["class_uid"] == DETECTION_FINDING]
    raised = [f for f in findings if f["finding_info"]["title"] == "protected_subject_access"]
    assert len(raised) == 1
    alert = raised[0]
    assert (alert["severity_id"], alert["type_uid"], alert["status_id"]) == (5, 200401, 1)
    assert alert["evidences"][0]["actor"]["user"]["uid"] == "emp-2001"
    assert alert["resources"] == [{"uid": "user-42", "type": "subject"}]
    glass = [f for f in findings if f["unmapped"]["custos"].get("entry_type") == "alert"]
    assert glass
    assert glass[0]["severity_id"] >= 4


def test_no_value_read_and_no_free_text_leaves(world: Custos) -> None:
    text = "\n".join(encode(e).decode() for e in exported(world))
    assert SECRET_IP not in text
    assert "198.51.100." not in text  # no login address at all, coarse or precise
    assert "takeover report" not in text  # a request's reason is free text
    assert "matches the report" not in text
    assert "credential stuffing" not in text


def test_the_same_entry_makes_the_same_bytes(world: Custos) -> None:
    first = [encode(e) for e in exported(world)]
    assert first == [encode(e) for e in exported(world)]


@pytest.mark.parametrize("path", sorted(SCHEMA_REQUIRED[API_ACTIVITY]))
def test_a_missing_required_field_is_named(world: Custos, path: str) -> None:
    event = next(e for e in exported(world) if e["class_uid"] == API_ACTIVITY)
    broken = json.loads(json.dumps(event))
    *parents, last = path.split(".")
    holder = broken
    for part in parents:
        holder = holder[part]
    del holder[last]
    assert any(path in p or path.rpartition(".")[0] in p for p in problems(broken))


def test_at_least_one_rules_are_checked(world: Custos) -> None:
    event = next(e for e in exported(world) if e["class_uid"] == API_ACTIVITY)
    event["actor"] = {"user": {"type_id": 1}}
    assert problems(event) == ["actor.user needs at least one of account, name, uid"]
    event["actor"] = {}
    assert "actor needs at least one of" in problems(event)[0]


@given(st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=8), max_size=8))
def test_problems_never_raises_on_any_object(event: dict[str, Any]) -> None:
    assert isinstance(problems(event), list)


IDS = st.text(min_size=1, max_size=12)
OPTIONAL_TEXT = st.none() | st.text(max_size=12)


@given(
    kind=st.sampled_from(["decision", "approval_request", "grant", "approval", "alert"]),
    who=IDS,
    subject=IDS,
    words=st.lists(st.text(max_size=8), max_size=3),
    decision=st.sampled_from(["allow", "deny", "approval_required", "odd"]),
    action=st.sampled_from(["read", "search", "export", "modify", "odd"]),
    when=st.sampled_from(["2026-01-05T10:03:00Z", "not a time", "2026-01-05T10:03:00"]),
    extra=OPTIONAL_TEXT,
)
def test_any_well_typed_entry_maps_to_a_valid_event(
    kind: str,
    who: str,
    subject: str,
    words: list[str],
    decision: str,
    action: str,
    when: str,
    extra: str | None,
) -> None:
    raw: dict[str, Any] = {
        "type": kind,
        "time": when,
        "principal": who,
        "subject": subject,
        "categories": words,
        "purpose": "support",
        "ticket": extra,
    }
    raw.update(
        {
            "decision": {"id": "ev-1", "action": action, "category": "profile",
                         "decision": decision, "reasons": words},
            "approval_request": {"request": "req-1", "approvals_needed": 1, "expires": when},
            "grant": {"grant": "g-1", "starts": when, "ends": when, "request": extra},
            "approval": {"request": "req-1", "approver": who},
            "alert": {"rule": "r", "severity": decision, "principals": [who],
                      "subjects": [subject]},
        }[kind]
    )  # fmt: skip
    event = from_entry(7, parse(raw), "custos/test")
    assert event is not None
    assert problems(event) == []
    assert event["metadata"]["uid"] == "ledger:7"
    json.dumps(event)  # plain JSON all the way down
