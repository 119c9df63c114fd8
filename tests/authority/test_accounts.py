"""Who may act for whom, tried as a database administrator without keys would, over real HTTP
on loopback: a token, session or account row made or changed by hand never acts."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from custos.access import Custos
from tests.api.conftest import PASSWORD, Service

CHECK = {"subject": "user-1", "category": "profile", "purpose": "trust_safety", "ticket": "T-11"}


def sql(system: Custos, statement: str, **params: object) -> None:
    with system.db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def findings(system: Custos) -> list[tuple[str, str]]:
    return [(f.table, f.key) for f in system.verify_authority().projection.findings]


def test_genuine_tokens_and_sessions_act(service: Service) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        reply = tool.post("/v1/check", json=CHECK)
        assert reply.status_code == 200, reply.text
    browser = service.session("priya")
    assert browser.get("/v1/approvals/requests").status_code == 200
    browser.close()
    assert findings(service.system) == []


def test_a_token_inserted_with_sql_never_acts(service: Service) -> None:
    # The DBA mints a tool token of their own for the internal auditor.
    secret = secrets.token_urlsafe(32)
    sql(
        service.system,
        "INSERT INTO api_tokens (id, secret_hash, name, principal, roles, created) "
        "VALUES ('deadbeefdeadbeef', :h, 'x', 'emp-2001', '[\"tool\"]', :t)",
        h=hashlib.sha256(secret.encode()).hexdigest(),
        t=datetime.now(UTC),
    )
    with service.client(f"cst_deadbeefdeadbeef_{secret}") as forged:
        reply = forged.post("/v1/check", json=CHECK)
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "authority_mismatch"
    assert ("api_tokens", "deadbeefdeadbeef") in findings(service.system)


def test_a_token_repointed_at_another_principal_never_acts(service: Service) -> None:
    token_id = service.tokens["ts-tool"].split("_")[1]
    sql(service.system, "UPDATE api_tokens SET principal = 'emp-2001' WHERE id = :i", i=token_id)
    service.system.accounts._tokens.clear()  # the 2 s verification cache, as after it expires
    with service.client(service.tokens["ts-tool"]) as tool:
        reply = tool.post("/v1/check", json=CHECK)
    assert reply.status_code == 503
    assert ("api_tokens", token_id) in findings(service.system)


def test_a_revoked_token_brought_back_is_refused_or_named(service: Service) -> None:
    system = service.system
    token_id = service.tokens["audit-tool"].split("_")[1]
    created = system.accounts.token(token_id)
    assert created.revoked is None
    with system.db.engine.connect() as conn:
        creation = conn.execute(
            sa.text("SELECT auth_idx FROM api_tokens WHERE id = :i"), {"i": token_id}
        ).scalar_one()
    system.accounts.revoke_token(token_id)
    # Un-revoked in place: the row no longer says what its (revocation) entry says.
    sql(system, "UPDATE api_tokens SET revoked = NULL WHERE id = :i", i=token_id)
    with service.client(service.tokens["audit-tool"]) as tool:
        assert tool.post("/v1/check", json=CHECK).status_code == 503
    # Pointed back at its creation entry as well: it passes on use, and log verify names it.
    sql(system, "UPDATE api_tokens SET auth_idx = :c WHERE id = :i", c=creation, i=token_id)
    assert ("api_tokens", token_id) in findings(system)


def test_a_session_inserted_with_sql_signs_nobody_in(service: Service) -> None:
    secret = secrets.token_urlsafe(32)
    sql(
        service.system,
        "INSERT INTO sessions (id_hash, username, csrf, created, expires) "
        "VALUES (:h, 'priya', 'c', :now, :later)",
        h=hashlib.sha256(secret.encode()).hexdigest(),
        now=datetime.now(UTC),
        later=datetime.now(UTC) + timedelta(hours=1),
    )
    with httpx.Client(
        base_url=service.url, timeout=30, headers={"Cookie": f"custos_session={secret}"}
    ) as forged:
        reply = forged.get("/v1/approvals/requests")
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "authority_mismatch"


def test_roles_given_by_hand_are_refused(service: Service) -> None:
    # The requester's manager made a privacy officer with SQL: cannot sign in as one.
    sql(
        service.system,
        """UPDATE accounts SET roles = '["privacy_officer"]' WHERE username = 'max'""",
    )
    with httpx.Client(base_url=service.url, timeout=30) as browser:
        reply = browser.post("/login", data={"username": "max", "password": PASSWORD})
    assert reply.status_code != 303
    assert ("accounts", "max") in findings(service.system)
