"""What the SQL front makes of a statement before anything reaches the guarded path.

A small lexer that knows PostgreSQL's quoting (strings, E-strings, quoted identifiers,
dollar quotes, nested block comments) lets the front split a simple query into statements,
substitute extended-protocol parameters as literals, and recognise the few statements it
answers itself: transaction control (custos is read-only: a no-op), ``SET``/``RESET``/``SHOW``
of session parameters (``custos.purpose``, ``custos.ticket``, ``custos.reason`` and the ones
drivers set), ``SELECT version()`` and ``DEALLOCATE``. Catalog probes are refused here with a
clear message; every other statement goes to ``Custos.query``, whose analyzer alone decides
what it is. The lexer only routes: it never decides what data may leave.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from custos.errors import InvalidInput, UnknownSetting

SERVER_VERSION = "15.0"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (custos guarded SQL front; read-only)"

#: Session parameters a client may SET (or give with ``-c`` in ``options``), with defaults.
SETTABLE: Mapping[str, str] = {
    "custos.purpose": "",
    "custos.ticket": "",
    "custos.reason": "",
    "application_name": "",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "intervalstyle": "postgres",
    "extra_float_digits": "1",
    "search_path": '"$user", public',
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "standard_conforming_strings": "on",
    "bytea_output": "hex",
    "client_min_messages": "notice",
    "default_transaction_read_only": "on",
    "transaction_read_only": "on",
    "jit": "off",
}
#: Fixed facts a client may SHOW; reported as ParameterStatus at startup where PostgreSQL
#: does (``REPORTED``).
FIXED: Mapping[str, str] = {
    "server_version": SERVER_VERSION,
    "server_version_num": "150000",
    "server_encoding": "UTF8",
    "integer_datetimes": "on",
    "is_superuser": "off",
    "transaction_isolation": "read committed",
    "max_identifier_length": "63",
    "lc_collate": "C",
    "lc_ctype": "C",
}
#: Shown in ParameterStatus messages (PostgreSQL's GUC_REPORT set), by their usual spelling.
REPORTED: Mapping[str, str] = {
    "server_version": "server_version",
    "server_encoding": "server_encoding",
    "client_encoding": "client_encoding",
    "application_name": "application_name",
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "intervalstyle": "IntervalStyle",
    "integer_datetimes": "integer_datetimes",
    "standard_conforming_strings": "standard_conforming_strings",
    "is_superuser": "is_superuser",
    "default_transaction_read_only": "default_transaction_read_only",
}
#: Values a parameter must keep, as custos writes them (and why anything else is refused).
_ONLY: Mapping[str, tuple[frozenset[str], str]] = {
    "client_encoding": (
        frozenset({"utf8", "unicode", "utf-8"}),
        "custos speaks UTF8 only",
    ),
    "standard_conforming_strings": (frozenset({"on", "true", "1"}), "custos keeps it on"),
    "bytea_output": (frozenset({"hex"}), "custos sends hex"),
}


@dataclass(frozen=True)
class Token:
    kind: str  # space comment string ident word param semicolon other
    text: str


_WORD = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_PARAM = re.compile(r"\$[0-9]+")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


def tokens(text: str) -> Iterator[Token]:
    """``text`` as tokens whose texts, joined, are ``text`` exactly. Never raises: an
    unterminated string, identifier or comment runs to the end of the text."""
    at, n = 0, len(text)
    while at < n:
        kind, end = _token_at(text, at)
        yield Token(kind, text[at:end])
        at = end


def _token_at(text: str, at: int) -> tuple[str, int]:
    n = len(text)
    ch = text[at]
    if ch.isspace():
        end = at + 1
        while end < n and text[end].isspace():
            end += 1
        return "space", end
    if text.startswith("--", at):
        end = text.find("\n", at)
        return "comment", n if end < 0 else end + 1
    if text.startswith("/*", at):
        depth, end = 1, at + 2
        while end < n and depth:
            if text.startswith("/*", end):
                depth, end = depth + 1, end + 2
            elif text.startswith("*/", end):
                depth, end = depth - 1, end + 2
            else:
                end += 1
        return "comment", end
    if ch in "eE" and text.startswith("'", at + 1):
        return "string", _quoted(text, at + 1, "'", backslash=True)
    if ch == "'":
        return "string", _quoted(text, at, "'", backslash=False)
    if ch == '"':
        return "ident", _quoted(text, at, '"', backslash=False)
    if ch == "$":
        if (param := _PARAM.match(text, at)) is not None:
            return "param", param.end()
        if (tag := _DOLLAR_TAG.match(text, at)) is not None:
            close = text.find(tag.group(), tag.end())
            return "string", n if close < 0 else close + len(tag.group())
        return "other", at + 1
    if ch == ";":
        return "semicolon", at + 1
    if (word := _WORD.match(text, at)) is not None:
        return "word", word.end()
    if (number := _NUMBER.match(text, at)) is not None:
        return "other", number.end()
    return "other", at + 1


def _quoted(text: str, at: int, quote: str, *, backslash: bool) -> int:
    """The end of the quoted run opening at ``at`` (a doubled quote stays inside)."""
    end, n = at + 1, len(text)
    while end < n:
        ch = text[end]
        if backslash and ch == "\\":
            end += 2
        elif ch == quote:
            if text.startswith(quote, end + 1):
                end += 2
            else:
                return end + 1
        else:
            end += 1
    return n


def split(text: str) -> list[str]:
    """The statements of a simple query: ``text`` cut at top-level semicolons, each piece
    stripped; empty pieces (``;;``, trailing comments) left out. Never raises."""
    pieces: list[str] = []
    current: list[str] = []
    for token in tokens(text):
        if token.kind == "semicolon":
            pieces.append("".join(current))
            current = []
        else:
            current.append(token.text)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if _meaningful(p)]


def _meaningful(text: str) -> bool:
    return any(t.kind not in ("space", "comment") for t in tokens(text))


def _words(text: str) -> list[Token]:
    return [t for t in tokens(text) if t.kind not in ("space", "comment")]


# --- extended-protocol parameters -----------------------------------------------------------

_NUMERIC_OIDS = {20, 21, 23, 26, 700, 701, 1700}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def literal(text: str) -> str:
    """``text`` as a standard SQL string literal (quotes doubled). Raises
    :class:`InvalidInput` for a NUL or a backslash (an analyzer reading backslash escapes
    would see another string than PostgreSQL does: refused rather than guessed)."""
    if "\x00" in text or "\\" in text:
        raise InvalidInput("a parameter holds a NUL or a backslash, which the SQL front refuses")
    return "'" + text.replace("'", "''") + "'"


def parameter_sql(value: bytes | None, type_oid: int, binary: bool) -> str:
    """One bound parameter as SQL text: NULL, a number, or a string literal.

    Text-format values of numeric types must look like numbers; binary values are taken
    only for integer, float and boolean types. Raises :class:`InvalidInput` (never echoing
    the value) for anything else.
    """
    if value is None:
        return "NULL"
    if binary:
        return _binary_parameter(value, type_oid)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("a text parameter is not UTF-8") from None
    if type_oid in _NUMERIC_OIDS:
        if not _DECIMAL.fullmatch(text):
            raise InvalidInput("a numeric parameter does not hold a number")
        return text
    if type_oid == 16:
        return "TRUE" if text.lower() in ("t", "true", "1", "on", "yes") else "FALSE"
    return literal(text)


_BINARY = {20: "!q", 21: "!h", 23: "!i", 26: "!I", 700: "!f", 701: "!d"}


def _binary_parameter(value: bytes, type_oid: int) -> str:
    if type_oid == 16 and len(value) == 1:
        return "TRUE" if value != b"\x00" else "FALSE"
    layout = _BINARY.get(type_oid)
    if layout is None or struct.calcsize(layout) != len(value):
        raise InvalidInput(
            "a binary parameter of a type the SQL front does not read; send it as text"
        )
    number = struct.unpack(layout, value)[0]
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidInput("a floating-point parameter is not a finite number")
    return repr(number)


def bind(query: str, parameters: Sequence[str]) -> str:
    """``query`` with each ``$n`` outside quotes and comments replaced by ``parameters[n-1]``
    (SQL text from :func:`parameter_sql`). Raises :class:`InvalidInput` for a ``$n`` with
    no parameter."""
    out: list[str] = []
    for token in tokens(query):
        if token.kind == "param":
            index = int(token.text[1:])
            if not 1 <= index <= len(parameters):
                raise InvalidInput(
                    f"the query uses {token.text[:12]} but {len(parameters)} parameters were bound"
                )
            out.append(parameters[index - 1])
        else:
            out.append(token.text)
    return "".join(out)


def parameter_count(query: str) -> int:
    """The highest ``$n`` the query uses (0 for none)."""
    return max((int(t.text[1:]) for t in tokens(query) if t.kind == "param"), default=0)


# --- what a statement is --------------------------------------------------------------------


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True)
class Transaction:
    """``BEGIN``/``COMMIT``/``ROLLBACK`` and kin: ``tag`` is the command tag to answer."""

    tag: str


@dataclass(frozen=True)
class SetParameter:
    """``SET name = value`` (``value`` None: back to the default, as ``RESET`` does)."""

    name: str
    value: str | None


@dataclass(frozen=True)
class Show:
    name: str  # lower case; "all" for SHOW ALL


@dataclass(frozen=True)
class Version:
    pass


@dataclass(frozen=True)
class Deallocate:
    name: str | None  # None: ALL


@dataclass(frozen=True)
class Catalog:
    """A probe of PostgreSQL's catalogs, which custos does not emulate."""

    what: str


