"""PostgreSQL wire protocol (v3) messages: reading what clients send, writing what servers say.

Pure functions over bytes, no I/O: the server feeds them whole messages (type byte and length
already split off and checked against the size cap) and writes what they return. Every parse
error is a :class:`ProtocolViolation` naming the message and the field, never the field's value.
Reference: the "Frontend/Backend Protocol" chapter of the PostgreSQL manual, "Message Formats".
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from custos.errors import ProtocolViolation

PROTOCOL_3 = 196608  # 3.0: major 3 in the high 16 bits
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

TEXT_OID = 25  # every column and parameter is described as text
NAMES_OF = {
    b"Q": "Query",
    b"P": "Parse",
    b"B": "Bind",
    b"D": "Describe",
    b"E": "Execute",
    b"C": "Close",
    b"S": "Sync",
    b"H": "Flush",
    b"X": "Terminate",
    b"p": "PasswordMessage",
}


class Reader:
    """A cursor over one message's body; every read names ``message`` when it runs short."""

    def __init__(self, body: bytes, message: str) -> None:
        self.body, self.message, self.at = body, message, 0

    def _take(self, n: int, what: str) -> bytes:
        if n < 0 or self.at + n > len(self.body):
            raise ProtocolViolation(f"{self.message} message ends inside its {what}")
        chunk = self.body[self.at : self.at + n]
        self.at += n
        return chunk

    def int16(self, what: str) -> int:
        value: int = struct.unpack("!h", self._take(2, what))[0]
        return value

    def int32(self, what: str) -> int:
        value: int = struct.unpack("!i", self._take(4, what))[0]
        return value

    def byte(self, what: str) -> bytes:
        return self._take(1, what)

    def raw(self, n: int, what: str) -> bytes:
        return self._take(n, what)

    def cstring(self, what: str) -> str:
        end = self.body.find(b"\x00", self.at)
        if end < 0:
            raise ProtocolViolation(f"{self.message} message: {what} is not NUL-terminated")
        chunk = self.body[self.at : end]
        self.at = end + 1
        try:
            return chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation(f"{self.message} message: {what} is not UTF-8") from None

    def count(self, what: str) -> int:
        """A non-negative int16 count (of parameters, formats…)."""
        n = self.int16(what)
        if n < 0:
            raise ProtocolViolation(f"{self.message} message: negative {what}")
        return n

    def end(self) -> None:
        if self.at != len(self.body):
            raise ProtocolViolation(f"{self.message} message has trailing bytes")


@dataclass(frozen=True)
class Startup:
    """A StartupMessage's parameters (``user``, ``database``, ``options``, …)."""

    parameters: dict[str, str]


def parse_startup(body: bytes) -> Startup:
    """The parameters of a protocol-3.0 StartupMessage body (after the version number).
    Raises :class:`ProtocolViolation` for a malformed or repeated parameter."""
    reader = Reader(body, "StartupMessage")
    parameters: dict[str, str] = {}
    while True:
        name = reader.cstring("parameter name")
        if not name:
            break
        value = reader.cstring(f"value of {name[:64]!r}")
        if name in parameters:
            raise ProtocolViolation(f"StartupMessage repeats the parameter {name[:64]!r}")
        parameters[name] = value
    reader.end()
    return Startup(parameters)


def parse_password(body: bytes) -> str:
    """The password of a PasswordMessage. Raises :class:`ProtocolViolation`."""
    reader = Reader(body, "PasswordMessage")
    password = reader.cstring("password")
    reader.end()
    return password


def parse_query(body: bytes) -> str:
    """The SQL text of a simple Query message. Raises :class:`ProtocolViolation`."""
    reader = Reader(body, "Query")
    text = reader.cstring("query string")
    reader.end()
    return text


@dataclass(frozen=True)
class Parse:
    statement: str
    query: str
    parameter_types: tuple[int, ...]


def parse_parse(body: bytes) -> Parse:
    """A Parse message. Raises :class:`ProtocolViolation`."""
    reader = Reader(body, "Parse")
    name = reader.cstring("statement name")
    query = reader.cstring("query string")
    types = tuple(reader.int32("parameter type") for _ in range(reader.count("parameter count")))
    reader.end()
    return Parse(name, query, types)


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    parameter_formats: tuple[int, ...]
    parameters: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def format_of(self, index: int) -> int:
        """The format code of parameter ``index`` (0 text, 1 binary), per the protocol's
        rule: none given means text, one given applies to all."""
        if not self.parameter_formats:
            return 0
        if len(self.parameter_formats) == 1:
            return self.parameter_formats[0]
        return self.parameter_formats[index]


