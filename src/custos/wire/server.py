"""``custos sql serve``: a PostgreSQL wire-protocol (v3) front to the guarded SQL path.

psql, psycopg, DBeaver or Metabase connect with a custos API token as the password; the
database name is the source; purpose and ticket come as connection options
(``options='-c custos.purpose=support -c custos.ticket=T-9'``) or per statement
(``SET custos.purpose = '…'``). Each statement the front does not answer itself (session
``SET``/``SHOW``, transaction control, ``SELECT version()``) goes through ``Custos.query``
and nothing else: the front holds no data map, no policy and no connection to a source.

Why our own asyncio server rather than a library: riffq (Rust, pgwire) brings a catalog
emulation layer that would answer probes custos must refuse, and calls Python from its own
threads; buenavista is synchronous (socketserver) and proxies whole statements to a backend.
Neither authenticates with a custom check over SCRAM against a hashed secret either (custos
keeps only a token's SHA-256, from which no SCRAM verifier can be derived), so the front asks
for a cleartext password: with ``[sql] tls_cert``/``tls_key`` it is asked only inside TLS (a
client's SSLRequest answered ``S``, or PostgreSQL 17's direct TLS with ALPN ``postgresql``),
and a startup in clear is refused; without them the front listens on loopback only, unless
``[sql] allow_cleartext`` says TLS is terminated in front of it (:mod:`custos.wire.tls`).

Connections are accepted on plain sockets and the first bytes read from the socket itself
(peeked, for direct TLS): a TLS layer is put on a socket whose kernel buffer still holds
whatever the client sent after its SSLRequest, so no byte sent in clear before the handshake
can be read as if it came through TLS (CVE-2021-23214's buffered-data injection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar

from custos.access import QueryRequest, QueryResult
from custos.config import Settings
from custos.errors import (
    AuthenticationFailed,
    ConfigurationError,
    CustosError,
    Forbidden,
    InvalidInput,
    NotFound,
    ProtocolViolation,
    RateLimited,
    Refused,
    StoreUnavailable,
    TlsRequired,
    TransactionAborted,
    UnknownSetting,
)
from custos.wire import messages as m
from custos.wire import statements as st
from custos.wire import tls
from custos.wire.guarded import GuardedQueries

log = logging.getLogger("custos.wire")

_STARTUP_CAP = 10_000  # PostgreSQL's own limit on a startup packet
_MAX_NAMED = 1_000  # prepared statements or portals one connection may hold
_FAILED_AUTH_DELAY = 1.0  # seconds before a wrong password is answered: slows guessing
_CLOSE_GRACE = 5.0  # seconds a closing connection may take to flush before it is dropped


@dataclass(frozen=True)
class WireSettings:
    """``[sql]`` keys of config.toml for the front: ``listen`` (address, default loopback),
    ``port``, ``max_connections``, ``max_message_bytes``, ``idle_timeout`` (seconds a client
    may stay silent), ``auth_timeout`` (seconds to finish signing in, TLS handshake included),
    ``tls_cert``/``tls_key`` (PEM files: TLS, and then only TLS), ``tls_client_ca`` (PEM CAs
    whose client certificates are required) and ``allow_cleartext`` (listen beyond loopback
    without TLS: TLS is terminated in front). ``origin`` is the file they came from, for
    messages."""

    listen: str = "127.0.0.1"
    port: int = 5480
    max_connections: int = 64
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 600.0
    auth_timeout: float = 15.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    allow_cleartext: bool = False
    origin: str = "config.toml"

    @classmethod
    def from_settings(cls, settings: Settings) -> WireSettings:
        """Read ``[sql]`` (paths relative to the home folder). Raises
        :class:`ConfigurationError` for a mistyped key or contradictory TLS keys; the files
        themselves are checked when the front is made (:class:`SqlFront`)."""
        origin = str(settings.config_path)
        section = settings.section("sql")
        listen = section.get("listen", cls.listen)
        if not isinstance(listen, str) or not listen.strip():
            raise ConfigurationError(f"{origin}: [sql] listen must be an address")
        port = settings.whole("sql", "port", cls.port)
        if port > 65535:
            raise ConfigurationError(f"{origin}: [sql] port must be at most 65535")
        paths = {
            key: tls.resolve_path(section.get(key), key, settings.home, origin)
            for key in ("tls_cert", "tls_key", "tls_client_ca")
        }
        found = cls(
            listen=listen.strip(),
            port=port,
            max_connections=settings.whole("sql", "max_connections", cls.max_connections),
            max_message_bytes=settings.whole("sql", "max_message_bytes", cls.max_message_bytes),
            idle_timeout=settings.number("sql", "idle_timeout", cls.idle_timeout),
            auth_timeout=settings.number("sql", "auth_timeout", cls.auth_timeout),
            tls_cert=paths["tls_cert"],
            tls_key=paths["tls_key"],
            tls_client_ca=paths["tls_client_ca"],
            allow_cleartext=settings.flag("sql", "allow_cleartext", cls.allow_cleartext),
            origin=origin,
        )
        found.check()
        return found

    def check(self) -> None:
        """Refuse contradictory TLS keys. Raises :class:`ConfigurationError`."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError(
                f"{self.origin}: [sql] tls_cert and tls_key go together: set both or neither"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigurationError(
                f"{self.origin}: [sql] tls_client_ca needs tls_cert and tls_key (client "
                "certificates are asked for inside TLS)"
            )
        if self.allow_cleartext and self.tls_cert is not None:
            # Fail closed on an ambiguous intent: with TLS set, clear startups are refused.
            raise ConfigurationError(
                f"{self.origin}: [sql] allow_cleartext = true contradicts tls_cert: with TLS "
                "configured the front accepts TLS only",
                hint="remove allow_cleartext, or tls_cert and tls_key if TLS is terminated "
                "in front of custos",
            )


