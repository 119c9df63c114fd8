"""Who is calling: an API token (tools, monitors) or a signed-in session (people).

Every route depends on :func:`caller` (directly or through :func:`requires`), so no route can
be reached without credentials. Sessions must also pass a CSRF check on unsafe methods; tokens
are bearer credentials that browsers never send on their own, so they need none.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request

from custos.access import Custos, Viewer
from custos.accounts import Operator, same_secret
from custos.accounts import operator as rules
from custos.accounts.onbehalf import EXCHANGED_PREFIX, Acting, OnBehalf
from custos.accounts.onbehalf import HEADER as ON_BEHALF_HEADER
from custos.errors import AuthenticationFailed, Forbidden, RateLimited

SESSION_COOKIE = "custos_session"
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``principal`` is who they act as on the guarded path."""

    kind: str  # "token" or "session"
    name: str  # token id or username
    roles: frozenset[str]
    principal: str | None
    csrf: str | None = None
    #: The person a token belongs to (None for a tool's token; a session's is ``name``).
    account: str | None = None
    #: The tool's own principal when it acts on behalf of ``principal`` (a person, proved
    #: by their assertion); None when the caller acts as itself.
    via: str | None = None

    def has(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    def operator(self) -> Operator:
        """Who acts, as a ledger entry's ``operator`` names them (authenticated)."""
        if self.kind == "session":
            return Operator(self.name, self.principal, tuple(sorted(self.roles)), True)
        return Operator(self.account, self.principal, tuple(sorted(self.roles)), True, self.name)

    def viewer(self, source: str) -> Viewer:
        """Who is looking, as the ledger records a view from ``source`` (``api``,
        ``dashboard``): the principal and roles, never the username or token id."""
        return Viewer(source, self.principal, tuple(sorted(self.roles)))


@dataclass
class RateLimiter:
    """A token bucket per credential: ``rate`` requests a second, bursts up to ``burst``."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str) -> None:
        """Spend one request of ``key``'s bucket. Raises :class:`RateLimited`."""
        now = time.monotonic()
        with self._lock:
            level, since = self._buckets.get(key, (self.burst, now))
            level = min(self.burst, level + (now - since) * self.rate)
            if level < 1:
                self._buckets[key] = (level, now)
                raise RateLimited(f"too many requests; the limit is {self.rate:g} per second")
            self._buckets[key] = (level - 1, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()


def system_of(request: Request) -> Custos:
    system: Custos = request.app.state.system
    return system


async def caller(request: Request) -> Caller:
    """The authenticated caller. Raises :class:`AuthenticationFailed` (401),
    :class:`Forbidden` (403, failed CSRF check) and :class:`RateLimited` (429).

    Async so that the common case (a token verified moments ago) costs no thread hop; any
    database work runs in a worker thread.
    """
    system = system_of(request)
    limiter: RateLimiter = request.app.state.rate_limiter
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise AuthenticationFailed("use 'Authorization: Bearer <token>'")
        presented = value.strip()
        if presented.startswith(EXCHANGED_PREFIX):
            acting = await asyncio.to_thread(_on_behalf(system).exchanged, presented)
            limiter.take(f"token:{acting.token.id}")
            return _acting_caller(acting)
        token = system.accounts.cached_token(presented)
        if token is None:
            token = await asyncio.to_thread(system.accounts.verify_token, presented)
        limiter.take(f"token:{token.id}")
        assertion = request.headers.get(ON_BEHALF_HEADER)
        if assertion is not None:
            acting = await asyncio.to_thread(_on_behalf(system).act_for, token, assertion)
            return _acting_caller(acting)
        return Caller(
            "token", token.id, frozenset(token.roles), token.principal, account=token.account
        )
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        signed = await asyncio.to_thread(system.accounts.session, cookie)
        if signed is not None:
            limiter.take(f"session:{signed.account.username}")
            if request.method in _UNSAFE:
                _check_csrf(request, signed.csrf)
            account = signed.account
            return Caller(
                "session",
                account.username,
                frozenset(account.roles),
                account.principal,
                signed.csrf,
            )
    raise AuthenticationFailed("sign in, or present an API token")


def _on_behalf(system: Custos) -> OnBehalf:
    """The on-behalf-of resolver. Raises :class:`Forbidden` when it is not configured."""
    found = system.on_behalf
    if found is None:
        raise Forbidden(
            "acting on behalf of someone is not configured here",
            hint="set [on_behalf] jwks_url, issuer and audience in config.toml",
        )
    return found


def _acting_caller(acting: Acting) -> Caller:
    """A tool acting for a person: the tool's token and roles, the person's principal, and
    the tool's own principal as ``via``."""
    token = acting.token
    return Caller("token", token.id, frozenset(token.roles), acting.principal, via=token.principal)


def check_origin(request: Request) -> None:
    """Refuse a request a browser says comes from another site. Raises :class:`Forbidden`.

    The service's own origin is ``[service] public_origin`` when set (behind a proxy that
    ends TLS, the address people type), else the address the request reached. A request
    with neither header passes (not a browser's, or a very old one).
    """
    # Browsers say where a request comes from in Sec-Fetch-Site; "none" is the person typing.
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-origin request refused")
    origin = request.headers.get("origin")
    # "null" is what a form post sends under our Referrer-Policy: no-referrer, from our own
    # pages as from anyone's; Sec-Fetch-Site above is what tells them apart.
    if origin is None or origin == "null":
        return
    ours: str | None = getattr(request.app.state, "public_origin", None)
    if origin.rstrip("/").lower() != (ours or str(request.base_url).rstrip("/").lower()):
        raise Forbidden("cross-origin request refused")


def _check_csrf(request: Request, expected: str) -> None:
    check_origin(request)
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented or not same_secret(presented, expected):
        raise Forbidden("missing or wrong CSRF token")


def requires(*roles: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold one of ``roles``. Raises 401 / 403."""

    # Calls caller() itself rather than depending on it: a dependency level less to solve,
    # and usable directly by routes that authenticate without dependency injection.
    async def dependency(request: Request) -> Caller:
        who = await caller(request)
        if not who.has(*roles):
            raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return who

    return dependency


def acting_principal(who: Caller, asked: str | None) -> str:
    """The principal a guarded-path call acts as: a tool token only ever as its own
    (:func:`custos.accounts.acting_principal`). Raises :class:`Forbidden`."""
    return rules.acting_principal(who.principal, asked)


def triager_principal(who: Caller) -> str:
    """The principal someone assigns or closes a case as
    (:func:`custos.accounts.triager_principal`). Raises :class:`Forbidden`."""
    return rules.triager_principal(who.principal)


def approver_principal(who: Caller) -> str:
    """The principal an approver acts as; admins never approve
    (:func:`custos.accounts.approver_principal`). Raises :class:`Forbidden`."""
    return rules.approver_principal(who.roles, who.principal)
