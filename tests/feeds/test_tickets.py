"""The ticket webhook parsers and the signature check: any payload is a ticket change or a
clear InvalidPayload naming fields (never another exception), and a signature holds only
for its secret, body and time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.errors import InvalidPayload, SignatureRefused
from custos.feeds.tickets import HookMapping, SignatureCheck, parse, sign

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
MAPPINGS = {
    "jira": HookMapping(kind="support", subject_field="customfield_1"),
    "servicenow": HookMapping(kind="support"),
}
WORDS = st.sampled_from(["T-1", "user-1", "emp-1", "", "open", "done", "6", None, 7])


def _jira(event: Any, key: Any, assignee: Any, subject: Any, status: Any) -> dict[str, Any]:
    return {
        "webhookEvent": event,
        "issue": {
            "key": key,
            "fields": {
                "assignee": {"name": assignee},
                "customfield_1": subject,
                "status": {"statusCategory": {"key": status}},
            },
        },
    }


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["generic", "jira", "servicenow"]), payload=JSON)
def test_any_payload_is_a_change_or_a_clear_refusal(kind: str, payload: Any) -> None:
    try:
        change = parse(kind, payload, MAPPINGS)
    except InvalidPayload as exc:
        problems = exc.problems
        assert problems
        assert all(isinstance(p, str) and p for p in problems)
        return
    assert change.action in ("upsert", "delete")
    assert change.ticket is None or change.ticket.id == change.ticket_id


@settings(max_examples=300, deadline=None)
@given(
    event=st.sampled_from(["jira:issue_created", "issue_updated", "jira:issue_deleted", "x"]),
    key=WORDS,
    assignee=WORDS,
    subject=WORDS,
    status=WORDS,
)
def test_jira_shapes(event: str, key: Any, assignee: Any, subject: Any, status: Any) -> None:
    payload = _jira(event, key, assignee, subject, status)
    try:
        change = parse("jira", payload, MAPPINGS)
    except InvalidPayload as exc:
        problems = exc.problems
        assert problems
        return
    assert change.ticket_id == str(key)
    if event.endswith("deleted"):
        assert change.action == "delete"
    else:
        assert change.ticket is not None
        assert change.ticket.status == ("closed" if status == "done" else "open")
        assert (change.ticket.subject, change.ticket.assignee) == (str(subject), str(assignee))
        assert change.ticket.kind == "support"


def test_servicenow_assignee_reference_and_states() -> None:
    record = {
        "number": "INC1",
        "assigned_to": {"value": "emp-1"},
        "state": 7,
        "u_subject": "user-1",
        "opened_at": "2026-12-07 08:00:00",
        "closed_at": "2026-12-07 09:30:00",
    }
    change = parse("servicenow", record, MAPPINGS)
    assert change.ticket is not None
    assert (change.ticket.assignee, change.ticket.status) == ("emp-1", "closed")
    assert change.ticket.closed is not None
    assert change.ticket.closed.isoformat() == "2026-12-07T09:30:00+00:00"
    with pytest.raises(InvalidPayload, match="no ticket kind"):
        parse("servicenow", {**record, "state": "1"}, {})


def test_generic_delete_needs_only_an_id() -> None:
    change = parse("generic", {"event": "delete", "ticket": {"id": "T-1"}}, {})
    assert (change.action, change.ticket_id, change.ticket) == ("delete", "T-1", None)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=200), other=st.binary(min_size=1, max_size=16))
def test_a_signature_holds_only_for_its_secret_body_and_time(body: bytes, other: bytes) -> None:
    secret = b"the secret"
    check = SignatureCheck(secret, window=300)
    stamp = "1800000000"
    good = sign(secret, stamp, body)
    with pytest.raises(SignatureRefused):
        # (Not secret + zero bytes: HMAC pads short keys with zeros, RFC 2104.)
        check.check(sign(b"another " + other, stamp, body), stamp, body, now=1800000000)
    with pytest.raises(SignatureRefused):
        check.check(good, stamp, body + other, now=1800000000)
    with pytest.raises(SignatureRefused, match="replay window"):
        check.check(good, stamp, body, now=1800000000 + 301)
    with pytest.raises(SignatureRefused):
        check.check(good, None, body, now=1800000000)
    check.check(good, stamp, body, now=1800000010)
    with pytest.raises(SignatureRefused, match="replay"):
        check.check(good, stamp, body, now=1800000011)


def test_a_refusal_never_repeats_the_secret_or_the_expected_signature() -> None:
    check = SignatureCheck(b"s3cr3t-value", window=300)
    body = json.dumps({"event": "delete", "ticket": {"id": "T-1"}}).encode()
    expected = sign(b"s3cr3t-value", "1800000000", body)
    with pytest.raises(SignatureRefused) as caught:
        check.check("sha256=00", "1800000000", body, now=1800000000)
    assert "s3cr3t" not in str(caught.value)
    assert expected.removeprefix("sha256=") not in str(caught.value)


def test_a_payload_whose_change_failed_may_be_sent_again() -> None:
    check = SignatureCheck(b"k", window=300)
    good = sign(b"k", "1800000000", b"{}")
    check.check(good, "1800000000", b"{}", now=1800000000)
    check.forget(good)
    check.check(good, "1800000000", b"{}", now=1800000001)
    with pytest.raises(SignatureRefused, match="replay"):
        check.check(good, "1800000000", b"{}", now=1800000002)


def test_ticket_kinds_are_the_active_packs_words() -> None:
    import dataclasses

    from custos.vocabulary import DEFAULT_VOCABULARY

    payload = {
        "event": "upsert",
        "ticket": {
            "id": "HR-1",
            "kind": "hr_investigation",
            "subject": "user-5",
            "assignee": "emp-7001",
            "status": "open",
        },
    }
    with pytest.raises(InvalidPayload) as refused:
        parse("generic", payload, {})
    assert "unknown ticket kind 'hr_investigation'" in " ".join(refused.value.problems)
    words = dataclasses.replace(
        DEFAULT_VOCABULARY, purposes=(*DEFAULT_VOCABULARY.purposes, "hr_investigation")
    )
    change = parse("generic", payload, {}, words)
    assert change.ticket is not None
    assert change.ticket.kind == "hr_investigation"
