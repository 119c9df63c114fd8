"""OpenID Connect sign-in against a real (tiny) provider on loopback: only a linked identity
with a valid, correctly signed, fresh ID token for this very sign-in gets a session."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from custos.access import Custos
from custos.accounts.oidc import OidcSettings
from custos.errors import ConfigurationError
from tests.api.conftest import run_service


class Provider:
    """An OpenID provider with just enough of the protocol, and knobs to misbehave."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_key = self.key
        self.codes: dict[str, dict[str, str]] = {}
        self.sub = "alice-0001"
        self.nonce_override: str | None = None
        self.claims: dict[str, Any] = {}  # added to (or replacing) the ID token's claims
        self.discovery_drops: str | None = None  # a key left out of the discovery document
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                if url.path == "/.well-known/openid-configuration":
                    document = {
                        "issuer": outer.issuer,
                        "authorization_endpoint": f"{outer.issuer}/authorize",
                        "token_endpoint": f"{outer.issuer}/token",
                        "jwks_uri": f"{outer.issuer}/jwks",
                    }
                    document.pop(outer.discovery_drops or "", None)
                    self._json(document)
                elif url.path == "/jwks":
                    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(outer.key.public_key()))
                    self._json({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
                elif url.path == "/authorize":
                    q = dict(urllib.parse.parse_qsl(url.query))
                    code = f"code-{len(outer.codes)}"
                    outer.codes[code] = q
                    target = f"{q['redirect_uri']}?code={code}&state={q['state']}"
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_POST(self) -> None:
                form = dict(
                    urllib.parse.parse_qsl(
                        self.rfile.read(int(self.headers["Content-Length"])).decode()
                    )
                )
                asked = outer.codes.pop(form.get("code", ""), None)
                challenge = (
                    base64.urlsafe_b64encode(
                        hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                    )
                    .rstrip(b"=")
                    .decode()
                )
                if (
                    asked is None
                    or form.get("client_secret") != "s3cret"
                    or challenge != asked["code_challenge"]
                ):
                    self.send_response(400)
                    self.end_headers()
                    return
                now = int(time.time())
                token = jwt.encode(
                    {
                        "iss": outer.issuer,
                        "aud": "custos",
                        "sub": outer.sub,
                        "iat": now,
                        "exp": now + 300,
                        "nonce": outer.nonce_override or asked["nonce"],
                        **outer.claims,
                    },
                    outer.signing_key,
                    algorithm="RS256",
                    headers={"kid": "k1"},
                )
                self._json({"id_token": token, "token_type": "Bearer"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def sso(system: Custos) -> Iterator[tuple[Provider, str]]:
    provider = Provider()
    config = {
        "issuer": provider.issuer,
        "client_id": "custos",
        "client_secret": "s3cret",
        "redirect_uri": "PLACEHOLDER",
        "name": "Example SSO",
    }
    settings = dataclasses.replace(
        system.settings, extra={**system.settings.extra, "service": {"oidc": config}}
    )
    configured = Custos(settings, system.db)
    configured.accounts.add(
        "alice", None, ["auditor"], oidc_subject=f"{provider.issuer}|alice-0001"
    )
    for url, _app in run_service(configured):
        # The settings are read on the first sign-in, once the service's URL is known.
        config["redirect_uri"] = f"{url}/login/oidc/callback"
        yield provider, url
    provider.server.shutdown()


def sign_in(url: str) -> httpx.Response:
    """Run the browser's part of the flow; returns the callback's response."""
    with httpx.Client(timeout=30) as browser:
        start = browser.get(f"{url}/login/oidc")
        assert start.status_code == 303
        pending = start.cookies["custos_oidc"]
        at_provider = browser.get(start.headers["location"])
        assert at_provider.status_code == 302
        return browser.get(
            at_provider.headers["location"], headers={"Cookie": f"custos_oidc={pending}"}
        )


def test_a_linked_identity_signs_in(sso: tuple[Provider, str]) -> None:
    _provider, url = sso
    login = httpx.get(f"{url}/login", timeout=30)
    assert "Sign in with Example SSO" in login.text
    done = sign_in(url)
    assert done.status_code == 200, done.text
    session = done.cookies["custos_session"]
    page = httpx.get(f"{url}/", headers={"Cookie": f"custos_session={session}"}, timeout=30)
    assert page.status_code == 200
    assert "Overview" in page.text


@pytest.mark.parametrize(
    "fault",
    [
        "unlinked",
        "other key",
        "wrong nonce",
        "no cookie",
        "issued to another client",
        "several audiences, no azp",
    ],
)
def test_anything_wrong_means_no_session(sso: tuple[Provider, str], fault: str) -> None:
    provider, url = sso
    if fault == "unlinked":
        provider.sub = "mallory"
    elif fault == "other key":
        provider.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif fault == "wrong nonce":
        provider.nonce_override = "replayed"
    elif fault == "issued to another client":
        provider.claims = {"aud": ["other-app", "custos"], "azp": "other-app"}
    elif fault == "several audiences, no azp":
        provider.claims = {"aud": ["other-app", "custos"]}
    if fault == "no cookie":
        with httpx.Client(timeout=30) as browser:
            start = browser.get(f"{url}/login/oidc")
            at_provider = browser.get(start.headers["location"])
            done = httpx.get(at_provider.headers["location"], timeout=30)
    else:
        done = sign_in(url)
    assert done.status_code == 401, (fault, done.text)
    assert "custos_session" not in done.cookies


def test_a_state_or_cookie_in_foreign_characters_is_refused_not_a_crash(
    sso: tuple[Provider, str],
) -> None:
    _provider, url = sso
    with httpx.Client(timeout=30) as browser:
        start = browser.get(f"{url}/login/oidc")
        pending = start.cookies["custos_oidc"]
        back = browser.get(start.headers["location"]).headers["location"]
    parts = urllib.parse.urlsplit(back)
    query = dict(urllib.parse.parse_qsl(parts.query))
    foreign = urllib.parse.urlunsplit(
        parts._replace(query=urllib.parse.urlencode({**query, "state": "é" + query["state"]}))
    )
    cookie = pending.rsplit(".", 1)[0] + ".é"
    for where, cookie_value in ((foreign, pending), (back, cookie)):
        done = httpx.get(
            where, headers={"Cookie": f"custos_oidc={cookie_value}".encode()}, timeout=30
        )
        assert done.status_code == 401, done.text
        assert "custos_session" not in done.cookies


def test_a_token_for_custos_among_others_signs_in_when_custos_is_the_party(
    sso: tuple[Provider, str],
) -> None:
    provider, url = sso
    provider.claims = {"aud": ["custos", "other-app"], "azp": "custos"}
    assert sign_in(url).status_code == 200


@pytest.mark.parametrize("dropped", ["authorization_endpoint", "token_endpoint", "jwks_uri"])
def test_a_discovery_document_without_an_endpoint_is_refused_not_a_crash(
    sso: tuple[Provider, str], dropped: str
) -> None:
    provider, url = sso
    provider.discovery_drops = dropped
    with httpx.Client(timeout=30) as browser:
        start = browser.get(f"{url}/login/oidc", headers={"Accept": "application/json"})
    assert start.status_code == 401, start.text
    assert dropped in start.json()["error"]["message"]


@pytest.mark.parametrize(
    "issuer",
    [
        "http://localhost.attacker.example",
        "http://127.0.0.1.attacker.example/",
        "http://idp.example",
        "https://user@idp.example",
        "ftp://idp.example",
    ],
)
def test_an_issuer_must_be_https_or_this_machine(issuer: str) -> None:
    config = {"issuer": issuer, "client_id": "custos", "redirect_uri": "https://c.example/cb"}
    with pytest.raises(ConfigurationError, match="issuer must be an https URL"):
        OidcSettings.from_config(config, "s3cret")
    loopback = {**config, "issuer": "http://127.0.0.1:9000"}
    assert OidcSettings.from_config(loopback, "s3cret") is not None
