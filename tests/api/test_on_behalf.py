"""On-behalf-of: one tool token acting for many staff members, each with their own assertion.

The identity provider here is real enough: RSA and EC keys made with ``cryptography``, their
JWKS served over HTTP on loopback by the test, assertions signed with PyJWT. custos runs as
the real service (uvicorn on loopback) over a real database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import func, select
from typer.testing import CliRunner

from custos.access import Custos, Viewer
from custos.accounts.onbehalf import TOKEN_EXCHANGE, AssertionVerifier, KeySet, OnBehalfSettings
from custos.cli import app
from custos.directory import parse_text
from custos.errors import AssertionRefused
from custos.ledger.entries import DecisionEntry, parse_bytes
from custos.reports.report import verify_report
from custos.store.ledger import LedgerEntryRow
from tests.api.conftest import Service, populate, run_service

ISSUER = "https://idp.example.test"
AUDIENCE = "custos-console"


@dataclass
class Provider:
    """A company identity provider: signing keys and the JWKS it publishes."""

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    fetches: int = 0
    url: str = ""

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key, alg in (
            ("rsa-1", self.rsa_key.public_key(), "RS256"),
            ("ec-1", self.ec_key.public_key(), "ES256"),
        ):
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key))
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def assertion(
        self,
        sub: str = "emp-3001",
        *,
        kid: str = "rsa-1",
        alg: str = "RS256",
        lifetime: int = 300,
        issued: float | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time() if issued is None else issued)
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + lifetime}
        body.update(claims)
        key: Any = self.rsa_key if alg.startswith("RS") else self.ec_key
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found.fetches += 1
            body = json.dumps(found.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield found
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def console(home: Path, provider: Provider) -> Iterator[Service]:
    """The service with ``[on_behalf]`` pointing at the provider, the 2022 world loaded, and
    a support console's tool token allowed to act on behalf (``console``) beside one that
    is not (``ts-tool``)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[on_behalf]\njwks_url = "{provider.url}"\nissuer = "{ISSUER}"\n'
        f'audience = "{AUDIENCE}"\nleeway = 5\nmax_lifetime = 900\n',
        encoding="utf-8",
    )
    with Custos.init(home) as system:
        tokens = populate(system)
        system.directory.merge(
            parse_text(
                "principals:\n  - {id: svc-batch, name: B, kind: service, role: engineer,"
                " team: data, country: US}\n",
                "services",
            ),
            source="services",
        )
        _, tokens["console"] = system.accounts.create_token(
            "support-console", ["tool"], "emp-2001", on_behalf=True
        )
        for url, app in run_service(system):
            yield Service(system, url, app, tokens)


def _decisions(system: Custos) -> int:
    with system.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(LedgerEntryRow)) or 0)


CHECK = {
    "subject": "user-1",
    "category": "profile",
    "purpose": "trust_safety",
    "ticket": "T-11",
}


def _last_decision(system: Custos) -> DecisionEntry:
    size = system.ledger.size()
    for index in range(size - 1, -1, -1):
        entry = parse_bytes(system.ledger.entry(index))
        if isinstance(entry, DecisionEntry):
            return entry
    raise AssertionError("no decision in the ledger")


def test_a_console_acts_for_the_person_with_their_role_and_names_itself(
    console: Service, provider: Provider
) -> None:
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check",
            json=CHECK,
            headers={"X-Custos-On-Behalf-Of": provider.assertion("emp-3001")},
        )
    assert reply.status_code == 200, reply.text
    decided = reply.json()
    # emp-3001 is a trust and safety investigator with ticket T-10 about user-1: allowed.
    # The console's own principal (emp-2001, internal audit) would get nothing.
    assert decided["decision"] == "allow"
    entry = _last_decision(console.system)
    assert (entry.principal, entry.role, entry.via) == (
        "emp-3001",
        "trust_safety_investigator",
        "emp-2001",
    )
    # An EC-signed assertion works the same.
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check",
            json=CHECK,
            headers={"X-Custos-On-Behalf-Of": provider.assertion(kid="ec-1", alg="ES256")},
        )
    assert reply.status_code == 200, reply.text
    assert _last_decision(console.system).via == "emp-2001"
    with console.client(console.tokens["console"]) as client:
        who = client.get(
            "/v1/whoami", headers={"X-Custos-On-Behalf-Of": provider.assertion("emp-3002")}
        ).json()
    assert (who["principal"], who["via"], who["roles"]) == ("emp-3002", "emp-2001", ["tool"])


