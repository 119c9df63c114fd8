"""ASGI middleware: security headers, a request size limit, strict API requests, and request
metrics."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]


class SecurityHeaders:
    """Adds the headers above, and ``Cache-Control: no-store`` unless a route set one."""

    def __init__(self, app: ASGIApp, *, https: bool = False) -> None:
        self.app = app
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if self.https:
                    headers.append(
                        (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _refusal(status: int, code: str, message: str, *, close: bool = False) -> list[Message]:
    """A whole response in the API's error shape, for middleware that answers by itself
    (``close`` ends the connection, for a body that was not read to its end)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json")]
    if close:
        headers.append((b"connection", b"close"))
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    ]


def _scim_refusal(status: int, message: str) -> list[Message]:
    """A whole response in SCIM's error shape (RFC 7644 §3.12), for SCIM's paths."""
    error = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": message,
    }
    if status in (400, 422):
        error["scimType"] = "invalidSyntax"
    headers = [(b"content-type", b"application/scim+json")]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": json.dumps(error).encode()},
    ]


async def _answer(send: Send, messages: list[Message]) -> None:
    for message in messages:
        await send(message)


def _too_large(limit: int) -> list[Message]:
    return _refusal(413, "too_large", f"request body over {limit} bytes", close=True)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413, by header or while streaming."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await _answer(send, _too_large(self.limit))
                    return
        seen = 0
        started = False
        exceeded = False
        replaced = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                if exceeded and not started:
                    # The body parser caught the refusal and answers 400 of its own:
                    # answer what really happened instead, and drop the rest of its reply.
                    started = replaced = True
                    await _answer(send, _too_large(self.limit))
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _BodyTooLarge:
            if not started:
                await _answer(send, _too_large(self.limit))


class _BodyTooLarge(Exception):
    pass


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_JSON_TYPE = re.compile(rb"application/(?:[a-z0-9.+-]+\+)?json")
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class StrictRequests:
    """Refuses, for the API's paths (``/v1/``), requests that two parsers could read two ways.

    - more than one ``Authorization`` header: 400 (a proxy may check one, custos use another);
    - a body that is not declared JSON (``application/json`` or ``application/…+json``):
      415, so that a form or ``text/plain`` post is never read as an API call;
    - a JSON object naming a key twice: 422 (Python keeps the last, many proxies and
      gateways the first, so what was checked upstream need not be what custos decides).

    Bodies are read whole (``BodyLimit``, outside this, bounds them) and passed on unchanged.
    A body that is not JSON at all is left to the routes, which answer it in the usual shape.
    The paths in ``text_paths`` take ``text/plain`` instead (signed notes), and only that;
    those in ``form_paths`` ``application/x-www-form-urlencoded`` (OAuth's token endpoint,
    RFC 8693), and only that.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str = "/v1/",
        text_paths: frozenset[str] = frozenset(),
        form_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.text_paths = text_paths
        self.form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if sum(1 for name, _ in headers if name == b"authorization") > 1:
            await self._refuse(send, 400, "bad_request", "more than one Authorization header")
            return
        if scope.get("method") in _BODILESS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        declared = next((v for n, v in headers if n == b"content-type"), b"")
        media = declared.split(b";", 1)[0].strip().lower()
        if body and scope.get("path") in self.text_paths:
            if media != b"text/plain":
                await self._refuse(
                    send, 415, "unsupported_media_type", "send Content-Type: text/plain"
                )
                return
        elif body and scope.get("path") in self.form_paths:
            if media != b"application/x-www-form-urlencoded":
                await self._refuse(
                    send,
                    415,
                    "unsupported_media_type",
                    "send Content-Type: application/x-www-form-urlencoded",
                )
                return
        elif body:
            if not _JSON_TYPE.fullmatch(media):
                await self._refuse(
                    send,
                    415,
                    "unsupported_media_type",
                    "the API takes JSON bodies; send Content-Type: application/json",
                )
                return
            try:
                json.loads(body, object_pairs_hook=_unique_keys)
            except _DuplicateKey as exc:
                named = f" {exc.key!r}" if _FIELD_NAME.fullmatch(exc.key) else ""
                await self._refuse(
                    send,
                    422,
                    "invalid_input",
                    f"the request body names the key{named} more than once in one object",
                )
                return
            except (ValueError, RecursionError):
                pass  # not JSON, or nested too deep: the route says so in its own words
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        if self.prefix.startswith("/scim/"):
            await _answer(send, _scim_refusal(status, message))
            return
        await _answer(send, _refusal(status, code, message))


class Metrics:
    """Counts requests and their latency per route template, method and status."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "custos_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "custos_http_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.requests.labels(template, scope.get("method", "?"), str(status[0])).inc()
            self.latency.labels(template).observe(time.perf_counter() - start)