@dataclass(frozen=True)
class Guarded:
    """Anything else: for ``Custos.query`` to analyse, decide and run."""

    sql: str


Statement = Empty | Transaction | SetParameter | Show | Version | Deallocate | Catalog | Guarded

_TRANSACTIONS = {
    "begin": "BEGIN",
    "start": "BEGIN",
    "commit": "COMMIT",
    "end": "COMMIT",
    "rollback": "ROLLBACK",
    "abort": "ROLLBACK",
}
_VERSION_PROBES = (
    ["select", "version", "(", ")"],
    ["select", "pg_catalog", ".", "version", "(", ")"],
)
_CATALOG_PREFIXES = ("pg_", "information_schema")
_CATALOG_FUNCTIONS = {
    "current_schema",
    "current_schemas",
    "current_database",
    "current_catalog",
    "current_user",
    "session_user",
    "has_table_privilege",
    "format_type",
    "obj_description",
    "col_description",
    "to_regclass",
}


def classify(sql: str) -> Statement:
    """What one statement (from :func:`split`, or a Parse message) is. Raises
    :class:`InvalidInput` for a malformed ``SET``/``SHOW``/``RESET``, naming the part."""
    words = _words(sql)
    if not words:
        return Empty()
    head = words[0].text.lower() if words[0].kind == "word" else ""
    if head in _TRANSACTIONS and _is_transaction(head, words):
        return Transaction(_TRANSACTIONS[head])
    if head == "set":
        return _set(words[1:])
    if head == "reset":
        return _reset(words[1:])
    if head == "show":
        return _show(words[1:])
    if head == "deallocate":
        rest = [t for t in words[1:] if t.text.lower() != "prepare"]
        if len(rest) != 1 or rest[0].kind not in ("word", "ident"):
            raise InvalidInput("DEALLOCATE takes one statement name or ALL")
        name = _name(rest[0])
        return Deallocate(None if rest[0].kind == "word" and name == "all" else name)
    lowered = [t.text.lower() for t in words]
    if lowered in _VERSION_PROBES:
        return Version()
    for token, text in zip(words, lowered, strict=True):
        name = _name(token).lower() if token.kind in ("word", "ident") else ""
        if name.startswith(_CATALOG_PREFIXES) or (
            token.kind == "word" and text in _CATALOG_FUNCTIONS
        ):
            return Catalog(name)
    return Guarded(sql)