def test_the_subject_report_and_custos_log_name_the_tool(
    console: Service, provider: Provider
) -> None:
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": provider.assertion()}
        )
    assert reply.status_code == 200, reply.text
    index = reply.json()["ledger_index"]
    seen = console.system.subject_report("user-1", viewer=Viewer("test"))
    assert seen["accesses"][-1]["via"] == "a tool"  # the subject learns a tool asked
    assert seen["accesses"][-1]["role"] == "trust_safety_investigator"
    named = console.system.subject_report("user-1", viewer=Viewer("test"), names=True)
    assert (named["accesses"][-1]["principal"], named["accesses"][-1]["via"]) == (
        "emp-3001",
        "emp-2001",
    )
    # Both reports verify offline: the row with `via` is derived again from the entries.
    for report in (seen, named):
        check = verify_report(
            json.dumps(report), trusted_key=console.system.ledger.signer.verifier_key()
        )
        assert check.problems == [], check.problems
    shown = CliRunner().invoke(app, ["log", "replay", str(index)])
    assert shown.exit_code == 0, shown.output
    assert "for:      emp-3001 (asked by tool emp-2001 on their behalf)" in shown.output


def test_the_person_named_in_the_body_must_be_the_assertions(
    console: Service, provider: Provider
) -> None:
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check",
            json={**CHECK, "principal": "emp-3002"},
            headers={"X-Custos-On-Behalf-Of": provider.assertion("emp-3001")},
        )
    assert reply.status_code == 403
    assert "act as emp-3001, not emp-3002" in reply.json()["error"]["message"]


def _forged_hs256(provider: Provider) -> str:
    # The classic confusion: HMAC keyed with the provider's public key, which anyone has.
    public = provider.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-3001", "iat": now, "exp": now + 60}
    header = json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode()
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = f"{b64(header)}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(public, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(signature)}"


def _unsigned(provider: Provider) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "emp-3001", "iat": now, "exp": now + 60}
    return jwt.encode(body, None, algorithm="none", headers={"kid": "rsa-1"})


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (lambda p: p.assertion(issued=time.time() - 600), 401, "the assertion has expired"),
        (lambda p: p.assertion(aud="another-app"), 401, "another audience"),
        (lambda p: p.assertion(iss="https://evil.example.test"), 401, "another issuer"),
        (lambda p: p.assertion(kid="rsa-9"), 401, "names a key the identity provider"),
        (_unsigned, 401, "signed with 'none'; only RS256, ES256"),
        (_forged_hs256, 401, "signed with 'HS256'; only RS256, ES256"),
        (lambda p: p.assertion(lifetime=86400), 401, "at most 900 s"),
        (lambda p: p.assertion(nbf=int(time.time()) + 600), 401, "not valid yet"),
        (lambda p: p.assertion(kid="ec-1", alg="RS256"), 401, "not its key's"),
        (lambda p: p.assertion("emp-1004"), 403, "no principal of the directory"),
        (lambda p: p.assertion("emp-9999"), 403, "no principal of the directory"),
        (lambda p: p.assertion("svc-batch"), 403, "svc-batch is a service"),
        (lambda p: "not-a-jwt", 401, "not a signed JWT"),
    ],
)
def test_a_bad_assertion_is_refused_and_nothing_is_decided(
    console: Service, provider: Provider, make: Any, status: int, message: str
) -> None:
    before = _decisions(console.system)
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": make(provider)}
        )
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"]
    assert _decisions(console.system) == before


def test_a_terminated_principal_cannot_be_acted_for(console: Service, provider: Provider) -> None:
    console.system.directory.merge(
        parse_text(
            "principals:\n  - {id: emp-3001, name: T, role: trust_safety_investigator,"
            " team: trust-safety, country: US, status: terminated}\n",
            "hr feed",
        ),
        source="hr feed",
    )
    before = _decisions(console.system)
    with console.client(console.tokens["console"]) as client:
        reply = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": provider.assertion()}
        )
    assert reply.status_code == 403
    assert "emp-3001 is terminated" in reply.json()["error"]["message"]
    assert _decisions(console.system) == before


def test_a_tool_not_allowed_to_act_on_behalf_is_refused(
    console: Service, provider: Provider
) -> None:
    before = _decisions(console.system)
    with console.client(console.tokens["ts-tool"]) as client:
        reply = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": provider.assertion()}
        )
    assert reply.status_code == 403
    assert "may not act on behalf of others" in reply.json()["error"]["message"]
    assert _decisions(console.system) == before


def test_token_exchange_gives_a_short_lived_token_bound_to_both(
    console: Service, provider: Provider
) -> None:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": provider.assertion("emp-3001"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "actor_token": console.tokens["console"],
    }
    with console.client() as client:
        reply = client.post("/v1/token", data=form)
        assert reply.status_code == 200, reply.text
        issued = reply.json()
        assert issued["token_type"] == "Bearer"
        assert 0 < issued["expires_in"] <= 300
        checked = client.post(
            "/v1/check",
            json=CHECK,
            headers={"Authorization": f"Bearer {issued['access_token']}"},
        )
        assert checked.status_code == 200, checked.text
        entry = _last_decision(console.system)
        assert (entry.principal, entry.via) == ("emp-3001", "emp-2001")
        # A tampered token, or one whose tool token was revoked, no longer acts.
        body, _, signature = issued["access_token"].partition(".")
        forged = client.post(
            "/v1/check",
            json=CHECK,
            headers={"Authorization": f"Bearer {body}x.{signature}"},
        )
        assert forged.status_code == 401
        token_id = console.tokens["console"].split("_")[1]
        console.system.accounts.revoke_token(token_id)
        before = _decisions(console.system)
        again = client.post(
            "/v1/check",
            json=CHECK,
            headers={"Authorization": f"Bearer {issued['access_token']}"},
        )
        assert again.status_code == 401
        assert "revoked" in again.json()["error"]["message"]
        assert _decisions(console.system) == before


