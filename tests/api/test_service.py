"""The service over real HTTP on loopback: authentication everywhere, roles, separation of
duties, CSRF, the 2022 case through the API, the ledger, hostile requests, one error shape."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from custos.accounts.onbehalf import TOKEN_EXCHANGE
from tests.api.conftest import PASSWORD, Service

# Every operation of the OpenAPI schema with a credential that holds the wrong role. The test
# below fails when an operation is added without being listed here.
WRONG_ROLE = {
    ("post", "/v1/check"): "monitor",
    ("post", "/v1/check/batch"): "monitor",
    ("post", "/v1/token"): "monitor",
    ("post", "/v1/read"): "siem",
    ("post", "/v1/query"): "siem",
    ("post", "/v1/approvals/requests"): "monitor",
    ("get", "/v1/approvals/requests"): "ts-tool",
    ("get", "/v1/approvals/requests/{request_id}"): "ts-tool",
    ("post", "/v1/approvals/requests/{request_id}/approve"): "ts-tool",
    ("post", "/v1/approvals/requests/{request_id}/deny"): "siem",
    ("get", "/v1/grants"): "ts-tool",
    ("get", "/v1/grants/{grant_id}"): "ts-tool",
    ("post", "/v1/grants/{grant_id}/revoke"): "monitor",
    ("post", "/v1/grants/{grant_id}/review"): "ts-tool",
    ("post", "/v1/break-glass"): "monitor",
    ("get", "/v1/ledger/checkpoint"): None,
    ("get", "/v1/ledger/proof/inclusion"): None,
    ("post", "/v1/ledger/cosignatures"): "ts-tool",
    ("get", "/v1/ledger/proof/consistency"): None,
    ("get", "/v1/ledger/entries/{index}"): "ts-tool",
    ("get", "/v1/ledger/tile/{path}"): None,
    ("get", "/v1/subjects/{subject_id}/report"): "siem",
    ("get", "/v1/whoami"): None,
    ("post", "/v1/events"): "monitor",
    ("get", "/v1/events"): "ts-tool",
    ("post", "/v1/detect"): "monitor",
    ("get", "/v1/alerts"): "ts-tool",
    ("get", "/v1/alerts/{alert_id}"): "ts-tool",
    ("get", "/v1/cases"): "ts-tool",
    ("get", "/v1/cases/{case_id}"): "ts-tool",
    ("post", "/v1/cases/{case_id}/assign"): "monitor",
    ("post", "/v1/cases/{case_id}/comment"): "monitor",
    ("post", "/v1/cases/{case_id}/close"): "monitor",
    ("get", "/metrics"): "ts-tool",
    ("get", "/v1/subjects/{subject_id}"): "ts-tool",
    ("put", "/v1/subjects/{subject_id}"): "monitor",
    ("patch", "/v1/subjects/{subject_id}"): "siem",
    ("delete", "/v1/subjects/{subject_id}"): "ts-tool",
    ("get", "/v1/tickets/{ticket_id}"): "ts-tool",
    ("put", "/v1/tickets/{ticket_id}"): "monitor",
    ("patch", "/v1/tickets/{ticket_id}"): "siem",
    ("delete", "/v1/tickets/{ticket_id}"): "ts-tool",
}
# Authenticated by an HMAC signature over the body rather than a token (ticket webhooks).
SIGNED = [("post", "/v1/hooks/tickets/{kind}")]
# The probes, the only operations without credentials (a load balancer has none), and the
# whole of what each may say.
PUBLIC = {("get", "/healthz"): {"status": "ok"}, ("get", "/readyz"): {"status": "ok"}}
PAGES = [
    "/",
    "/approvals",
    "/approvals/req-x",
    "/ledger",
    "/policies",
    "/subjects/user-42",
    "/alerts",
    "/events",
    "/principals/emp-3001",
]


def concrete(path: str) -> str:
    return (
        path.replace("{request_id}", "req-0")
        .replace("{grant_id}", "grant-0")
        .replace("{index}", "0")
        .replace("{path}", "0/000")
        .replace("{subject_id}", "user-1")
        .replace("{alert_id}", "al-1")
        .replace("{case_id}", "case-1")
        .replace("{ticket_id}", "T-11")
        .replace("{kind}", "generic")
    )


def sent(path: str) -> dict[str, Any]:
    """``httpx`` arguments sending a valid body for the operation, so that only the
    credentials are wrong: JSON everywhere, a text/plain note where a cosignature goes."""
    if path == "/v1/ledger/cosignatures":
        note = "custos/test\n1\n" + "A" * 43 + "=\n\n\u2014 w AAAAAAAA\n"
        return {"content": note.encode(), "headers": {"Content-Type": "text/plain"}}
    if path == "/v1/token":  # RFC 8693 token exchange: a form, as OAuth clients send it
        return {"data": {"grant_type": TOKEN_EXCHANGE, "subject_token": "x.y.z"}}
    return {"json": body_for(path)}


def body_for(path: str) -> dict[str, Any]:
    """A valid body for the operation, so that only the credentials are wrong."""
    if path.endswith("/batch"):
        return {"requests": [{"subject": "user-1", "category": "profile", "purpose": "support"}]}
    if path in ("/v1/approvals/requests", "/v1/break-glass"):
        return {
            "subject": "user-1",
            "categories": ["ip_history"],
            "purpose": "trust_safety",
            "reason": "why",
        }
    if path == "/v1/events":
        return {
            "events": [
                {
                    "id": "x-1",
                    "time": "2026-01-05T10:03:00Z",
                    "principal": "emp-1",
                    "action": "read",
                    "subject": "user-1",
                    "category": "profile",
                    "purpose": "support",
                    "decision": "allow",
                }
            ]
        }
    if path.endswith("/assign"):
        return {"assignee": "ivy"}
    if path.endswith("/comment"):
        return {"text": "looked"}
    if path.endswith("/close"):
        return {"disposition": "legitimate"}
    if path.endswith("/review"):
        return {"note": "why"}
    if path.endswith(("/approve", "/deny", "/revoke")):
        return {"reason": "why"}
    return {"subject": "user-1", "category": "profile", "purpose": "support"}


def error_of(reply: httpx.Response) -> dict[str, Any]:
    body = reply.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return dict(body["error"])


def operations(service: Service) -> list[tuple[str, str]]:
    with service.client(service.tokens["monitor"]) as client:
        schema = client.get("/v1/openapi.json").json()
    return [(m, p) for p, item in schema["paths"].items() for m in item]


def test_the_schema_lists_exactly_the_operations_checked_here(service: Service) -> None:
    assert sorted(operations(service)) == sorted([*WRONG_ROLE, *PUBLIC, *SIGNED])


def test_every_endpoint_without_credentials_answers_401(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        for method, path in WRONG_ROLE:
            reply = anonymous.request(method, concrete(path), **sent(path))
            assert reply.status_code == 401, (method, path, reply.text)
            assert error_of(reply)["code"] == "unauthenticated"
            assert reply.headers["www-authenticate"] == "Bearer"
        for page in PAGES:
            reply = anonymous.get(page, headers={"Accept": "text/html"})
            assert reply.status_code == 401, page
            assert "Sign in" in reply.text
        # The schema too (it maps every operation); and no docs page loading a CDN's script.
        assert anonymous.get("/v1/openapi.json").status_code == 401
        assert anonymous.get("/v1/docs").status_code == 404
        bad = anonymous.get("/v1/whoami", headers={"Authorization": "Bearer cst_nope"})
        assert bad.status_code == 401
        assert "cst_nope" not in bad.text
        for (method, path), body in PUBLIC.items():
            reply = anonymous.request(method, path)
            assert (reply.status_code, reply.json()) == (200, body), path
        for method, path in SIGNED:
            reply = anonymous.request(method, concrete(path), json={"event": "upsert"})
            assert reply.status_code == 401, (method, path, reply.text)
            assert error_of(reply)["code"] == "bad_signature"


def test_every_endpoint_with_the_wrong_role_answers_403(service: Service) -> None:
    for (method, path), token in WRONG_ROLE.items():
        if token is None:
            continue
        with service.client(service.tokens[token]) as client:
            reply = client.request(method, concrete(path), **sent(path))
            assert reply.status_code == 403, (method, path, reply.text)
            assert error_of(reply)["code"] == "forbidden"


def test_a_tool_acts_only_as_its_own_principal(service: Service) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        mine = tool.post(
            "/v1/check",
            json={
                "subject": "user-1",
                "category": "profile",
                "purpose": "trust_safety",
                "ticket": "T-11",
            },
        )
        assert mine.status_code == 200
        assert mine.json()["decision"] == "allow"
        assert mine.json()["ledger_index"] is not None
        other = tool.post(
            "/v1/check",
            json={
                "principal": "emp-2001",
                "subject": "user-1",
                "category": "profile",
                "purpose": "trust_safety",
            },
        )
        assert other.status_code == 403
        assert "act as emp-3001, not emp-2001" in error_of(other)["message"]


def test_break_glass_is_taken_never_asserted_and_only_its_holder_side_revokes(
    service: Service,
) -> None:
    read = {
        "subject": "user-1",
        "category": "ip_history",
        "purpose": "security_incident",
        "precision": "precise",
    }
    with service.client(service.tokens["soc-tool"]) as soc:
        asserted = soc.post("/v1/read", json={**read, "break_glass": True})
        assert asserted.status_code == 403, asserted.text
        assert error_of(asserted)["rule"] == "break-glass"
        assert "records" not in asserted.json()
        assert soc.post("/v1/read", json={**read, "break_glass": "yes"}).status_code == 422
        taken = soc.post(
            "/v1/break-glass",
            json={
                "subject": "user-1",
                "categories": ["ip_history"],
                "purpose": "security_incident",
                "reason": "credential stuffing, INC-9",
            },
        )
        assert taken.status_code == 201, taken.text
        assert taken.json()["review"] == "open"
        released = soc.post("/v1/read", json=read).json()
        assert (released["decision"], len(released["records"])) == ("allow", 3)
        grant = taken.json()["id"]
        # Admins and auditors are no part of a grant's life, whatever principal their
        # account is linked to (this admin's is a privacy officer's).
        service.system.accounts.add("adm", PASSWORD, ["admin"], "emp-4002")
        for who in ("adm", "aud"):
            refused = service.session(who).post(
                f"/v1/grants/{grant}/revoke", json={"reason": "tidying up"}
            )
            assert refused.status_code == 403, (who, refused.text)
        revoked = soc.post(f"/v1/grants/{grant}/revoke", json={"reason": "incident closed"})
        assert revoked.json()["status"] == "revoked"
    opened = service.session("ana").post(
        "/v1/approvals/requests",
        json={
            "subject": "user-1",
            "categories": ["ip_history"],
            "purpose": "trust_safety",
            "reason": "people do not open requests; their tools do",
        },
    )
    assert opened.status_code == 403


def test_the_2022_case_over_http(service: Service) -> None:
    with service.client(service.tokens["audit-tool"]) as audit:
        refused = audit.post(
            "/v1/approvals/requests",
            json={
                "subject": "user-42",
                "categories": ["ip_history"],
                "purpose": "internal_investigation",
                "ticket": "T-7",
                "reason": "find who leaked to the press",
            },
        )
        assert refused.status_code == 403
        assert error_of(refused)["rule"] == "source-protection"
    with service.client(service.tokens["ts-tool"]) as tool:
        opened = tool.post(
            "/v1/approvals/requests",
            json={
                "subject": "user-42",
                "categories": ["ip_history"],
                "purpose": "trust_safety",
                "ticket": "T-10",
                "reason": "abuse report R-77",
                "hours": 2,
            },
        )
        assert opened.status_code == 201, opened.text
        assert opened.json()["actions"] == ["read"]  # what the approvers will approve
        request_id = opened.json()["id"]
        for actions in ([], ["delete"], "read"):
            bad = tool.post(
                "/v1/approvals/requests",
                json={
                    "subject": "user-1",
                    "categories": ["ip_history"],
                    "purpose": "trust_safety",
                    "ticket": "T-11",
                    "reason": "abuse report R-78",
                    "actions": actions,
                },
            )
            assert bad.status_code == 422, bad.text
            assert any("actions" in p for p in error_of(bad)["problems"])
        read = {
            "subject": "user-42",
            "category": "ip_history",
            "purpose": "trust_safety",
            "ticket": "T-10",
            "precision": "precise",
        }
        assert tool.post("/v1/read", json=read).json()["records"] == []

        manager = service.session("max")
        refused = manager.post(
            f"/v1/approvals/requests/{request_id}/approve", json={"reason": "my team, fine"}
        )
        assert refused.status_code == 403
        assert error_of(refused)["rule"] == "management-chain"
        root = service.session("root")
        assert (
            root.post(
                f"/v1/approvals/requests/{request_id}/approve", json={"reason": "x"}
            ).status_code
            == 403
        )
        first = service.session("ana").post(
            f"/v1/approvals/requests/{request_id}/approve", json={"reason": "report checked"}
        )
        assert first.json()["status"] == "pending"
        second = service.session("priya").post(
            f"/v1/approvals/requests/{request_id}/approve", json={"reason": "proportionate"}
        )
        assert second.json()["status"] == "approved"
        released = tool.post("/v1/read", json=read).json()
        assert (released["decision"], released["precision"]) == ("allow", "precise")
        assert len(released["records"]) == 3
        grant = second.json()["grant"]
        revoked = tool.post(f"/v1/grants/{grant}/revoke", json={"reason": "done"})
        assert revoked.json()["status"] == "revoked"
        assert tool.post("/v1/read", json=read).json()["records"] == []


def test_concurrent_reads_over_http_are_each_logged_then_released(service: Service) -> None:
    """Reads arriving together are run as one batch: each answer still carries its own
    decision, logged right before what it released; a bad one fails alone."""
    reads = [
        ("ts-tool", {"subject": "user-1", "purpose": "trust_safety", "ticket": "T-11"}),
        ("soc-tool", {"subject": "user-1", "purpose": "security_incident", "ticket": "T-12"}),
        ("ts-tool", {"subject": "user-999", "purpose": "trust_safety", "ticket": "T-11"}),
        ("soc-tool", {"subject": "user-1", "purpose": "security_incident", "ticket": "T-11"}),
    ] * 6
    before = service.system.ledger.size()

    def send(item: tuple[str, dict[str, str]]) -> httpx.Response:
        tool, body = item
        with service.client(service.tokens[tool]) as client:
            return client.post("/v1/read", json={"category": "ip_history", **body})

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(send, reads))
    sources: dict[str, set[str]] = {}
    for (tool, body), answer in zip(reads, answers, strict=True):
        if body["subject"] == "user-999":
            assert answer.status_code == 404
            assert error_of(answer)["code"] == "unknown_subject"
            continue
        assert answer.status_code == 200, answer.text
        read = answer.json()
        decision = json.loads(service.system.ledger.entry(read["ledger_index"]))
        assert decision["id"] == read["event_id"]
        sources.setdefault(tool, set()).add(decision["source"])
        if body["ticket"] == "T-11" and tool == "soc-tool":  # not the responder's ticket
            assert (read["decision"], read["records"]) == ("deny", [])
            assert read["release_ledger_index"] is None
            continue
        assert read["release_ledger_index"] == read["ledger_index"] + 1
        release = json.loads(service.system.ledger.entry(read["release_ledger_index"]))
        assert (release["decision_id"], release["records"]) == (read["event_id"], 3)
        assert [r["network"] for r in read["records"]] == ["203.0.113.0/24"] * 3
    # Batched together, each decision is still logged as made for its own caller.
    assert [len(s) for s in sources.values()] == [1, 1]
    assert sources["ts-tool"] != sources["soc-tool"]
    # 12 released (two entries each), 6 refused (one each), 6 unknown (none).
    assert service.system.ledger.size() == before + 30


def test_sessions_need_csrf_and_same_origin(service: Service) -> None:
    ana = service.session("ana")
    token = ana.headers.pop("X-CSRF-Token")
    path = "/v1/approvals/requests/req-0/approve"
    assert ana.post(path, json={"reason": "x"}).status_code == 403
    evil = ana.post(
        path,
        json={"reason": "x"},
        headers={"X-CSRF-Token": token, "Origin": "https://evil.example"},
    )
    assert evil.status_code == 403
    foreign = ana.post(path, json={"reason": "x"}, headers={"X-CSRF-Token": "é".encode()})
    assert (foreign.status_code, error_of(foreign)["code"]) == (403, "forbidden")
    ok = ana.post(path, json={"reason": "x"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 404  # past the checks: the request does not exist
    # Behind a proxy that ends TLS the browser's origin is the public one, not ours.
    service.app.state.public_origin = "https://custos.example"
    try:
        proxied = {"X-CSRF-Token": token, "Origin": "https://custos.example"}
        assert ana.post(path, json={"reason": "x"}, headers=proxied).status_code == 404
        direct = {"X-CSRF-Token": token, "Origin": service.url}
        assert ana.post(path, json={"reason": "x"}, headers=direct).status_code == 403
    finally:
        service.app.state.public_origin = None
    with httpx.Client(base_url=service.url, timeout=30) as client:
        form = {"username": "ana", "password": PASSWORD}
        login_csrf = client.post("/login", data=form, headers={"Origin": "https://evil.example"})
        assert login_csrf.status_code == 403
        assert "custos_session" not in login_csrf.cookies
        # A form posted from another site under no-referrer says only "null": the browser's
        # Sec-Fetch-Site tells; our own login form (same-origin) gets in.
        hidden = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
        assert client.post("/login", data=form, headers=hidden).status_code == 403
        ours = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
        assert client.post("/login", data=form, headers=ours).status_code == 303
    flags = {part.strip().lower() for part in service.last_set_cookie.split(";")}
    assert {"httponly", "secure", "samesite=strict"} <= flags


def test_every_sign_in_is_in_the_ledger_before_its_session_starts(service: Service) -> None:
    before = service.system.ledger.size()
    service.session("priya")
    entries = [
        json.loads(service.system.ledger.entry(i))
        for i in range(before, service.system.ledger.size())
    ]
    signed = [e for e in entries if e["type"] == "sign_in"]
    assert [(e["account"], e["principal"], e["method"]) for e in signed] == [
        ("priya", "emp-4001", "password")
    ]
    assert all("subject" not in e for e in signed)  # never part of anyone's report


def test_sign_in_fails_the_same_way_and_is_throttled(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        unknown = client.post("/login", data={"username": "nobody", "password": "x" * 12})
        wrong = client.post("/login", data={"username": "ana", "password": "x" * 12})
        assert unknown.status_code == wrong.status_code == 401
        assert "wrong username or password" in unknown.text
        assert "wrong username or password" in wrong.text
        for _ in range(5):
            client.post("/login", data={"username": "ana", "password": "nope"})
        throttled = client.post("/login", data={"username": "ana", "password": "nope"})
        assert throttled.status_code == 429


def test_parallel_guesses_cannot_outrun_the_sign_in_throttle(service: Service) -> None:
    # Twelve guesses at once: each is counted before its password is checked, so no more
    # than the limit reach the password check, however the requests interleave.
    def guess(_: int) -> int:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            form = {"username": "ana", "password": "wrong guess number"}
            return client.post("/login", data=form).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(guess, range(12)))
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) == 5
    with httpx.Client(base_url=service.url, timeout=30) as client:
        right = client.post("/login", data={"username": "ana", "password": PASSWORD})
        assert right.status_code == 429  # the right password waits out the window too


def test_a_good_sign_in_forgives_only_itself_and_memory_is_bounded(service: Service) -> None:
    throttle = service.app.state.login_throttle
    throttle.limit = 2
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for _ in range(3):  # one good sign-in never eats into the allowance
            ok = client.post("/login", data={"username": "ana", "password": PASSWORD})
            assert ok.status_code == 303
        client.post("/login", data={"username": "ana", "password": "wrong password!"})
        client.post("/login", data={"username": "ana", "password": "wrong password!"})
        blocked = client.post("/login", data={"username": "ana", "password": PASSWORD})
        assert blocked.status_code == 429
    throttle.max_names = 50
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for n in range(60):  # a spray of names cannot grow the table without bound
            client.post("/login", data={"username": f"spray{n}", "password": "x" * 12})
    assert len(throttle) <= 50


def test_nul_characters_are_the_requests_fault_never_the_databases(service: Service) -> None:
    # PostgreSQL refuses NUL in text: that is bad input (422) or simply unknown (404), never
    # "the database is unavailable" (503), and the service goes on.
    with httpx.Client(base_url=service.url, timeout=30) as client:
        form = {"username": "ana\x00", "password": "x" * 12}
        assert client.post("/login", data=form).status_code == 401
    with service.client(service.tokens["siem"]) as siem:
        for path in ("/v1/alerts/al%00x", "/v1/events?principal=emp%003001", "/v1/cases/c%00"):
            reply = siem.get(path)
            if reply.status_code != 200:  # an event search finds nothing on SQLite
                assert reply.status_code in (404, 422), (path, reply.text)
                assert error_of(reply)["code"] != "store_unavailable"
        assert siem.get("/healthz").json()["status"] == "ok"
    with service.client(service.tokens["ts-tool"]) as tool:
        body = {"subject": "user\x0042", "category": "profile", "purpose": "support"}
        reply = tool.post("/v1/check", json=body)
        assert reply.status_code in (404, 422), reply.text


def test_security_headers_and_one_error_shape(service: Service) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        reply = tool.get("/v1/whoami")
        assert reply.json() == {
            "kind": "token",
            "name": reply.json()["name"],
            "roles": ["tool"],
            "principal": "emp-3001",
        }
        for header in (
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
        ):
            assert header in reply.headers
        assert reply.headers["cache-control"] == "no-store"
        assert error_of(tool.get("/v1/nowhere"))["code"] == "not_found"
        malformed = tool.post(
            "/v1/check", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 422
        assert error_of(malformed)["code"] == "invalid_input"
        # The same answer where FastAPI parses the body itself (bad UTF-8, deep nesting),
        # and for a tile that does not exist: one error shape everywhere.
        for body in (b'{"requests": ["\xff"]}', b"[" * 100_000):
            batch = tool.post(
                "/v1/check/batch", content=body, headers={"Content-Type": "application/json"}
            )
            assert (batch.status_code, error_of(batch)["code"]) == (422, "invalid_input")
        with service.client(service.tokens["monitor"]) as monitor:
            missing = monitor.get("/v1/ledger/tile/0/999")
            assert (missing.status_code, error_of(missing)["code"]) == (404, "not_found")
        unknown = tool.post(
            "/v1/check", json={"subject": "user-404", "category": "profile", "purpose": "support"}
        )
        assert (unknown.status_code, error_of(unknown)["code"]) == (404, "unknown_subject")
        extra = tool.post(
            "/v1/check",
            json={"subject": "user-1", "category": "profile", "purpose": "support", "admin": True},
        )
        assert extra.status_code == 422
        huge = tool.post(
            "/v1/check",
            content=b"x" * (11 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert huge.status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: only counting can tell
            for _ in range(12):
                yield b" " * (1024 * 1024)

        # Routes whose body FastAPI parses caught the refusal and answered 400.
        for path in ("/v1/check", "/v1/check/batch", "/v1/events", "/v1/approvals/requests"):
            streamed = tool.post(
                path, content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert streamed.status_code == 413, (path, streamed.text)
            assert error_of(streamed)["code"] == "too_large"


def test_rate_limits_per_credential(service: Service) -> None:
    limiter = service.app.state.rate_limiter
    # A slow refill, so that a loaded machine taking seconds per request still sees the burst
    # run out.
    limiter.rate, limiter.burst = 0.01, 3.0
    with service.client(service.tokens["siem"]) as siem:
        codes = [siem.get("/v1/whoami").status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]
    with service.client(service.tokens["monitor"]) as other:
        assert other.get("/v1/whoami").status_code == 200  # per credential


def test_ledger_endpoints_give_verifiable_proofs(service: Service) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        decided = tool.post(
            "/v1/check",
            json={
                "subject": "user-1",
                "category": "profile",
                "purpose": "trust_safety",
                "ticket": "T-11",
            },
        )
        index = decided.json()["ledger_index"]
        # The service signs about once a second: wait for a checkpoint covering the decision.
        deadline = time.monotonic() + 15
        note = tool.get("/v1/ledger/checkpoint").text
        while int(note.splitlines()[1]) <= index and time.monotonic() < deadline:
            time.sleep(0.2)
            note = tool.get("/v1/ledger/checkpoint").text
        size = int(note.splitlines()[1])
        root = base64.b64decode(note.splitlines()[2])
        proof = tool.get("/v1/ledger/proof/inclusion", params={"index": index, "size": size})
        assert proof.status_code == 200
        hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
    with service.client(service.tokens["monitor"]) as monitor:
        raw = monitor.get(f"/v1/ledger/entries/{index}").content
        assert json.loads(raw)["id"] == decided.json()["event_id"]
        tile = monitor.get("/v1/ledger/tile/0/000.p/" + str(size % 256)) if size < 256 else None
        if tile is not None:
            assert tile.status_code == 200
    # Independent RFC 9162 inclusion check.
    leaf = hashlib.sha256(b"\x00" + raw).digest()
    fn, sn, r = index, size - 1, leaf
    for h in hashes:
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + h + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + h).digest()
        fn >>= 1
        sn >>= 1
    assert r == root


def test_the_checkpoint_served_catches_up_with_the_log(service: Service) -> None:
    with service.client(service.tokens["monitor"]) as monitor:
        first = int(monitor.get("/v1/ledger/checkpoint").text.split("\n")[1])
        service.system.ledger.append_many({"type": "test", "n": n} for n in range(50))
        size = service.system.ledger.size()
        # At most one new signature a second; a loaded machine may take a few.
        deadline = time.monotonic() + 15
        served = first
        while served < size and time.monotonic() < deadline:
            time.sleep(0.2)
            served = int(monitor.get("/v1/ledger/checkpoint").text.split("\n")[1])
    assert served == size >= first + 50


def test_requests_two_parsers_could_read_two_ways_are_refused(service: Service) -> None:
    """What a gateway checked must be what custos decides: no key twice in a JSON object,
    one Authorization header, and a body that says it is JSON."""
    before = service.system.ledger.size()
    token = service.tokens["ts-tool"]
    read = '"subject": "user-1", "category": "ip_history", "purpose": "trust_safety"'
    with httpx.Client(base_url=service.url, timeout=30) as raw:
        auth = {"Authorization": f"Bearer {token}"}
        json_type = {**auth, "Content-Type": "application/json"}
        for body, named in (
            ('{"subject": "user-42", ' + read + "}", "'subject'"),
            ('{"requests": [{' + read + ', "ticket": "T-1", "ticket": "T-11"}]}', "'ticket'"),
            ('{"198.51.100.7": 1, "198.51.100.7": 2, ' + read + "}", None),
        ):
            path = "/v1/check/batch" if "requests" in body else "/v1/check"
            reply = raw.post(path, content=body.encode(), headers=json_type)
            assert reply.status_code == 422, reply.text
            error = error_of(reply)
            assert error["code"] == "invalid_input"
            assert "more than once" in error["message"]
            if named:
                assert named in error["message"]
            assert "198.51" not in reply.text  # a key is not echoed unless it is a name
        one = "{" + read + "}"
        for media in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = dict(auth) if media is None else {**auth, "Content-Type": media}
            reply = raw.post("/v1/check", content=one.encode(), headers=headers)
            assert reply.status_code == 415, (media, reply.text)
            assert error_of(reply)["code"] == "unsupported_media_type"
        reply = raw.post("/v1/ledger/cosignatures", content=b'{"note": "x"}', headers=json_type)
        assert reply.status_code == 415
        twice = raw.post(
            "/v1/check",
            content=one.encode(),
            headers=[
                ("Authorization", f"Bearer {token}"),
                ("Authorization", f"Bearer {service.tokens['monitor']}"),
                ("Content-Type", "application/json"),
            ],
        )
        assert (twice.status_code, error_of(twice)["code"]) == (400, "bad_request")
        assert service.system.ledger.size() == before  # nothing refused here was decided
        fine = raw.post(
            "/v1/check",
            content=one.encode(),
            headers={**auth, "Content-Type": "application/json; charset=utf-8"},
        )
        assert fine.status_code == 200, fine.text
        assert service.system.ledger.size() == before + 1


def test_an_address_typed_as_an_id_is_not_repeated_in_the_error(service: Service) -> None:
    before = service.system.ledger.size()
    with service.client(service.tokens["ts-tool"]) as tool:
        for subject in ("198.51.100.7", "jane@example.org"):
            reply = tool.post(
                "/v1/check",
                json={"subject": subject, "category": "profile", "purpose": "trust_safety"},
            )
            assert reply.status_code == 404, reply.text
            assert error_of(reply)["code"] == "unknown_subject"
            assert subject not in reply.text
        logged = [
            service.system.ledger.entry(i) for i in range(before, service.system.ledger.size())
        ]
        assert not any("198.51.100.7" in e or "jane@" in e for e in logged), logged
        known_style = tool.post(
            "/v1/check",
            json={"subject": "user-404", "category": "profile", "purpose": "trust_safety"},
        )
        assert "'user-404'" in error_of(known_style)["message"]  # an id of ours is named


def test_hostile_ledger_paths_and_sizes_are_refused_cleanly(service: Service) -> None:
    service.system.ledger.checkpoint()
    with service.client(service.tokens["monitor"]) as monitor:
        for path in (
            "0/%D9%A0%D9%A0%D9%A0.p/1",  # Arabic-Indic digits
            "%D9%A0/000.p/1",
            "0/x000/000.p/1",  # a second name for tile 0
            "0/000.p/%D9%A1",
            "0/000.p/0001",
            "0/000.p/256",
        ):
            reply = monitor.get(f"/v1/ledger/tile/{path}")
            assert (reply.status_code, error_of(reply)["code"]) == (404, "not_found"), path
        root = "A" * 43 + "="
        for size in ("9223372036854775808", "9" * 20, "9" * 5000):
            note = f"{service.system.ledger.origin}\n{size}\n{root}\n\n\u2014 x AAAAAAAA\n"
            reply = monitor.post(
                "/v1/ledger/cosignatures",
                content=note.encode(),
                headers={"Content-Type": "text/plain"},
            )
            assert reply.status_code == 422, (size[:25], reply.text)


def test_metrics_and_health(service: Service) -> None:
    with service.client(service.tokens["monitor"]) as monitor:
        assert monitor.get("/healthz").json()["status"] == "ok"
        text = monitor.get("/metrics").text
    assert "custos_http_requests_total" in text
    assert "custos_ledger_size" in text


def test_the_admin_manages_accounts_and_sees_no_requests_or_grants(service: Service) -> None:
    request = service.system.request_access(
        principal="emp-3001",
        subject="user-42",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-10",
        reason="abuse report R-77 names this account",
    )
    root = service.session("root")
    for path in ("/v1/approvals/requests", f"/v1/approvals/requests/{request.id}", "/v1/grants"):
        refused = root.get(path)
        assert (refused.status_code, error_of(refused)["code"]) == (403, "forbidden"), path
        assert "user-42" not in refused.text
    for page in ("/approvals", f"/approvals/{request.id}"):
        refused = root.get(page, headers={"Accept": "text/html"})
        assert refused.status_code == 403, page
        assert "Not allowed" in refused.text
        assert "user-42" not in refused.text
    overview = root.get("/")
    assert overview.status_code == 200
    assert 'href="/approvals"' not in overview.text
    assert "custos_ledger_size" in root.get("/metrics").text  # counts only: the operator's
    assert service.session("aud").get(f"/v1/approvals/requests/{request.id}").status_code == 200


@pytest.mark.parametrize("page", [p for p in PAGES if p != "/approvals/req-x"])
def test_pages_render_for_people(service: Service, page: str) -> None:
    aud = service.session("aud")
    reply = aud.get(page)
    assert reply.status_code == 200, reply.text
    assert "custos" in reply.text


def test_the_dashboards_access_log_and_principal_pages_are_logged_first(service: Service) -> None:
    priya = service.session("priya")
    for page, view, fields in (
        ("/events?subject=user-42", "access_log", {"subject": "user-42"}),
        ("/events", "access_log", {}),
        ("/principals/emp-3001", "principal", {"about_principal": "emp-3001"}),
        ("/alerts", "alerts", {}),
    ):
        start = service.system.ledger.size()
        assert priya.get(page).status_code == 200
        entry = json.loads(service.system.ledger.entry(start))
        assert entry["type"] == "oversight_view"
        assert (entry["view"], entry["source"], entry["principal"]) == (
            view,
            "dashboard",
            "emp-4001",
        )
        assert {k: entry[k] for k in fields} == fields


def test_subject_reports_name_staff_only_for_the_privacy_office(service: Service) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        tool.post(
            "/v1/read",
            json={
                "subject": "user-1",
                "category": "profile",
                "purpose": "trust_safety",
                "ticket": "T-11",
            },
        )
    with service.client(service.tokens["monitor"]) as monitor:
        report = monitor.get("/v1/subjects/user-1/report").json()
    assert report["names"] is False
    assert report["accesses"][0]["role"] == "trust_safety_investigator"
    assert "principal" not in report["accesses"][0]
    named = service.session("priya").get("/v1/subjects/user-1/report").json()
    assert named["accesses"][0]["principal"] == "emp-3001"
    from custos.reports import verify_report

    assert verify_report(json.dumps(report)).ok


def test_events_alerts_and_cases_over_http(service: Service) -> None:
    with service.client(service.tokens["audit-tool"]) as audit:
        for _ in range(3):
            refused = audit.post(
                "/v1/read",
                json={
                    "subject": "user-42",
                    "category": "ip_history",
                    "purpose": "internal_investigation",
                    "ticket": "T-7",
                },
            )
            assert refused.json()["decision"] == "deny"
    with service.client(service.tokens["siem"]) as siem:
        imported = siem.post(
            "/v1/events",
            json={
                "events": [
                    {
                        "id": "tool-1",
                        "time": "2026-11-01T10:00:00Z",
                        "principal": "emp-6001",
                        "action": "read",
                        "subject": "user-1",
                        "category": "profile",
                        "purpose": "support",
                        "decision": "allow",
                        "source": "legacy-console",
                    }
                ]
            },
        )
        assert imported.status_code == 201
        assert imported.json() == {"added": 1, "unchanged": 0}
        bad = siem.post("/v1/events", json={"events": [{"id": "tool-2"}]})
        assert bad.status_code == 422
        start = service.system.ledger.size()
        log = siem.get("/v1/events", params={"subject": "user-42"}).json()
        assert {e["principal"] for e in log} == {"emp-2001"}
        # Looking at who accessed a journalist is logged before it is shown, under the
        # journalist's id (so their report has it); a typed value that names no one is not.
        viewed = json.loads(service.system.ledger.entry(start))
        assert (viewed["type"], viewed["view"], viewed["subject"]) == (
            "oversight_view",
            "access_log",
            "user-42",
        )
        assert viewed["roles"] == ["investigator"]
        siem.get("/v1/events", params={"subject": "198.51.100.7", "principal": "emp-2001"})
        typed = json.loads(service.system.ledger.entry(start + 1))
        assert "198.51" not in json.dumps(typed)
        assert typed["subject_filter"] == "not in the directory"
        assert typed["about_principal"] == "emp-2001"
        assert all("records" not in e or isinstance(e["records"], int) for e in log)
        alerts = siem.post("/v1/detect").json()
        mine = [a for a in alerts if "emp-2001" in a["principals"]]
        assert mine, alerts
        seen = service.system.ledger.size()
        detail = siem.get(f"/v1/alerts/{mine[0]['id']}").json()
        assert {e["subject"] for e in detail["evidence"]} == {"user-42"}
        looked = json.loads(service.system.ledger.entry(seen))
        assert (looked["view"], looked["alert"]) == ("alert", mine[0]["id"])
        assert looked["subjects"] == sorted(mine[0]["subjects"])
        case_id = detail["case"]
        # An investigator whose account is the principal the case is about cannot make
        # it go away, nor hand it to a friend.
        service.system.accounts.add("ed", PASSWORD, ["investigator"], "emp-2001")
        own = service.session("ed")
        for path, body in (
            ("close", {"disposition": "legitimate"}),
            ("assign", {"assignee": "ed"}),
        ):
            refused = own.post(f"/v1/cases/{case_id}/{path}", json=body)
            assert refused.status_code == 403, refused.text
            assert error_of(refused)["rule"] == "own-case"
        # Nor can credentials linked to nobody: the rule could not tell who is closing.
        for path, body in (
            ("close", {"disposition": "legitimate"}),
            ("assign", {"assignee": "ivy"}),
        ):
            unlinked = siem.post(f"/v1/cases/{case_id}/{path}", json=body)
            assert unlinked.status_code == 403, unlinked.text
            assert "not linked to a principal" in error_of(unlinked)["message"]
        assert siem.get(f"/v1/alerts/{mine[0]['id']}").json()["case"] == case_id
        at = service.system.ledger.size()
        assert siem.get(f"/v1/cases/{case_id}").status_code == 200
        case_view = json.loads(service.system.ledger.entry(at))
        assert (case_view["view"], case_view["subject"]) == ("case", "user-42")
        for listing, view in (("/v1/alerts", "alerts"), ("/v1/cases", "cases")):
            at = service.system.ledger.size()
            assert siem.get(listing).status_code == 200
            assert json.loads(service.system.ledger.entry(at))["view"] == view
        closed = service.session("ivy").post(
            f"/v1/cases/{case_id}/close",
            json={"disposition": "confirmed_misuse", "comment": "leak hunt"},
        )
        assert closed.json()["status"] == "closed"


def test_times_without_a_zone_or_out_of_range_and_nan_are_422_not_500(service: Service) -> None:
    with service.client(service.tokens["siem"]) as siem:
        for since in ("2020-01-01T00:00:00", "2020-01-01", "9999-12-31T23:59:59-23:59"):
            for path in ("/v1/events", "/v1/alerts"):
                reply = siem.get(path, params={"since": since})
                assert reply.status_code == 422, (path, since, reply.text)
                assert error_of(reply)["code"] == "invalid_input"
        event = {
            "id": "tool-9",
            "time": "2026-11-01T10:00:00Z",
            "principal": "emp-6001",
            "action": "read",
            "subject": "user-1",
            "category": "profile",
            "purpose": "support",
            "decision": "allow",
        }
        for bad in (
            json.dumps({"events": [{**event, "score": float("nan")}]}),
            json.dumps({"events": [{**event, "time": "0001-01-01T00:00:00+14:00"}]}),
        ):
            reply = siem.post(
                "/v1/events", content=bad, headers={"Content-Type": "application/json"}
            )
            assert reply.status_code == 422, reply.text
        assert siem.get("/v1/events", params={"principal": "emp-6001"}).json() == []