def _is_transaction(head: str, words: list[Token]) -> bool:
    rest = [t.text.lower() for t in words[1:]]
    if head == "start":
        return rest[:1] == ["transaction"]
    # BEGIN [WORK|TRANSACTION] [modes]; COMMIT/ROLLBACK [WORK|TRANSACTION] [AND [NO] CHAIN]
    return all(t.isidentifier() or t == "," for t in rest)


def _is(token: Token, word: str) -> bool:
    return token.kind == "word" and token.text.lower() == word


def _name(token: Token) -> str:
    if token.kind == "ident":
        return token.text[1:-1].replace('""', '"')
    return token.text.lower()


def _parameter_name(words: list[Token], where: str) -> tuple[str, list[Token]]:
    """A possibly dotted parameter name (``custos.purpose``) and the tokens after it."""
    if not words or words[0].kind not in ("word", "ident"):
        raise InvalidInput(f"{where}: expected a parameter name")
    parts, rest = [_name(words[0])], words[1:]
    while len(rest) >= 2 and rest[0].text == "." and rest[1].kind in ("word", "ident"):
        parts.append(_name(rest[1]))
        rest = rest[2:]
    return ".".join(parts).lower(), rest


def _set(words: list[Token]) -> Statement:
    if words and words[0].text.lower() in ("session", "local"):
        if words[0].text.lower() == "session" and words[1:2] and _is(words[1], "characteristics"):
            return Transaction("SET")
        words = words[1:]
    if words and words[0].text.lower() == "transaction":
        return Transaction("SET")  # isolation and read-only modes: custos only ever reads
    if len(words) >= 2 and [w.text.lower() for w in words[:2]] == ["time", "zone"]:
        return SetParameter("timezone", _value(words[2:], "SET TIME ZONE"))
    name, rest = _parameter_name(words, "SET")
    if not rest or rest[0].text.lower() not in ("=", "to"):
        raise InvalidInput(f"SET {name[:64]}: expected = or TO after the name")
    return SetParameter(name, _value(rest[1:], f"SET {name[:64]}"))