def test_token_exchange_refuses_what_the_header_refuses(
    console: Service, provider: Provider
) -> None:
    with console.client() as client:
        for form, status, message in (
            (
                {"grant_type": TOKEN_EXCHANGE, "subject_token": provider.assertion(aud="x"),
                 "actor_token": console.tokens["console"]},
                401, "another audience",
            ),
            (
                {"grant_type": TOKEN_EXCHANGE, "subject_token": provider.assertion(),
                 "actor_token": console.tokens["ts-tool"]},
                403, "may not act on behalf",
            ),
            (
                {"grant_type": "password", "subject_token": provider.assertion(),
                 "actor_token": console.tokens["console"]},
                422, "grant_type must be",
            ),
            (
                {"grant_type": TOKEN_EXCHANGE, "subject_token": provider.assertion()},
                401, "actor_token",
            ),
        ):  # fmt: skip
            reply = client.post("/v1/token", data=form)
            assert reply.status_code == status, (form, reply.text)
            assert message in reply.json()["error"]["message"]


def test_the_allow_list_is_authority(console: Service, provider: Provider) -> None:
    """A DBA who flips ``on_behalf`` on a tool's token row gets nothing: the row no longer
    equals the ledger entry that set it."""
    from custos.store.accounts import ApiTokenRow

    # A decision made on behalf of someone replays, and the log verifies, before the edit.
    with console.client(console.tokens["console"]) as client:
        made = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": provider.assertion()}
        )
    assert made.status_code == 200, made.text
    clean = console.system.verify_authority()
    assert clean.projection.findings == []
    assert [r for r in clean.results if not r.same] == []
    assert any(r.logged.get("via") == "emp-2001" for r in clean.results)
    token_id = console.tokens["ts-tool"].split("_")[1]
    with console.system.db.session() as session:
        row = session.get(ApiTokenRow, token_id)
        assert row is not None
        row.on_behalf = True
    console.system.accounts._tokens.clear()
    before = _decisions(console.system)
    with console.client(console.tokens["ts-tool"]) as client:
        reply = client.post(
            "/v1/check", json=CHECK, headers={"X-Custos-On-Behalf-Of": provider.assertion()}
        )
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "authority_mismatch"
    assert _decisions(console.system) == before
    # And `custos log verify` names the row.
    found = console.system.verify_authority().projection.findings
    assert [(f.table, f.key) for f in found] == [("api_tokens", token_id)]


def test_keys_are_fetched_again_only_within_bounds(provider: Provider) -> None:
    now = [0.0]
    keys = KeySet(provider.url, refresh=300, min_refresh=30, clock=lambda: now[0])
    assert keys.key("rsa-1").key_id == "rsa-1"
    assert keys.key("ec-1").key_id == "ec-1"
    assert keys.fetches == 1
    # Unknown key ids: one fetch at most per min_refresh, however many are asked.
    for kid in ("a", "b", "c"):
        with pytest.raises(Exception, match="names a key"):
            keys.key(kid)
    assert keys.fetches == 1
    now[0] = 31.0
    with pytest.raises(Exception, match="names a key"):
        keys.key("d")
    assert keys.fetches == 2
    now[0] = 400.0
    keys.key("rsa-1")
    assert keys.fetches == 3


def test_without_configuration_no_one_acts_on_behalf(service: Service, tmp_path: Path) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        reply = client.post(
            "/v1/check",
            json=CHECK,
            headers={
                "Authorization": f"Bearer {service.tokens['ts-tool']}",
                "X-Custos-On-Behalf-Of": "x.y.z",
            },
        )
    assert reply.status_code == 403
    assert "not configured" in reply.json()["error"]["message"]


def test_an_email_claim_maps_to_a_principal_through_claim_pattern(provider: Provider) -> None:
    settings = OnBehalfSettings.from_config(
        {"jwks_url": provider.url, "issuer": ISSUER, "audience": AUDIENCE, "claim": "email",
         "claim_pattern": r"(?P<id>emp-[0-9]+)@corp[.]example"}
    )  # fmt: skip
    assert settings is not None
    verifier = AssertionVerifier(settings, KeySet(provider.url))
    assert verifier.principal(provider.assertion(email="emp-3001@corp.example")) == "emp-3001"
    with pytest.raises(AssertionRefused) as refused:
        verifier.principal(provider.assertion(email="dana.reyes@elsewhere.example"))
    assert "does not have the configured form" in refused.value.message
    assert "dana" not in refused.value.message
    with pytest.raises(AssertionRefused, match="lacks the 'email' claim"):
        verifier.principal(provider.assertion())