@dataclass(frozen=True)
class Identity:
    """Who a connection acts as (``principal``) and by which credential (``credential``, a
    token id): decisions name both, as the HTTP API's do (``api:<token id>``)."""

    principal: str
    credential: str


#: Checks a password (an API token) and returns who it acts as. Raises
#: :class:`AuthenticationFailed` for a wrong one and :class:`Forbidden` for a token that may
#: not query. Called in a worker thread.
Authenticate = Callable[[str], Identity]


class _Closed(Exception):
    """The client went away (or must be sent away): stop serving this connection."""


def sqlstate(exc: CustosError) -> str:
    """The SQLSTATE a custos error is answered with (class 42 for refusals and rejected SQL,
    08/57 for an unreachable or slow source, 58 for custos's own stores)."""
    name = type(exc).__name__
    if name == "SqlRejected":
        return "42601"  # syntax_error: not one read-only SELECT custos understands
    if name == "QueryRefused" or isinstance(exc, Refused | Forbidden):
        return "42501"  # insufficient_privilege
    if name == "SourceUnavailable":
        return "57014" if "timeout" in exc.message.lower() else "08006"
    if name == "SourceFailed":
        return "58000"  # the source failed on the query; its own words are not passed on
    if isinstance(exc, ProtocolViolation):
        return "08P01"
    if isinstance(exc, TlsRequired):
        return "28000"  # invalid_authorization_specification, as pg_hba's "SSL off" refusal
    if isinstance(exc, AuthenticationFailed):
        return "28P01"
    if isinstance(exc, RateLimited):
        return "53400"
    if isinstance(exc, StoreUnavailable):
        return "58000"
    if isinstance(exc, UnknownSetting):
        return "42704"  # undefined_object, as PostgreSQL answers an unknown parameter
    if isinstance(exc, TransactionAborted):
        return "25P02"
    if isinstance(exc, InvalidInput | NotFound):
        return "22023"  # invalid_parameter_value: unknown source, purpose, principal…
    return "XX000"


def error_of(exc: CustosError, *, fatal: bool = False) -> bytes:
    """An ErrorResponse for ``exc``: its message (never a value: custos's messages do not
    carry them), a refusal's reason and rule as the detail, its hint as the hint."""
    reason = getattr(exc, "reason", None)
    rule = getattr(exc, "rule", None)
    detail = reason if isinstance(reason, str) and reason not in exc.message else None
    if isinstance(rule, str) and rule:
        detail = f"{detail + ' ' if detail else ''}(rule: {rule})"
    return m.error_response(sqlstate(exc), exc.message, hint=exc.hint, detail=detail, fatal=fatal)