def parse_bind(body: bytes) -> Bind:
    """A Bind message. Raises :class:`ProtocolViolation` (also for format codes other than
    0 and 1, or a format count that matches neither 0, 1 nor the parameter count)."""
    reader = Reader(body, "Bind")
    portal = reader.cstring("portal name")
    statement = reader.cstring("statement name")
    formats = tuple(reader.int16("parameter format") for _ in range(reader.count("format count")))
    values: list[bytes | None] = []
    for _ in range(reader.count("parameter count")):
        length = reader.int32("parameter length")
        if length < -1:
            raise ProtocolViolation("Bind message: negative parameter length")
        values.append(None if length == -1 else reader.raw(length, "parameter value"))
    results = tuple(reader.int16("result format") for _ in range(reader.count("result count")))
    reader.end()
    if any(f not in (0, 1) for f in (*formats, *results)):
        raise ProtocolViolation("Bind message: format codes must be 0 (text) or 1 (binary)")
    if len(formats) > 1 and len(formats) != len(values):
        raise ProtocolViolation("Bind message: parameter formats and parameters differ in number")
    return Bind(portal, statement, formats, tuple(values), results)


@dataclass(frozen=True)
class Target:
    """What a Describe or Close message names: ``kind`` "S" (statement) or "P" (portal)."""

    kind: str
    name: str


def parse_target(body: bytes, message: str) -> Target:
    """A Describe or Close message. Raises :class:`ProtocolViolation`."""
    reader = Reader(body, message)
    kind = reader.byte("kind").decode("latin-1")
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"{message} message: kind must be 'S' or 'P'")
    name = reader.cstring("name")
    reader.end()
    return Target(kind, name)


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int  # 0: all


def parse_execute(body: bytes) -> Execute:
    """An Execute message. Raises :class:`ProtocolViolation`."""
    reader = Reader(body, "Execute")
    portal = reader.cstring("portal name")
    max_rows = reader.int32("row limit")
    reader.end()
    return Execute(portal, max(0, max_rows))


# --- what the server writes -----------------------------------------------------------------


def message(kind: bytes, body: bytes = b"") -> bytes:
    """One backend message: type byte, length (itself included), body."""
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    # A NUL inside would end the field early and desynchronise the client: never send one.
    return text.replace("\x00", "").encode("utf-8") + b"\x00"


def authentication_ok() -> bytes:
    return message(b"R", struct.pack("!i", 0))


def authentication_cleartext() -> bytes:
    return message(b"R", struct.pack("!i", 3))


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", _cstr(name) + _cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!ii", pid, secret))


def ready_for_query(status: str) -> bytes:
    """``status``: "I" idle, "T" in a transaction block, "E" in a failed one."""
    return message(b"Z", status.encode("ascii"))


def row_description(names: Sequence[str]) -> bytes:
    """Every column as text (OID 25) in text format: custos hands out text, never binary."""
    body = struct.pack("!h", len(names))
    for name in names:
        body += _cstr(name) + struct.pack("!ihihih", 0, 0, TEXT_OID, -1, -1, 0)
    return message(b"T", body)


def data_row(values: Sequence[str | None]) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            raw = value.encode("utf-8")
            body += struct.pack("!i", len(raw)) + raw
    return message(b"D", body)


def command_complete(tag: str) -> bytes:
    return message(b"C", _cstr(tag))


def parameter_description(count: int) -> bytes:
    return message(b"t", struct.pack("!h", count) + struct.pack("!i", TEXT_OID) * count)


def empty_query_response() -> bytes:
    return message(b"I")


def _fields(severity: str, code: str, text: str, hint: str | None, detail: str | None) -> bytes:
    body = b"S" + _cstr(severity) + b"V" + _cstr(severity) + b"C" + _cstr(code)
    body += b"M" + _cstr(text)
    if detail:
        body += b"D" + _cstr(detail)
    if hint:
        body += b"H" + _cstr(hint)
    return body + b"\x00"


def error_response(
    code: str,
    text: str,
    *,
    hint: str | None = None,
    detail: str | None = None,
    fatal: bool = False,
) -> bytes:
    """An ErrorResponse: ``code`` a SQLSTATE, ``text`` the primary message."""
    return message(b"E", _fields("FATAL" if fatal else "ERROR", code, text, hint, detail))


def notice_response(text: str, *, code: str = "00000", severity: str = "NOTICE") -> bytes:
    return message(b"N", _fields(severity, code, text, None, None))


def join(parts: Iterable[bytes]) -> bytes:
    return b"".join(parts)


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")
NO_DATA = message(b"n")
PORTAL_SUSPENDED = message(b"s")
