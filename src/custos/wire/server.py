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
for a cleartext password and, having no TLS of its own, listens on loopback by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
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
    TransactionAborted,
    UnknownSetting,
)
from custos.wire import messages as m
from custos.wire import statements as st
from custos.wire.guarded import GuardedQueries

log = logging.getLogger("custos.wire")

_STARTUP_CAP = 10_000  # PostgreSQL's own limit on a startup packet
_MAX_NAMED = 1_000  # prepared statements or portals one connection may hold
_FAILED_AUTH_DELAY = 1.0  # seconds before a wrong password is answered: slows guessing


@dataclass(frozen=True)
class WireSettings:
    """``[sql]`` keys of config.toml for the front: ``listen`` (address, default loopback),
    ``port``, ``max_connections``, ``max_message_bytes``, ``idle_timeout`` (seconds a client
    may stay silent) and ``auth_timeout`` (seconds to finish signing in)."""

    listen: str = "127.0.0.1"
    port: int = 5480
    max_connections: int = 64
    max_message_bytes: int = 1 << 20
    idle_timeout: float = 600.0
    auth_timeout: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WireSettings:
        """Read ``[sql]``. Raises :class:`ConfigurationError` for a mistyped key."""
        listen = settings.section("sql").get("listen", cls.listen)
        if not isinstance(listen, str) or not listen.strip():
            raise ConfigurationError(f"{settings.config_path}: [sql] listen must be an address")
        port = settings.whole("sql", "port", cls.port)
        if port > 65535:
            raise ConfigurationError(f"{settings.config_path}: [sql] port must be at most 65535")
        return cls(
            listen=listen.strip(),
            port=port,
            max_connections=settings.whole("sql", "max_connections", cls.max_connections),
            max_message_bytes=settings.whole("sql", "max_message_bytes", cls.max_message_bytes),
            idle_timeout=settings.number("sql", "idle_timeout", cls.idle_timeout),
            auth_timeout=settings.number("sql", "auth_timeout", cls.auth_timeout),
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


class SqlFront:
    """The wire front: accepts connections, authenticates, answers statements.

    ``queries`` is the guarded path (``Custos``), ``authenticate`` turns a token into the
    principal it acts as. :meth:`start` binds; :meth:`close` stops accepting and ends every
    connection. Malformed input ends only its own connection, with an ErrorResponse.
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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port bound (useful after ``port=0``)."""
        assert self._server is not None
        assert self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        """Bind and start accepting. Raises :class:`ConfigurationError` when the address
        cannot be bound (in use, not ours)."""
        try:
            self._server = await asyncio.start_server(
                self._accept, self.settings.listen, self.settings.port, limit=1 << 16
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {self.settings.listen}:{self.settings.port}: {exc.strerror}"
            ) from None

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.settings.max_connections:
            with contextlib.suppress(Exception):
                # Answered before reading anything: libpq shows it as the connection's error.
                writer.write(
                    m.error_response(
                        "53300", "too many connections to the custos SQL front", fatal=True
                    )
                )
                await writer.drain()
            writer.close()
            return
        self._connections.add(task)
        connection = _Connection(self, reader, writer)
        try:
            await connection.run()
        except (_Closed, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must end this connection, never the server
            log.exception("the SQL front dropped a connection after an unexpected error")
            with contextlib.suppress(Exception):
                writer.write(
                    m.error_response("XX000", "internal error in the custos SQL front", fatal=True)
                )
                await writer.drain()
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Connection:
    def __init__(
        self, front: SqlFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.front, self.reader, self.writer = front, reader, writer
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

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self._startup(), self.limits.auth_timeout)
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

    async def _startup(self) -> None:
        body = b""
        while True:
            head = await self.reader.readexactly(4)
            length = struct.unpack("!i", head)[0]
            if not 8 <= length <= _STARTUP_CAP:
                raise ProtocolViolation(f"a startup packet's length ({length}) is out of range")
            body = await self.reader.readexactly(length - 4)
            code = struct.unpack("!i", body[:4])[0]
            if code in (m.SSL_REQUEST, m.GSSENC_REQUEST) and length == 8:
                self.writer.write(b"N")  # no TLS here: loopback by default (see module doc)
                await self._flush()
                continue
            if code == m.CANCEL_REQUEST:
                raise _Closed  # nothing runs long enough here to be worth cancelling
            if code != m.PROTOCOL_3:
                raise ProtocolViolation(
                    f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
                    "the custos SQL front speaks 3.0"
                )
            break
        startup = m.parse_startup(body[4:])
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