def text_value(value: Any) -> str | None:
    """A value as PostgreSQL's text format writes it (every column is described as text)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


@dataclass
class _Prepared:
    query: str
    types: tuple[int, ...]


@dataclass
class _Outcome:
    """What running a statement produced: rows to send (``columns`` None: none) and a tag."""

    tag: str
    columns: list[str] | None = None
    rows: list[list[str | None]] = field(default_factory=list)
    notices: list[bytes] = field(default_factory=list)


@dataclass
class _Portal:
    statement: st.Statement
    outcome: _Outcome | None = None
    sent: int = 0


@dataclass
class _Opened:
    """A connection past the negotiation that happens before the protocol: its streams, the
    first 4 or 8 bytes of the startup packet already read (none after TLS), whether it is
    encrypted, and whether it came as direct TLS (no SSLRequest)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    head: bytes
    encrypted: bool
    direct: bool = False


async def _shut(writer: asyncio.StreamWriter, grace: float) -> None:
    """Close gracefully (what is buffered sent, TLS's close_notify), but drop a connection
    whose client stopped reading rather than hold its slot until the client goes away."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), grace)
    except Exception:  # noqa: BLE001 - timed out or reset: nothing more to say to it
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _peek(sock: socket.socket) -> bytes:
    """The first byte waiting on ``sock``, left there (b"" at end of stream)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


