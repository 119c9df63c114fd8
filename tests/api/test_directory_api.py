"""REST for subjects and tickets on a real service: only a provisioner token writes, every
change is ledgered first, links and protection follow, removals keep their history in the
ledger and refuse decisions afterwards."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from custos.errors import InvalidInput
from custos.store.directory import SubjectRow, TicketRow
from tests.api.conftest import Service

CHECK = {"subject": "user-1", "category": "profile", "purpose": "trust_safety", "ticket": "T-11"}


@pytest.fixture
def feed(service: Service) -> httpx.Client:
    _, secret = service.system.accounts.create_token("hr-feed", ["provisioner"])
    service.tokens["feed"] = secret
    return service.client(secret)


def decide(service: Service, body: dict[str, str] = CHECK) -> httpx.Response:
    with service.client(service.tokens["ts-tool"]) as tool:
        return tool.post("/v1/check", json=body)


def clean_log(service: Service) -> None:
    """What `custos log verify` checks: the tree, then authority and replay."""
    assert service.system.verify_log().ok
    result = service.system.verify_authority()
    assert [str(f) for f in result.projection.findings] == []
    assert [r.problem for r in result.results if not r.same] == []


def test_only_a_provisioner_writes_and_it_does_nothing_else(
    service: Service, feed: httpx.Client
) -> None:
    body = {"jurisdiction": "US"}
    for token in ("ts-tool", "monitor", "siem"):
        with service.client(service.tokens[token]) as other:
            assert other.put("/v1/subjects/user-5", json=body).status_code == 403
            assert other.get("/scim/v2/Users").status_code == 403
    admin = service.session("root")
    assert admin.put("/v1/subjects/user-5", json=body).status_code == 403
    admin.close()
    assert feed.post("/v1/check", json=CHECK).status_code == 403
    assert feed.get("/v1/grants").status_code == 403
    assert feed.get("/v1/ledger/checkpoint").status_code == 403
    with pytest.raises(InvalidInput, match="provisioner token may hold no other role"):
        service.system.accounts.create_token("both", ["provisioner", "auditor"])
    with pytest.raises(InvalidInput, match="acts as no principal"):
        service.system.accounts.create_token("as-someone", ["provisioner"], "emp-3001")
    with pytest.raises(InvalidInput, match="unknown role"):
        service.system.accounts.add("idp", "correct horse battery staple", ["provisioner"])
    assert service.system.directory.subjects()[-1].id != "user-5"


def test_put_patch_and_delete_a_subject(service: Service, feed: httpx.Client) -> None:
    size = service.system.ledger.size()
    made = feed.put(
        "/v1/subjects/user-5", json={"jurisdiction": "US", "handle": "@five", "tier": "gold"}
    )
    assert made.status_code == 200, made.text
    assert made.json()["authority"] >= size
    # Linked to the journalist: protection follows the link on both sides.
    linked = feed.patch("/v1/subjects/user-5", json={"linked": ["user-42"]})
    assert linked.status_code == 200, linked.text
    assert linked.json()["linked"] == ["user-42"]
    assert linked.json()["handle"] == "@five"
    assert feed.get("/v1/subjects/user-42").json()["linked"] == ["user-5"]
    flagged = feed.patch("/v1/subjects/user-5", json={"protected": ["activist"]})
    assert flagged.json()["protected"] == ["activist"]
    assert feed.get("/v1/subjects/user-5").json()["link_group"] == "user-42"
    assert service.system.directory.subject("user-5").extra == {"tier": "gold"}
    clean_log(service)
    gone = feed.delete("/v1/subjects/user-5")
    assert gone.status_code == 204
    assert feed.get("/v1/subjects/user-5").status_code == 404
    assert feed.get("/v1/subjects/user-42").json()["linked"] == []
    # The ledger keeps what it was; log verify stays clean with the row gone.
    clean_log(service)
    facts = service.system.verify_authority().projection.latest[("subject", "user-5")][1]
    assert facts == {"id": "user-5", "removed": True, "linked": [], "link_group": None}


def test_removing_a_subject_refuses_later_decisions(service: Service, feed: httpx.Client) -> None:
    assert decide(service).json()["decision"] == "allow"
    saved: list[tuple[sa.Table, dict[str, Any]]] = []
    subjects, tickets = SubjectRow.__table__, TicketRow.__table__
    assert isinstance(subjects, sa.Table)
    assert isinstance(tickets, sa.Table)
    with service.system.db.engine.begin() as conn:
        for table, key in ((subjects, "user-1"), (tickets, "T-11"), (tickets, "T-12")):
            found = conn.execute(sa.select(table).where(table.c.id == key))
            saved.append((table, dict(found.mappings().one())))
    assert feed.delete("/v1/subjects/user-1").status_code == 204
    after = decide(service)
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "unknown_subject"
    clean_log(service)
    # A DBA puts the rows back as they were, entries and all: log verify names both, since
    # the ledger's latest for each is its tombstone.
    with service.system.db.engine.begin() as conn:
        for table, row in saved:
            conn.execute(sa.insert(table), row)
    named = {(f.table, f.key) for f in service.system.verify_authority().projection.findings}
    assert named == {("subjects", "user-1"), ("tickets", "T-11"), ("tickets", "T-12")}


def test_tickets_put_patch_close_and_delete(service: Service, feed: httpx.Client) -> None:
    ticket = {
        "kind": "trust_safety",
        "subject": "user-1",
        "assignee": "emp-3001",
        "status": "open",
        "opened_by": "subject",
    }
    assert feed.put("/v1/tickets/T-50", json=ticket).status_code == 200
    check = {**CHECK, "ticket": "T-50"}
    assert decide(service, check).json()["decision"] == "allow"
    closed = feed.patch("/v1/tickets/T-50", json={"status": "closed"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    assert closed.json()["kind"] == "trust_safety"
    assert decide(service, check).json()["decision"] == "deny"
    assert feed.delete("/v1/tickets/T-50").status_code == 204
    assert decide(service, check).status_code == 404
    clean_log(service)


def test_bad_input_is_named_and_changes_nothing(service: Service, feed: httpx.Client) -> None:
    size = service.system.ledger.size()
    cases = [
        ("/v1/subjects/user-6", {"jurisdiction": "usa"}, "jurisdiction"),
        ("/v1/subjects/user-6", {"jurisdiction": "US", "linked": ["user-404"]}, "user-404"),
        ("/v1/subjects/user-6", {"jurisdiction": "US", "protected": ["vip"]}, "protected"),
        ("/v1/subjects/user-6", {"id": "user-7", "jurisdiction": "US"}, "'id'"),
        ("/v1/tickets/T-60", {"kind": "support", "subject": "user-1"}, "assignee"),
        (
            "/v1/tickets/T-60",
            {"kind": "support", "subject": "user-1", "assignee": "emp-404", "status": "open"},
            "emp-404",
        ),
    ]
    for path, body, named in cases:
        reply = feed.put(path, json=body)
        assert reply.status_code == 422, (path, body, reply.text)
        assert named in reply.text, (named, reply.text)
    assert feed.patch("/v1/subjects/user-404", json={"jurisdiction": "US"}).status_code == 404
    assert feed.delete("/v1/tickets/T-404").status_code == 404
    assert (
        feed.put(
            "/v1/subjects/user-6", content=b"[1,", headers={"Content-Type": "application/json"}
        ).status_code
        == 422
    )
    assert service.system.ledger.size() == size
