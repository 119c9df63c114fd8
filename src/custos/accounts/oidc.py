"""Sign-in with OpenID Connect (authorization code flow with PKCE), as an option.

custos is the relying party: it sends people to the provider with a fresh ``state``, ``nonce``
and PKCE challenge, exchanges the code at the token endpoint over a back channel, and accepts
the ID token only if its signature verifies against the provider's published keys and its
issuer, audience, expiry and nonce are right. The identity ``issuer|sub`` must be linked to a
custos account beforehand (``custos users add --oidc``): nobody gets an account by signing in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from custos.accounts.store import same_secret
from custos.errors import AuthenticationFailed, ConfigurationError

_ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]
_PENDING_SECONDS = 600


@dataclass(frozen=True)
class OidcSettings:
    """``[service.oidc]``: ``issuer``, ``client_id``, ``client_secret`` (or
    ``$CUSTOS_OIDC_CLIENT_SECRET``), ``redirect_uri``, ``name`` (shown on the sign-in page)."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    name: str = "single sign-on"
    scopes: str = "openid email"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], secret_env: str | None) -> OidcSettings | None:
        """None when OpenID Connect is not configured. Raises :class:`ConfigurationError`."""
        if not config:
            return None
        missing = [k for k in ("issuer", "client_id", "redirect_uri") if not config.get(k)]
        secret = secret_env or config.get("client_secret")
        if not secret:
            missing.append("client_secret (or $CUSTOS_OIDC_CLIENT_SECRET)")
        if missing:
            raise ConfigurationError(f"[service.oidc] is missing {', '.join(missing)}")
        issuer = str(config["issuer"]).rstrip("/")
        parts = urllib.parse.urlsplit(issuer)
        # Plain http only to this machine (a provider under test): compare the host, not a
        # prefix, which "http://localhost.attacker.example" would pass.
        loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not (parts.scheme == "https" or loopback) or not parts.hostname or "@" in parts.netloc:
            raise ConfigurationError("[service.oidc] issuer must be an https URL")
        return cls(
            issuer=issuer,
            client_id=str(config["client_id"]),
            client_secret=str(secret),
            redirect_uri=str(config["redirect_uri"]),
            name=str(config.get("name", "single sign-on")),
            scopes=str(config.get("scopes", "openid email")),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _get_json(url: str, *, data: bytes | None = None, timeout: float = 10.0) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - provider URLs come from configuration
        url, data=data, headers={"Accept": "application/json"}
    )
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read(1_000_000))
    except (urllib.error.URLError, OSError, ValueError):
        raise AuthenticationFailed("the sign-in provider could not be reached") from None
    if not isinstance(body, dict):
        raise AuthenticationFailed("the sign-in provider answered nonsense")
    return body


class OidcClient:
    """One configured provider. ``start`` begins a sign-in; ``finish`` ends it."""

    def __init__(self, settings: OidcSettings, cookie_key: bytes) -> None:
        self.settings = settings
        self._key = cookie_key
        self._discovery: dict[str, Any] | None = None
        self._keys: jwt.PyJWKClient | None = None

    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            found = _get_json(f"{self.settings.issuer}/.well-known/openid-configuration")
            if str(found.get("issuer", "")).rstrip("/") != self.settings.issuer:
                raise AuthenticationFailed("the provider's discovery names another issuer")
            for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                value = found.get(endpoint)
                if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                    raise AuthenticationFailed(f"the provider's discovery has no {endpoint}")
            self._discovery = found
        return self._discovery

    def start(self) -> tuple[str, str]:
        """(URL to send the browser to, signed value for the pending-sign-in cookie)."""
        state, nonce, verifier = (secrets.token_urlsafe(24) for _ in range(3))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_uri,
                "scope": self.settings.scopes,
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(self.discovery()["authorization_endpoint"])
        payload = f"{state}.{nonce}.{verifier}.{int(time.time())}"
        signature = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{endpoint}?{query}", f"{payload}.{signature}"

    def finish(self, code: str, state: str, cookie: str) -> str:
        """The ``issuer|sub`` identity that signed in. Raises :class:`AuthenticationFailed`
        for anything wrong: cookie, state, token exchange, signature, claims, nonce."""
        try:
            s_state, nonce, verifier, started, signature = cookie.split(".")
        except ValueError:
            raise AuthenticationFailed("no sign-in is in progress in this browser") from None
        payload = f"{s_state}.{nonce}.{verifier}.{started}"
        expected = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        if not same_secret(signature, expected) or not same_secret(s_state, state):
            raise AuthenticationFailed("the sign-in does not match this browser (state)")
        if not (started.isascii() and started.isdigit()) or (
            time.time() - int(started) > _PENDING_SECONDS
        ):
            raise AuthenticationFailed("the sign-in took too long; start again")
        tokens = _get_json(
            str(self.discovery()["token_endpoint"]),
            data=urllib.parse.urlencode(
                {
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.settings.redirect_uri,
                    "client_id": self.settings.client_id,
                    "client_secret": self.settings.client_secret,
                    "code_verifier": verifier,
                }
            ).encode(),
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise AuthenticationFailed("the provider returned no ID token")
        if self._keys is None:
            self._keys = jwt.PyJWKClient(str(self.discovery()["jwks_uri"]), cache_keys=True)
        try:
            key = self._keys.get_signing_key_from_jwt(id_token)
            claims = jwt.decode(
                id_token,
                key=key.key,
                algorithms=_ALGORITHMS,
                audience=self.settings.client_id,
                issuer=self.settings.issuer,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "nonce"]},
                leeway=30,
            )
        except (jwt.PyJWTError, ValueError):
            raise AuthenticationFailed("the ID token does not verify") from None
        if not same_secret(str(claims.get("nonce", "")), nonce):
            raise AuthenticationFailed("the ID token was not issued for this sign-in (nonce)")
        several = isinstance(claims["aud"], list) and len(claims["aud"]) > 1
        # OpenID Connect Core 3.1.3.7: with several audiences, custos must be the authorised
        # party, or a token issued to another client would let its holder in.
        if (several or "azp" in claims) and claims.get("azp") != self.settings.client_id:
            raise AuthenticationFailed("the ID token was issued to another client (azp)")
        return f"{self.settings.issuer}|{claims['sub']}"