async def _receive(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock`` and not one more: what follows stays in the kernel."""
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise _Closed
        data += chunk
    return data


class SqlFront:
    """The wire front: accepts connections, authenticates, answers statements.

    ``queries`` is the guarded path (``Custos``), ``authenticate`` turns a token into the
    principal it acts as. Made with ``tls_cert``/``tls_key`` set, it reads and checks them
    (raising :class:`ConfigurationError`) and then speaks TLS only. :meth:`start` binds;
    :meth:`close` stops accepting and ends every connection. Malformed input ends only its
    own connection, with an ErrorResponse. Needs a selector event loop (Linux's default).
    """

    def __init__(
        self,
        queries: GuardedQueries,
        authenticate: Authenticate,
        settings: WireSettings | None = None,
    ) -> None:
        self.queries = queries
        self.authenticate = authenticate
        self.settings = settings or WireSettings()
        self.settings.check()
        self.tls: ssl.SSLContext | None = None
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            self.tls = tls.server_context(
                self.settings.tls_cert,
                self.settings.tls_key,
                self.settings.tls_client_ca,
                origin=self.settings.origin,
            )
        self._listeners: list[socket.socket] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port bound (useful after ``port=0``)."""
        assert self._listeners
        port: int = self._listeners[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        """Bind and start accepting. Raises :class:`ConfigurationError` when the address
        cannot be bound (in use, not ours) or reaches beyond loopback in clear
        (:func:`custos.wire.tls.check_exposure`)."""
        loop = asyncio.get_running_loop()
        host, port = self.settings.listen, self.settings.port
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ConfigurationError(
                f"{self.settings.origin}: [sql] listen: cannot resolve it ({exc.strerror})"
            ) from None
        addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
        tls.check_exposure(
            [str(sockaddr[0]) for _, sockaddr in addresses],
            tls=self.tls is not None,
            allow_cleartext=self.settings.allow_cleartext,
            origin=self.settings.origin,
        )
        try:
            for family, sockaddr in addresses:
                listener = socket.socket(family, socket.SOCK_STREAM)
                self._listeners.append(listener)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(sockaddr)
                listener.listen(128)
                listener.setblocking(False)
        except OSError as exc:
            for listener in self._listeners:
                listener.close()
            self._listeners = []
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self._acceptors = [loop.create_task(self._accepting(s)) for s in self._listeners]

    async def serve_forever(self) -> None:
        """Serve until cancelled (or closed)."""
        assert self._acceptors
        await asyncio.gather(*self._acceptors)

    async def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.cancel()
        if self._acceptors:
            await asyncio.gather(*self._acceptors, return_exceptions=True)
        for listener in self._listeners:
            listener.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accepting(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors, a connection reset while queued…
                log.warning("the SQL front could not accept a connection: %s", exc.strerror)
                await asyncio.sleep(0.1)
                continue
            if len(self._connections) >= self.settings.max_connections:
                with contextlib.suppress(OSError):
                    # Answered before reading anything: libpq shows it as the error.
                    sock.send(
                        m.error_response(
                            "53300", "too many connections to the custos SQL front", fatal=True
                        )
                    )
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._accept(sock))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _accept(self, sock: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        # One deadline for everything before ReadyForQuery: negotiation, handshake, sign-in.
        deadline = asyncio.get_running_loop().time() + self.settings.auth_timeout
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    opened = await self._open(sock)
            except ssl.SSLError as exc:
                # The reason is OpenSSL's name for what failed (unknown CA, no shared cipher…).
                log.info("SQL front: a TLS handshake failed (%s)", exc.reason or "unknown")
                raise _Closed from None
            writer = opened.writer
            connection = _Connection(self, opened.reader, opened.writer, deadline)
            await connection.run(opened)
        except (_Closed, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must end this connection, never the server
            log.exception("the SQL front dropped a connection after an unexpected error")
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.write(
                        m.error_response(
                            "XX000", "internal error in the custos SQL front", fatal=True
                        )
                    )
                    await writer.drain()
        finally:
            if writer is None:
                sock.close()
            else:
                await _shut(writer, min(self.settings.idle_timeout, _CLOSE_GRACE))

    async def _open(self, sock: socket.socket) -> _Opened:
        """Answer SSLRequest/GSSENCRequest on the raw socket and put TLS on it when asked
        (or when a direct TLS handshake begins): bytes are taken from the socket only as the
        protocol defines them, so nothing sent in clear is ever read as encrypted."""
        loop = asyncio.get_running_loop()
        while True:
            first = await _peek(sock)
            if not first:
                raise _Closed
            if first == b"\x16":  # a TLS handshake record: PostgreSQL 17's direct TLS
                if self.tls is None:
                    raise _Closed  # no protocol to answer in: PostgreSQL closes too
                reader, writer = await self._streams(sock, self.tls)
                return _Opened(reader, writer, b"", encrypted=True, direct=True)
            head = await _receive(sock, 4)
            if struct.unpack("!i", head)[0] == 8:  # the length of an SSLRequest and the like
                head += await _receive(sock, 4)
                code = struct.unpack("!i", head[4:])[0]
                if code == m.SSL_REQUEST and self.tls is not None:
                    await loop.sock_sendall(sock, b"S")
                    reader, writer = await self._streams(sock, self.tls)
                    return _Opened(reader, writer, b"", encrypted=True)
                if code in (m.SSL_REQUEST, m.GSSENC_REQUEST):
                    await loop.sock_sendall(sock, b"N")
                    continue
            # The startup packet (or garbage) begins: its first bytes are handed on.
            reader, writer = await self._streams(sock, None)
            return _Opened(reader, writer, head, encrypted=False)

    async def _streams(
        self, sock: socket.socket, context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 16)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol,
            sock,
            ssl=context,
            ssl_handshake_timeout=self.settings.auth_timeout if context else None,
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Connection:
    def __init__(
        self,
        front: SqlFront,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
    ) -> None:
        self.front, self.reader, self.writer = front, reader, writer
        self.deadline = deadline  # loop time by which signing in must be done
        self.limits = front.settings
        self.principal = ""
        self.credential = ""
        self.source = ""
        self.session: dict[str, str] = dict(st.SETTABLE)
        self.status = "I"
        self.prepared: dict[str, _Prepared] = {}
        self.portals: dict[str, _Portal] = {}
        self.skipping = False  # after an error in the extended protocol, until Sync

    # --- reading ----------------------------------------------------------------------------

    async def _read(self, n: int, timeout: float) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def _message(self) -> tuple[bytes, bytes]:
        head = await self._read(5, self.limits.idle_timeout)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        if length < 4:
            raise ProtocolViolation(f"a message's length ({length}) is less than 4")
        if length - 4 > self.limits.max_message_bytes:
            raise ProtocolViolation(
                f"a message of {length - 4} bytes exceeds the cap of "
                f"{self.limits.max_message_bytes} ([sql] max_message_bytes)"
            )
        body = await self._read(length - 4, self.limits.idle_timeout)
        return kind, body

    async def _flush(self) -> None:
        # A client that stops reading must not hold its slot (and its rows) for ever.
        await asyncio.wait_for(self.writer.drain(), self.limits.idle_timeout)

    async def _fatal(self, exc: CustosError) -> None:
        self.writer.write(error_of(exc, fatal=True))
        with contextlib.suppress(Exception):
            await self._flush()
        raise _Closed

    # --- startup ----------------------------------------------------------------------------

    async def run(self, opened: _Opened) -> None:
        try:
            async with asyncio.timeout_at(self.deadline):
                await self._startup(opened)
        except TimeoutError:
            await self._fatal(ProtocolViolation("signing in took too long"))
        except ProtocolViolation as exc:
            await self._fatal(exc)
        while True:
            try:
                kind, body = await self._message()
            except TimeoutError:
                self.writer.write(
                    m.error_response(
                        "57P05",
                        "terminating connection due to idle timeout ([sql] idle_timeout)",
                        fatal=True,
                    )
                )
                await self._flush()
                return
            except ProtocolViolation as exc:
                await self._fatal(exc)
            try:
                if not await self._dispatch(kind, body):
                    return
            except ProtocolViolation as exc:
                await self._fatal(exc)

    async def _startup(self, opened: _Opened) -> None:
        if opened.direct:
            ssl_object = self.writer.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != tls.ALPN:
                # As PostgreSQL 17: direct TLS is for clients that say they speak PostgreSQL.
                raise ProtocolViolation(
                    f"a direct TLS connection must negotiate ALPN protocol {tls.ALPN!r}"
                )
        # The SSLRequest was answered before TLS (custos.wire.server._open): here, only the
        # startup packet (or a cancel request) may come.
        head = opened.head or await self.reader.readexactly(4)
        length = struct.unpack("!i", head[:4])[0]
        if not 8 <= length <= _STARTUP_CAP:
            raise ProtocolViolation(f"a startup packet's length ({length}) is out of range")
        rest = head[4:] + await self.reader.readexactly(length - len(head))
        code, body = struct.unpack("!i", rest[:4])[0], rest[4:]
        if code in (m.SSL_REQUEST, m.GSSENC_REQUEST):
            raise ProtocolViolation("encryption was requested twice")
        if code == m.CANCEL_REQUEST:
            raise _Closed  # nothing runs long enough here to be worth cancelling
        if code != m.PROTOCOL_3:
            raise ProtocolViolation(
                f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                "the custos SQL front speaks 3.0"
            )
        if self.front.tls is not None and not opened.encrypted:
            # Refused before the password is asked for: the token never leaves the client.
            await self._fatal(
                TlsRequired(
                    "the custos SQL front requires TLS: connect with sslmode=require or "
                    "stricter (verify-full with the server's CA as sslrootcert)",
                )
            )
        startup = m.parse_startup(body)
        user = startup.parameters.get("user", "")
        self.source = startup.parameters.get("database") or user
        try:
            for name, value in st.parse_options(startup.parameters.get("options", "")).items():
                self.session[name] = st.check_setting(name, value)
            for name in ("application_name", "client_encoding", "datestyle", "timezone"):
                given = {k.lower(): v for k, v in startup.parameters.items()}.get(name)
                if given is not None:
                    self.session[name] = st.check_setting(name, given)
        except InvalidInput as exc:
            await self._fatal(exc)
        self.writer.write(m.authentication_cleartext())
        await self._flush()
        kind, body = await self._message()
        if kind != b"p":
            raise ProtocolViolation("expected a password message")
        password = m.parse_password(body)
        try:
            identity = await asyncio.to_thread(self.front.authenticate, password)
            self.principal, self.credential = identity.principal, identity.credential
        except AuthenticationFailed:
            await asyncio.sleep(_FAILED_AUTH_DELAY)
            # PostgreSQL's wording, so tools recognise it; the token is the password.
            await self._fatal(
                AuthenticationFailed(
                    "password authentication failed: the password must be a live custos API "
                    "token with the tool role"
                )
            )
        except CustosError as exc:
            await self._fatal(exc)
        out = [m.authentication_ok()]
        for name, shown in st.REPORTED.items():
            value = self.session.get(name, st.FIXED.get(name, ""))
            out.append(m.parameter_status(shown, value))
        out.append(m.parameter_status("session_authorization", user or self.principal))
        out.append(m.backend_key_data(secrets.randbits(31), secrets.randbits(31)))
        out.append(m.ready_for_query(self.status))
        self.writer.write(b"".join(out))
        await self._flush()
        log.info("SQL front: %s signed in for source %r", self.principal, self.source[:64])

    # --- messages ---------------------------------------------------------------------------

    async def _dispatch(self, kind: bytes, body: bytes) -> bool:
        """Handle one message; False when the client said goodbye."""
        if kind == b"X":
            return False
        if kind == b"Q":
            self.skipping = False
            await self._simple(m.parse_query(body))
            return True
        if kind == b"S":
            m.Reader(body, "Sync").end()
            self.skipping = False
            # Portals end with their transaction, as in PostgreSQL: outside a block that is
            # now, so no client can hold many decided results in memory across Syncs.
            if self.status == "I":
                self.portals.clear()
            else:
                self.portals.pop("", None)
            self.writer.write(m.ready_for_query(self.status))
            await self._flush()
            return True
        if kind == b"H":
            await self._flush()
            return True
        handler = self._extended.get(kind)
        if handler is None:
            name = kind.decode("latin-1") if kind.isascii() and kind.isalpha() else "?"
            raise ProtocolViolation(f"message type {name!r} is not supported by the SQL front")
        if self.skipping:
            return True
        try:
            await handler(self, body)
        except ProtocolViolation:
            raise
        except CustosError as exc:
            self._fail(exc)
        return True

    def _fail(self, exc: CustosError) -> None:
        self.writer.write(error_of(exc))
        self.skipping = True
        if self.status == "T":
            self.status = "E"

    async def _simple(self, text: str) -> None:
        pieces = st.split(text)
        if not pieces:
            self.writer.write(m.empty_query_response())
        for piece in pieces:
            try:
                outcome = await self._run(st.classify(piece))
            except CustosError as exc:
                if isinstance(exc, ProtocolViolation):
                    raise
                self.writer.write(error_of(exc))
                if self.status == "T":
                    self.status = "E"
                break
            if outcome.columns is not None:
                self.writer.write(m.row_description(outcome.columns))
            self.writer.write(b"".join(outcome.notices))
            self.writer.write(b"".join(m.data_row(row) for row in outcome.rows))
            self.writer.write(m.command_complete(outcome.tag))
        self.writer.write(m.ready_for_query(self.status))
        await self._flush()

    async def _parse(self, body: bytes) -> None:
        parse = m.parse_parse(body)
        if len(st.split(parse.query)) > 1:
            raise InvalidInput("cannot insert multiple commands into a prepared statement")
        self._keep(self.prepared, parse.statement, _Prepared(parse.query, parse.parameter_types))
        self.writer.write(m.PARSE_COMPLETE)

    async def _bind(self, body: bytes) -> None:
        bind = m.parse_bind(body)
        prepared = self.prepared.get(bind.statement)
        if prepared is None:
            raise InvalidInput(f"prepared statement {bind.statement[:64]!r} does not exist")
        if 1 in bind.result_formats:
            raise InvalidInput("the custos SQL front sends results as text only")
        values = [
            st.parameter_sql(
                value,
                prepared.types[i] if i < len(prepared.types) else 0,
                binary=bind.format_of(i) == 1,
            )
            for i, value in enumerate(bind.parameters)
        ]
        wanted = st.parameter_count(prepared.query)
        if wanted != len(values):
            raise InvalidInput(f"the statement takes {wanted} parameters, {len(values)} were bound")
        statement = st.classify(st.bind(prepared.query, values))
        self._keep(self.portals, bind.portal, _Portal(statement))
        self.writer.write(m.BIND_COMPLETE)

    async def _describe(self, body: bytes) -> None:
        target = m.parse_target(body, "Describe")
        if target.kind == "S":
            prepared = self.prepared.get(target.name)
            if prepared is None:
                raise InvalidInput(f"prepared statement {target.name[:64]!r} does not exist")
            count = max(len(prepared.types), st.parameter_count(prepared.query))
            self.writer.write(m.parameter_description(count))
            # The columns of a guarded query are known only once it has been decided, which
            # needs its parameters: described at Bind (portal) time instead.
            self.writer.write(m.NO_DATA)
            return
        portal = self._portal(target.name)
        if _returns_rows(portal.statement):
            if portal.outcome is None:
                portal.outcome = await self._run(portal.statement)
            if portal.outcome.columns is not None:
                self.writer.write(m.row_description(portal.outcome.columns))
                return
        self.writer.write(m.NO_DATA)

    async def _execute(self, body: bytes) -> None:
        execute = m.parse_execute(body)
        portal = self._portal(execute.portal)
        if portal.outcome is None:
            portal.outcome = await self._run(portal.statement)
        outcome = portal.outcome
        self.writer.write(b"".join(outcome.notices))
        outcome.notices = []
        end = len(outcome.rows)
        if execute.max_rows:
            end = min(end, portal.sent + execute.max_rows)
        self.writer.write(b"".join(m.data_row(row) for row in outcome.rows[portal.sent : end]))
        portal.sent = end
        if end < len(outcome.rows):
            self.writer.write(m.PORTAL_SUSPENDED)
        elif isinstance(portal.statement, st.Empty):
            self.writer.write(m.empty_query_response())
        else:
            self.writer.write(m.command_complete(outcome.tag))

    async def _close(self, body: bytes) -> None:
        target = m.parse_target(body, "Close")
        (self.prepared if target.kind == "S" else self.portals).pop(target.name, None)
        self.writer.write(m.CLOSE_COMPLETE)

    _extended: ClassVar[Mapping[bytes, Callable[[_Connection, bytes], Awaitable[None]]]] = {
        b"P": _parse,
        b"B": _bind,
        b"D": _describe,
        b"E": _execute,
        b"C": _close,
    }

    def _keep(self, store: dict[str, Any], name: str, value: Any) -> None:
        if name not in store and len(store) >= _MAX_NAMED:
            raise InvalidInput(f"more than {_MAX_NAMED} prepared statements or portals")
        store[name] = value

    def _portal(self, name: str) -> _Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise InvalidInput(f"portal {name[:64]!r} does not exist")
        return portal

    # --- statements -------------------------------------------------------------------------

    async def _run(self, statement: st.Statement) -> _Outcome:
        """Answer one statement. Raises :class:`CustosError` (answered as an ErrorResponse)."""
        if self.status == "E" and not (
            isinstance(statement, st.Transaction) and statement.tag in ("COMMIT", "ROLLBACK")
        ):
            raise TransactionAborted(
                "current transaction is aborted, commands ignored until end of transaction block"
            )
        match statement:
            case st.Empty():
                return _Outcome("")
            case st.Transaction(tag=tag):
                return self._transaction(tag)
            case st.SetParameter(name=name, value=value):
                return self._set(name, value)
            case st.Show(name=name):
                return self._show(name)
            case st.Version():
                return _Outcome("SELECT 1", ["version"], [[st.VERSION_TEXT]])
            case st.Deallocate(name=name):
                if name is None:
                    self.prepared.clear()
                else:
                    self.prepared.pop(name, None)
                return _Outcome("DEALLOCATE")
            case st.Catalog(what=what):
                raise InvalidInput(
                    f"custos does not answer catalog queries ({what[:64]}): the tables you may "
                    f"query are those the data map (sources.yaml) names for source "
                    f"{self.source[:64]!r}",
                    hint="ask your custos administrator for the data map",
                )
            case st.Guarded(sql=sql):
                return await self._guarded(sql)
        raise AssertionError(statement)  # pragma: no cover - the match is exhaustive

    def _transaction(self, tag: str) -> _Outcome:
        if tag == "BEGIN":
            self.status = "T"
        elif tag in ("COMMIT", "ROLLBACK"):
            if self.status == "E":
                tag = "ROLLBACK"
            self.status = "I"
        return _Outcome(tag)

    def _set(self, name: str, value: str | None) -> _Outcome:
        if name == "all":
            self.session = {**st.SETTABLE, "client_encoding": self.session["client_encoding"]}
            return _Outcome("RESET")
        kept = st.check_setting(name, st.SETTABLE.get(name, "") if value is None else value)
        self.session[name] = kept
        outcome = _Outcome("SET")
        if name in st.REPORTED:
            outcome.notices.append(m.parameter_status(st.REPORTED[name], kept))
        return outcome

    def _show(self, name: str) -> _Outcome:
        known = {**st.FIXED, **self.session}
        if name == "all":
            rows: list[list[str | None]] = [[k, v, ""] for k, v in sorted(known.items())]
            return _Outcome(f"SHOW {len(rows)}", ["name", "setting", "description"], rows)
        if name not in known:
            raise UnknownSetting(f'unrecognized configuration parameter "{name[:64]}"')
        return _Outcome("SHOW", [name], [[known[name]]])

    async def _guarded(self, sql: str) -> _Outcome:
        purpose = self.session.get("custos.purpose", "").strip()
        if not purpose:
            raise Forbidden(
                "no purpose given: every query names why it is run",
                hint="connect with options='-c custos.purpose=support -c custos.ticket=T-1' "
                "(or PGOPTIONS), or run SET custos.purpose = 'support' and "
                "SET custos.ticket = 'T-1' first",
            )
        request = QueryRequest(
            principal=self.principal,
            source=self.source,
            sql=sql,
            purpose=purpose,
            ticket=self.session.get("custos.ticket", "").strip() or None,
            reason=self.session.get("custos.reason", "").strip() or None,
        )
        result = await asyncio.to_thread(
            self.front.queries.query, request, source_tag=f"wire:{self.credential}"
        )
        return _outcome_of(result)


def _returns_rows(statement: st.Statement) -> bool:
    return isinstance(statement, st.Guarded | st.Show | st.Version)


def _outcome_of(result: QueryResult) -> _Outcome:
    """Rows as text, and notices saying how precise each column is and where it is logged."""
    columns = [c.name for c in result.columns]
    rows = [[text_value(v) for v in row] for row in result.rows]
    outcome = _Outcome(f"SELECT {len(rows)}", columns, rows)
    shown = [
        f"{c.name}: {c.precision or 'plain'}" + (f" ({c.category})" if c.category else "")
        for c in result.columns
    ]
    where = f"; release logged at ledger index {result.release_index}"
    outcome.notices.append(
        m.notice_response(
            "custos: " + ", ".join(shown) + (where if result.release_index is not None else "")
        )
    )
    if result.truncated:
        outcome.notices.append(
            m.notice_response(
                f"custos: only the first {len(rows)} rows were returned ([sql] row_cap)",
                severity="WARNING",
                code="01000",
            )
        )
    return outcome


def token_authenticator(accounts: Any) -> Authenticate:
    """Checks a password as a custos API token (``Accounts.verify_token``): a live token
    with the ``tool`` role and a principal, which is who the connection acts as (the user
    name a client sends is not trusted). Raises :class:`AuthenticationFailed` and
    :class:`Forbidden`."""

    def check(password: str) -> Identity:
        token = accounts.verify_token(password.strip())
        if "tool" not in token.roles or not token.principal:
            raise Forbidden(
                "this token may not query: it needs the tool role and a principal",
                hint="create one with: custos tokens create --name … --role tool --principal <id>",
            )
        return Identity(token.principal, token.id)

    return check