def _value(words: list[Token], where: str) -> str | None:
    if not words:
        raise InvalidInput(f"{where}: expected a value")
    if len(words) == 1 and words[0].kind == "word" and words[0].text.lower() in ("default",):
        return None
    parts: list[str] = []
    for token in words:
        if token.kind == "string":
            if token.text[:1] in "eE$":
                raise InvalidInput(f"{where}: give the value as a plain 'quoted' string")
            parts.append(token.text[1:-1].replace("''", "'"))
        elif token.kind in ("word", "ident", "other") and token.text not in ("(", ")"):
            parts.append(_name(token) if token.kind == "ident" else token.text)
        else:
            raise InvalidInput(f"{where}: the value is not a string, name or number")
    value = "".join(p if p != "," else ", " for p in parts)
    return value


def _reset(words: list[Token]) -> Statement:
    if len(words) == 1 and words[0].text.lower() == "all":
        return SetParameter("all", None)
    name, rest = _parameter_name(words, "RESET")
    if rest:
        raise InvalidInput(f"RESET {name[:64]}: unexpected text after the name")
    return SetParameter(name, None)


def _show(words: list[Token]) -> Statement:
    if len(words) == 2 and [w.text.lower() for w in words] == ["time", "zone"]:
        return Show("timezone")
    if len(words) == 1 and words[0].text.lower() == "all":
        return Show("all")
    name, rest = _parameter_name(words, "SHOW")
    if rest:
        raise InvalidInput(f"SHOW {name[:64]}: unexpected text after the name")
    return Show(name)


def check_setting(name: str, value: str) -> str:
    """``value`` for parameter ``name`` as it will be kept. Raises :class:`InvalidInput`
    for a parameter custos does not know or a value it cannot honour."""
    if name not in SETTABLE:
        if name in FIXED:
            raise InvalidInput(f'parameter "{name}" cannot be changed')
        raise UnknownSetting(f'unrecognized configuration parameter "{name[:64]}"')
    if len(value) > 1000:
        raise InvalidInput(f'the value of "{name}" is longer than 1000 characters')
    allowed = _ONLY.get(name)
    if allowed is not None and value.strip().lower() not in allowed[0]:
        raise InvalidInput(f'"{name}" cannot be changed: {allowed[1]}')
    if name == "client_encoding":
        return "UTF8"
    return value


# --- the options startup parameter (PGOPTIONS) -----------------------------------------------


def parse_options(options: str) -> dict[str, str]:
    """``-c name=value`` / ``--name=value`` pairs of a startup ``options`` string (PGOPTIONS:
    whitespace-separated, a backslash keeps the next character). Raises
    :class:`InvalidInput` for any other switch or a pair without ``=``."""
    words: list[str] = []
    current: list[str] | None = None
    escaped = False
    for ch in options:
        if escaped:
            current = (current or []) + [ch]
            escaped = False
        elif ch == "\\":
            escaped = True
            current = current or []
        elif ch.isspace():
            if current is not None:
                words.append("".join(current))
                current = None
        else:
            current = (current or []) + [ch]
    if escaped:
        raise InvalidInput("options: a backslash ends the text")
    if current is not None:
        words.append("".join(current))
    pairs: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if word == "-c":
            pair = next(it, None)
            if pair is None:
                raise InvalidInput("options: -c needs name=value")
        elif word.startswith(("-c", "--")):
            pair = word[2:]
        else:
            raise InvalidInput(
                f"options: only -c name=value and --name=value are understood, not {word[:32]!r}"
            )
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise InvalidInput(f"options: expected name=value, not {pair[:32]!r}")
        pairs[name.lower().replace("-", "_")] = value
    return pairs
