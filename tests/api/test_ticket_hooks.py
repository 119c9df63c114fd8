"""Ticket webhooks on a real service on loopback: HMAC-signed generic, Jira and ServiceNow
payloads change tickets (ledgered first), and decisions follow; bad signatures, stale
timestamps, replays and bad payloads change nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from custos.config import load_settings
from custos.directory import DirectoryDocument, Subject
from custos.errors import UnknownTicket
from custos.feeds.tickets import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from custos.ledger.entries import AuthorityFactsEntry, parse_bytes
from tests.access.test_read import _make_ledger_read_only
from tests.api.conftest import Service

SECRET = b"a shared secret for the ticket hooks"
CHECK = {"subject": "user-1", "category": "profile", "purpose": "trust_safety", "ticket": "T-11"}


@pytest.fixture
def hooks(service: Service) -> Service:
    (service.system.settings.keys_dir / "hooks.secret").write_bytes(SECRET)
    service.app.state.ticket_hooks = None
    return service


def send(
    service: Service,
    kind: str,
    payload: Any,
    *,
    secret: bytes = SECRET,
    at: float | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    stamp = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }
    with service.client() as client:
        return client.post(f"/v1/hooks/tickets/{kind}", content=body, headers=headers)


def decide(service: Service) -> str:
    with service.client(service.tokens["ts-tool"]) as tool:
        reply = tool.post("/v1/check", json=CHECK)
    assert reply.status_code in (200, 404), reply.text
    return str(reply.json().get("decision", reply.json().get("error", {}).get("code")))


def ticket_status(service: Service, key: str) -> str | None:
    try:
        return service.system.directory.ticket_row(key).status
    except UnknownTicket:
        return None


def clean_log(service: Service) -> None:
    """What `custos log verify` checks: the tree, then authority and replay."""
    assert service.system.verify_log().ok
    result = service.system.verify_authority()
    assert [str(f) for f in result.projection.findings] == []
    assert [r.problem for r in result.results if not r.same] == []


def entry(service: Service, index: int) -> AuthorityFactsEntry:
    found = parse_bytes(service.system.ledger.entry(index))
    assert isinstance(found, AuthorityFactsEntry)
    return found


def test_a_generic_close_stops_access_and_is_ledgered_first(hooks: Service) -> None:
    assert decide(hooks) == "allow"
    size = hooks.system.ledger.size()
    ticket = {
        "id": "T-11",
        "kind": "trust_safety",
        "subject": "user-1",
        "assignee": "emp-3001",
        "status": "closed",
        "opened_by": "subject",
    }
    reply = send(hooks, "generic", {"event": "upsert", "ticket": ticket})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "closed"
    index = reply.json()["authority"]
    assert index >= size
    written = entry(hooks, index)
    assert written.kind == "ticket"
    assert written.by == {"hook": "generic"}
    assert written.rows[0]["status"] == "closed"
    assert decide(hooks) == "deny"
    clean_log(hooks)


def configure(service: Service, text: str) -> None:
    """Write config.toml and have the running service read it again."""
    home = service.system.settings.home
    (home / "config.toml").write_text(text, encoding="utf-8")
    service.system.settings = load_settings(home)
    service.app.state.ticket_hooks = None


def test_jira_created_updated_deleted(hooks: Service) -> None:
    configure(
        hooks,
        '[hooks.jira]\nkind = "trust_safety"\nsubject_field = "customfield_10042"\n',
    )
    fields: dict[str, Any] = {
        "assignee": {"name": "emp-3001", "accountId": "5b10a2844c20165700ede21g"},
        "customfield_10042": "user-1",
        "status": {"statusCategory": {"key": "new"}},
        "created": "2026-12-07T09:00:00.000+0000",
    }
    created = {"webhookEvent": "jira:issue_created", "issue": {"key": "JIRA-7", "fields": fields}}
    reply = send(hooks, "jira", created)
    assert reply.status_code == 200, reply.text
    made = hooks.system.directory.ticket("JIRA-7")
    assert (made.kind, made.subject, made.assignee, made.status) == (
        "trust_safety",
        "user-1",
        "emp-3001",
        "open",
    )
    assert made.opened is not None
    assert made.opened.hour == 9
    check = {**CHECK, "ticket": "JIRA-7"}
    with hooks.client(hooks.tokens["ts-tool"]) as tool:
        assert tool.post("/v1/check", json=check).json()["decision"] == "allow"
    done = {**fields, "status": {"statusCategory": {"key": "done"}}}
    updated = {"webhookEvent": "jira:issue_updated", "issue": {"key": "JIRA-7", "fields": done}}
    assert send(hooks, "jira", updated).status_code == 200
    assert hooks.system.directory.ticket("JIRA-7").status == "closed"
    with hooks.client(hooks.tokens["ts-tool"]) as tool:
        assert tool.post("/v1/check", json=check).json()["decision"] == "deny"
    deleted = {"webhookEvent": "jira:issue_deleted", "issue": {"key": "JIRA-7"}}
    reply = send(hooks, "jira", deleted)
    assert reply.status_code == 200, reply.text
    tomb = entry(hooks, reply.json()["authority"])
    assert tomb.rows == ({"id": "JIRA-7", "removed": True},)
    assert ticket_status(hooks, "JIRA-7") is None
    with hooks.client(hooks.tokens["ts-tool"]) as tool:
        after = tool.post("/v1/check", json=check)
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "unknown_ticket"
    clean_log(hooks)


def test_servicenow_shapes(hooks: Service) -> None:
    configure(hooks, '[hooks.servicenow]\nkind = "trust_safety"\n')
    record = {
        "sys_id": "9d385017c611228701d22104cc95c371",
        "number": "INC0010001",
        "assigned_to": {"value": "emp-3001", "display_value": "T&S person"},
        "state": "2",
        "u_subject": "user-1",
        "opened_at": "2026-12-07 08:00:00",
    }
    assert send(hooks, "servicenow", record).status_code == 200
    assert hooks.system.directory.ticket("INC0010001").status == "open"
    resolved = {**record, "state": "6", "closed_at": "2026-12-07 11:00:00"}
    assert send(hooks, "servicenow", resolved).status_code == 200
    closed = hooks.system.directory.ticket("INC0010001")
    assert closed.status == "closed"
    assert closed.closed is not None
    gone = send(hooks, "servicenow", {"number": "INC0010001", "operation": "delete"})
    assert gone.status_code == 200
    assert gone.json()["removed"] is True
    clean_log(hooks)


def test_a_wrong_signature_a_stale_time_and_a_replay_change_nothing(hooks: Service) -> None:
    closing = {
        "event": "upsert",
        "ticket": {
            "id": "T-11",
            "kind": "trust_safety",
            "subject": "user-1",
            "assignee": "emp-3001",
            "status": "closed",
        },
    }
    size = hooks.system.ledger.size()
    wrong = send(hooks, "generic", closing, secret=b"not the secret")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "bad_signature"
    assert "secret" not in wrong.text.lower().replace("shared secret", "")
    stale = send(hooks, "generic", closing, at=time.time() - 3600)
    assert stale.status_code == 401
    assert "replay window" in stale.json()["error"]["message"]
    with hooks.client() as client:
        unsigned = client.post("/v1/hooks/tickets/generic", json=closing)
    assert unsigned.status_code == 401
    assert hooks.system.ledger.size() == size
    assert ticket_status(hooks, "T-11") == "open"
    assert decide(hooks) == "allow"
    # A genuine payload is taken once; the same bytes and signature again are a replay.
    body = json.dumps(closing).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(SECRET, stamp, body),
    }
    with hooks.client() as client:
        assert client.post("/v1/hooks/tickets/generic", content=body, headers=headers).is_success
        again = client.post("/v1/hooks/tickets/generic", content=body, headers=headers)
    assert again.status_code == 401
    assert "replay" in again.json()["error"]["message"]


def test_bad_payloads_and_unknown_references_change_nothing(hooks: Service) -> None:
    size = hooks.system.ledger.size()
    unknown = {
        "event": "upsert",
        "ticket": {
            "id": "T-99",
            "kind": "support",
            "subject": "user-404",
            "assignee": "emp-3001",
            "status": "open",
        },
    }
    reply = send(hooks, "generic", unknown)
    assert reply.status_code == 422
    assert "unknown subject 'user-404'" in json.dumps(reply.json())
    bad = send(hooks, "generic", {"event": "upsert", "ticket": {"id": "T-98", "kind": "gossip"}})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_payload"
    problems = " ".join(bad.json()["error"]["problems"])
    assert "kind" in problems
    assert "subject" in problems
    assert send(hooks, "generic", None, raw=b"{not json").status_code == 422
    jira = send(hooks, "jira", {"webhookEvent": "jira:issue_created", "issue": {}})
    assert jira.status_code == 422
    assert "issue.key" in json.dumps(jira.json())
    assert send(hooks, "gitlab", {}).status_code == 422
    gone = send(hooks, "generic", {"event": "delete", "ticket": {"id": "T-404"}})
    assert gone.status_code == 404
    assert hooks.system.ledger.size() == size
    # A refused payload was not taken: the same bytes, signed at the same second, may come
    # again once the directory knows the subject.
    body = json.dumps(unknown).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(SECRET, stamp, body),
    }
    with hooks.client() as client:
        first = client.post("/v1/hooks/tickets/generic", content=body, headers=headers)
        assert first.status_code == 422
        hooks.system.directory.merge(
            DirectoryDocument(subjects=(Subject("user-404", "US"),)), source="test"
        )
        again = client.post("/v1/hooks/tickets/generic", content=body, headers=headers)
    assert again.status_code == 200, again.text


def test_hooks_refuse_until_a_secret_is_set(service: Service) -> None:
    reply = send(service, "generic", {"event": "delete", "ticket": {"id": "T-11"}})
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "feed_not_configured"
    assert ticket_status(service, "T-11") == "open"


def test_nothing_changes_when_the_ledger_cannot_take_the_change(hooks: Service) -> None:
    closing = {
        "event": "upsert",
        "ticket": {
            "id": "T-11",
            "kind": "trust_safety",
            "subject": "user-1",
            "assignee": "emp-3001",
            "status": "closed",
        },
    }
    _, secret = hooks.system.accounts.create_token("hr", ["provisioner"])
    _make_ledger_read_only(hooks.system)
    try:
        reply = send(hooks, "generic", closing)
        assert reply.status_code == 503, reply.text
        with hooks.client(secret) as feed:
            removed = feed.delete("/v1/subjects/user-1")
            assert removed.status_code == 503, removed.text
            scim = feed.patch(
                "/scim/v2/Users/emp-3001",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "active", "value": False}],
                },
            )
            assert scim.status_code == 503, scim.text
            assert scim.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    finally:
        with hooks.system.db.engine.begin() as conn:
            if hooks.system.db.is_sqlite:
                conn.execute(sa.text("DROP TRIGGER ro"))
            else:
                conn.execute(sa.text("DROP TRIGGER ro ON ledger_entries"))
    hooks.system.directory.invalidate()
    assert ticket_status(hooks, "T-11") == "open"
    assert hooks.system.directory.subject("user-1").id == "user-1"
    assert hooks.system.directory.principal("emp-3001").status == "active"
    assert decide(hooks) == "allow"
    # The same bytes may come again once the ledger takes them (they were not taken).
    assert send(hooks, "generic", closing).status_code == 200
    assert decide(hooks) == "deny"
    clean_log(hooks)
