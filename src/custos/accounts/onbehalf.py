"""On-behalf-of: one tool token acting for many staff members, each proving it is them.

A shared console holds one ``tool`` token. To act for a staff member it presents, with its
own token, that member's short-lived assertion: a JWT (an ID token, or any JWT the company's
identity provider signs) carried in ``X-Custos-On-Behalf-Of``, or exchanged first at
``POST /v1/token`` (RFC 8693 token exchange) for a short-lived custos token bound to both.

The assertion is honoured only when:

- it is signed with RS256 or ES256 (never ``none`` nor an HMAC, which a public key read as a
  secret would forge) by a key of the provider's JWKS, fetched from ``[on_behalf] jwks_url``;
- its ``iss`` and ``aud`` are the configured ones and ``exp``, ``nbf`` and ``iat`` hold (with
  ``leeway`` seconds of clock skew), and it lives no longer than ``max_lifetime``;
- the token presenting it is a live tool token allowed to act on behalf (a fact of the token,
  ledgered when it was made: ``custos tokens create --on-behalf``);
- its claim (``claim``: ``sub`` by default, or ``email`` or any other) names an active
  employee or contractor of the directory (never a service): the claim is the principal id,
  or with ``claim_pattern`` (a regular expression the whole claim must match) its named
  group ``id`` is (``^(?P<id>[^@]+)@corp[.]example$`` maps ``emp-1@corp.example`` to
  ``emp-1``).

Then the caller acts as that principal, with the principal's role, never the tool's; each
decision names the tool too (``via``). The JWKS is cached: fetched again when older than
``jwks_refresh`` seconds, and on a key id it does not know at most once per
``jwks_min_refresh`` seconds, so assertions naming made-up keys cannot make custos hammer
the provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from custos.accounts.store import Accounts, ApiToken
from custos.errors import (
    AssertionRefused,
    AuthenticationFailed,
    ConfigurationError,
    Forbidden,
    NotFound,
)

#: The only signatures an assertion may carry: asymmetric, so custos holds no secret of the
#: provider's, and never ``none`` or HS*.
ALGORITHMS = ("RS256", "ES256")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a name
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a name
#: Subject token types an assertion may be declared as.
ASSERTION_TYPES = frozenset(
    {"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"}
)
HEADER = "X-Custos-On-Behalf-Of"
#: Prefix of an exchanged token; its body and signature follow.
EXCHANGED_PREFIX = "cxo_"
_MAX_ASSERTION = 16 * 1024


@dataclass(frozen=True)
class OnBehalfSettings:
    """``[on_behalf]`` of config.toml (see the module docstring)."""

    jwks_url: str
    issuer: str
    audience: str
    claim: str = "sub"
    claim_pattern: re.Pattern[str] | None = None
    leeway: float = 30.0
    max_lifetime: float = 3600.0
    jwks_refresh: float = 300.0
    jwks_min_refresh: float = 30.0
    exchange_seconds: float = 300.0
    timeout: float = 5.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OnBehalfSettings | None:
        """None when on-behalf-of is not configured. Raises :class:`ConfigurationError`."""
        if not config:
            return None
        missing = [k for k in ("jwks_url", "issuer", "audience") if not config.get(k)]
        if missing:
            raise ConfigurationError(f"[on_behalf] is missing {', '.join(missing)}")
        url = str(config["jwks_url"])
        parts = urllib.parse.urlsplit(url)
        # Plain http only to this machine (a provider under test).
        loopback = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not (parts.scheme == "https" or loopback) or not parts.hostname or "@" in parts.netloc:
            raise ConfigurationError("[on_behalf] jwks_url must be an https URL")
        numbers: dict[str, float] = {}
        for key in (
            "leeway",
            "max_lifetime",
            "jwks_refresh",
            "jwks_min_refresh",
            "exchange_seconds",
            "timeout",
        ):
            if key not in config:
                continue
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigurationError(f"[on_behalf] {key} must be a number of seconds ≥ 0")
            numbers[key] = float(value)
        claim = str(config.get("claim", "sub"))
        if not claim:
            raise ConfigurationError("[on_behalf] claim must name a claim (sub, email, …)")
        pattern = None
        if "claim_pattern" in config:
            try:
                pattern = re.compile(str(config["claim_pattern"]))
            except re.error as exc:
                raise ConfigurationError(
                    f"[on_behalf] claim_pattern is not a regular expression ({exc})"
                ) from None
            if "id" not in pattern.groupindex:
                raise ConfigurationError(
                    "[on_behalf] claim_pattern needs a named group id: (?P<id>…)"
                )
        return cls(
            jwks_url=url,
            issuer=str(config["issuer"]),
            audience=str(config["audience"]),
            claim=claim,
            claim_pattern=pattern,
            **numbers,
        )


class KeySet:
    """The provider's signing keys (a JWKS), fetched from a URL and cached (see the module
    docstring for when it is fetched again). Thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        refresh: float = 300.0,
        min_refresh: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refresh = refresh
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.clock = clock
        #: How many times the JWKS was fetched (figures and tests).
        self.fetches = 0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK:
        """The key ``kid``. Raises :class:`AssertionRefused` when the provider has none by
        that id, or its JWKS cannot be fetched."""
        with self._lock:
            now = self.clock()
            stale = self._fetched is None or now - self._fetched >= self.refresh
            unknown = kid not in self._keys and (
                self._fetched is None or now - self._fetched >= self.min_refresh
            )
            if stale or unknown:
                self._fetch(now)
            found = self._keys.get(kid)
        if found is None:
            raise AssertionRefused("the assertion names a key the identity provider does not have")
        return found

    def _fetch(self, now: float) -> None:
        try:
            response = httpx.get(self.url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
            keys = jwt.PyJWKSet.from_dict(data).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            if self._keys:
                # Keep the keys known so far: the provider being down for a moment must not
                # stop everyone; a revoked key goes when the next fetch succeeds.
                self._fetched = now
                return
            raise AssertionRefused(
                f"the identity provider's keys cannot be fetched ({type(exc).__name__})"
            ) from None
        self.fetches += 1
        self._fetched = now
        # Only signing keys with an id: an encryption key never verifies an assertion.
        self._keys = {k.key_id: k for k in keys if k.key_id and k.public_key_use in (None, "sig")}


class AssertionVerifier:
    """Checks a staff member's assertion and names the principal it is for."""

    def __init__(self, settings: OnBehalfSettings, keys: KeySet) -> None:
        self.settings = settings
        self.keys = keys

    def principal(self, assertion: str) -> str:
        """The principal id ``assertion`` proves (its ``claim``). Raises
        :class:`AssertionRefused` saying what is wrong: not a JWT, a refused algorithm, an
        unknown key, a bad signature, expired or not yet valid, the wrong issuer or
        audience, living too long, or no such claim."""
        settings = self.settings
        if len(assertion) > _MAX_ASSERTION:
            raise AssertionRefused("the assertion is too long")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise AssertionRefused("the assertion is not a signed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise AssertionRefused(
                f"the assertion is signed with {str(algorithm)[:16]!r}; only "
                f"{', '.join(ALGORITHMS)} are accepted"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AssertionRefused("the assertion names no key (kid)")
        key = self.keys.key(kid)
        if key.algorithm_name != algorithm:
            # A key published for (or of the type of) one algorithm is never used with another.
            raise AssertionRefused("the assertion's algorithm is not its key's")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key=key.key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AssertionRefused("the assertion has expired") from None
        except jwt.ImmatureSignatureError:
            raise AssertionRefused("the assertion is not valid yet (nbf or iat)") from None
        except jwt.InvalidAudienceError:
            raise AssertionRefused("the assertion is for another audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise AssertionRefused("the assertion is from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AssertionRefused(f"the assertion lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AssertionRefused("the assertion's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AssertionRefused(f"the assertion is not valid ({type(exc).__name__})") from None
        issued, expires = claims["iat"], claims["exp"]
        if not _number(issued) or not _number(expires):
            raise AssertionRefused("the assertion's iat and exp must be numbers")
        if expires - issued > settings.max_lifetime:
            raise AssertionRefused(
                f"the assertion lives {int(expires - issued)} s; at most "
                f"{int(settings.max_lifetime)} s is accepted (it must be short-lived)"
            )
        principal = claims.get(settings.claim)
        if not isinstance(principal, str) or not principal:
            raise AssertionRefused(f"the assertion lacks the {settings.claim!r} claim")
        if settings.claim_pattern is not None:
            matched = settings.claim_pattern.fullmatch(principal)
            if matched is None or not matched.group("id"):
                # The claim (an email, say) is personal data: not repeated.
                raise AssertionRefused(
                    f"the assertion's {settings.claim!r} claim does not have the configured "
                    "form (claim_pattern)"
                )
            principal = matched.group("id")
        return principal


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Acting:
    """A tool acting for a principal: the tool's verified token and the person's id."""

    token: ApiToken
    principal: str
    #: When an exchanged token stops working (Unix seconds; None for a header assertion,
    #: which is checked on every call).
    expires: float | None = None


class OnBehalf:
    """Resolves who a tool acts for: its token plus an assertion (the header) or an
    exchanged token. ``principal_status(id)`` is the directory's ``(status, kind)`` of a
    principal (raising the directory's error for an unknown one): a tool acts only for an
    active employee or contractor, never for a service."""

    def __init__(
        self,
        settings: OnBehalfSettings,
        accounts: Accounts,
        principal_status: Callable[[str], tuple[str, str]],
        exchange_key: bytes,
        *,
        keys: KeySet | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts
        self.principal_status = principal_status
        self._key = exchange_key
        self.verifier = AssertionVerifier(
            settings,
            keys
            or KeySet(
                settings.jwks_url,
                refresh=settings.jwks_refresh,
                min_refresh=settings.jwks_min_refresh,
                timeout=settings.timeout,
            ),
        )

    def _check_tool(self, token: ApiToken) -> None:
        if "tool" not in token.roles or token.account is not None:
            raise Forbidden("only a tool's token may act on behalf of someone")
        if not token.on_behalf:
            raise Forbidden(
                f"token {token.id} may not act on behalf of others",
                hint="create the tool's token with `custos tokens create --on-behalf`",
            )

    def _check_principal(self, principal: str) -> None:
        try:
            status, kind = self.principal_status(principal)
        except NotFound:
            raise Forbidden(
                "the assertion names no principal of the directory; no tool may act for it"
            ) from None
        if kind == "service":
            raise Forbidden(f"{principal} is a service: a tool acts only for staff members")
        if status != "active":
            raise Forbidden(f"{principal} is {status}: no tool may act on their behalf")

    def act_for(self, token: ApiToken, assertion: str) -> Acting:
        """``token`` (verified) acting for the principal ``assertion`` proves. Raises
        :class:`Forbidden` (a token not allowed to, a principal not active),
        :class:`AssertionRefused` and the directory's unknown-principal error."""
        self._check_tool(token)
        principal = self.verifier.principal(assertion.strip())
        self._check_principal(principal)
        return Acting(token, principal)

    def exchange(self, token: ApiToken, assertion: str) -> tuple[str, Acting]:
        """RFC 8693: a custos token for ``token`` acting for the assertion's principal,
        living ``exchange_seconds`` (never past the assertion's own expiry). Returns the
        token string and what it stands for. Raises as :meth:`act_for`."""
        acting = self.act_for(token, assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
        expires = min(time.time() + self.settings.exchange_seconds, float(claims["exp"]))
        body = _b64(
            json.dumps(
                {"tok": token.id, "sub": acting.principal, "exp": int(expires)},
                separators=(",", ":"),
                sort_keys=True,
            ).encode()
        )
        signature = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        return f"{EXCHANGED_PREFIX}{body}.{signature}", Acting(token, acting.principal, expires)

    def exchanged(self, presented: str) -> Acting:
        """What an exchanged token stands for, checked again now: its signature and expiry,
        its tool token still live and allowed, its principal still active. Raises
        :class:`AssertionRefused` (401) or :class:`Forbidden`."""
        body, _, signature = presented.removeprefix(EXCHANGED_PREFIX).partition(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not body or not hmac.compare_digest(signature.encode(), expected.encode()):
            raise AssertionRefused("invalid exchanged token")
        try:
            claims = json.loads(_unb64(body))
            token_id, principal, expires = claims["tok"], claims["sub"], float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            raise AssertionRefused("invalid exchanged token") from None
        if time.time() >= expires:
            raise AssertionRefused("the exchanged token has expired; exchange a new assertion")
        try:
            token = self.accounts.live_token(str(token_id))
        except AuthenticationFailed as exc:
            raise AssertionRefused(exc.message) from None
        self._check_tool(token)
        self._check_principal(str(principal))
        return Acting(token, str(principal), expires)
