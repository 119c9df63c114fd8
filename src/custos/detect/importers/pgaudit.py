"""pgaudit entries of a PostgreSQL server log, as access events (docs/formats.md,
*Audit-log mapping*).

PostgreSQL writes its log as ``csvlog`` (one CSV record per entry; a statement's line breaks
stay inside its quoted field), ``jsonlog`` (one JSON object a line) or ``stderr`` (each entry
starts with ``log_line_prefix``; the lines of a multi-line message follow, each starting
with a tab). The format is recognised from the first entry. pgaudit's entries are messages
``AUDIT: <type>,<statement id>,<substatement id>,<class>,<command>,<object type>,<object
name>,<statement>,<parameters>[,<rows>]``, themselves CSV.

Each READ or WRITE entry on a mapped table by a mapped role becomes one access event per
subject its statement names (see :func:`custos.detect.importers.common.statement_subjects`).
A READ entry whose statement names no subject (a scan, a count, a ``COPY`` of the table)
becomes one bulk access (:mod:`custos.store.bulk`), by a mapped role or not: the actor is
then kept as the log names it. With ``pgaudit.log_rows = on`` the rows count comes along.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from custos.detect.importers.common import (
    ParametersNotLogged,
    ReadLog,
    Rejected,
    TableTarget,
    Unparsed,
    access_event,
    bulk_access,
    bulk_of_cached,
    event_id,
    statement_subjects_cached,
    subject_id,
)
from custos.detect.importers.mapping import LogMapping
from custos.errors import shown_id

#: PostgreSQL's default ``log_line_prefix``.
DEFAULT_PREFIX = "%m [%p] "
# csvlog's columns (PostgreSQL 13 has 23, 14 adds backend_type, 15 leader_pid and query_id).
_CSV_MIN_COLUMNS = 23
_TIME, _USER, _DATABASE, _PID, _SESSION, _LEVEL, _MESSAGE = 0, 1, 2, 3, 5, 11, 13
_LEVELS = (
    r"(?:DEBUG[1-5]|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC"
    r"|DETAIL|HINT|QUERY|CONTEXT|LOCATION|STATEMENT)"
)
_TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [^\s,]+)?"
_CSV_START = re.compile(rf"^{_TIMESTAMP},")
_OFFSET = re.compile(r"^([+-])(\d\d)(?::?(\d\d))?$")
_NOT_LOGGED = "<not logged>"
# A statement is one CSV field, and bulk INSERTs run long: the csv module's default limit
# (128 KiB) would refuse a real log. The limit is the process's; it is only ever raised.
csv.field_size_limit(max(csv.field_size_limit(), 64 * 2**20))
_PREVIOUS = "<previously logged>"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of the server log: where it starts, its physical lines and its fields."""

    line: int
    lines: tuple[int, ...]
    time: datetime
    user: str | None
    database: str | None
    pid: str
    session: str | None
    level: str
    message: str


class _BadEntry(ValueError):
    """An entry that cannot be read; the message says which field, never its content."""


def parse_time(text: str) -> datetime:
    """A log time (``%m``/``%t``: ``2026-01-05 10:03:00.123 UTC``, or ``%n``, seconds since
    the epoch) as an aware UTC time. Raises :class:`ValueError` for any other text or an
    unknown zone."""
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    date_part, _, rest = text.partition(" ")
    clock, _, zone = rest.partition(" ")
    moment = datetime.fromisoformat(f"{date_part}T{clock}")
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    offset = _OFFSET.match(zone)
    if zone in ("", "UTC", "GMT", "Z"):
        return moment.replace(tzinfo=UTC)
    if offset:
        sign = -1 if offset.group(1) == "-" else 1
        delta = timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3) or 0))
        return moment.replace(tzinfo=timezone(sign * delta)).astimezone(UTC)
    try:
        return moment.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"time zone {shown_id(zone)} not known (set log_timezone = 'UTC')"
        ) from None


def _time(text: str) -> datetime:
    try:
        return parse_time(text)
    except (ValueError, OverflowError, OSError) as exc:
        detail = str(exc) if "time zone" in str(exc) else "not a log time"
        raise _BadEntry(f"field 'time': {detail}") from None


# log_line_prefix escapes, as regular expressions (named where the importer needs the value).
_ESCAPES: dict[str, str] = {
    "m": r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [^\s]+)",
    "t": r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [^\s]+)",
    "n": r"(?P<time>\d+\.\d+)",
    "p": r"(?P<pid>\d+)",
    "c": r"(?P<session>[0-9a-f]+\.[0-9a-f]+)",
    "u": r"(?P<user>.*?)",
    "d": r"(?P<database>.*?)",
    "l": r"\d+",
    "e": r"[0-9A-Z]{5}",
    "Q": r"-?\d+",
    "P": r"\d*",
    "s": r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [^\s]+",
    "%": "%",
}


def prefix_pattern(prefix: str) -> re.Pattern[str]:
    """A regular expression matching a log line that starts with ``prefix`` (PostgreSQL's
    ``log_line_prefix``), capturing ``time``, ``pid``, ``session``, ``user``, ``database``
    where the prefix has them, then ``level`` and ``message``. After ``%q`` everything is
    optional (PostgreSQL leaves it out for processes without a session)."""
    parts: list[str] = []
    seen: set[str] = set()
    optional = False
    i = 0
    while i < len(prefix):
        char = prefix[i]
        if char != "%" or i + 1 >= len(prefix):
            parts.append(re.escape(char))
            i += 1
            continue
        found = re.match(r"%-?\d*(.)", prefix[i:])
        letter = found.group(1) if found else prefix[i + 1]
        i += len(found.group(0)) if found else 2
        if letter == "q":
            parts.append("(?:")
            optional = True
            continue
        pattern = _ESCAPES.get(letter, r".*?")
        name = re.match(r"\(\?P<(\w+)>", pattern)
        if name and name.group(1) in seen:
            pattern = re.sub(r"^\(\?P<\w+>", "(?:", pattern)
        elif name:
            seen.add(name.group(1))
        # Padding (%-10u) adds spaces around a value.
        parts.append(rf"\s*{pattern}\s*" if found and found.group(0)[1:-1] else pattern)
    if optional:
        parts.append(")?")
    return re.compile(rf"^{''.join(parts)}(?P<level>{_LEVELS}):  (?P<message>.*)$", re.S)


def _csv_entries(lines: Sequence[str]) -> Iterator[LogEntry | Rejected]:
    reader = csv.reader((line + "\n" for line in lines), strict=True)
    last = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:
            span = tuple(range(last + 1, max(reader.line_num, last + 1) + 1))
            last = reader.line_num
            yield Rejected(span, f"line {span[0]}: not a csvlog record (bad quoting)")
            continue
        span = tuple(range(last + 1, reader.line_num + 1))
        last = reader.line_num
        if not row or row == [""]:
            continue
        if len(row) < _CSV_MIN_COLUMNS:
            yield Rejected(span, f"line {span[0]}: {len(row)} columns, not a csvlog record")
            continue
        try:
            yield LogEntry(
                line=span[0],
                lines=span,
                time=_time(row[_TIME]),
                user=row[_USER] or None,
                database=row[_DATABASE] or None,
                pid=row[_PID],
                session=row[_SESSION] or None,
                level=row[_LEVEL],
                message=row[_MESSAGE],
            )
        except _BadEntry as exc:
            yield Rejected(span, f"line {span[0]}: {exc}")


def _json_entries(lines: Sequence[str]) -> Iterator[LogEntry | Rejected]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            yield Rejected((number,), f"line {number}: not valid JSON")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("timestamp"), str):
            yield Rejected((number,), f"line {number}: field 'timestamp': missing")
            continue
        try:
            texts = {
                k: (str(data[k]) if data.get(k) is not None else None)
                for k in ("user", "dbname", "pid", "session_id", "error_severity", "message")
            }
            yield LogEntry(
                line=number,
                lines=(number,),
                time=_time(data["timestamp"]),
                user=texts["user"],
                database=texts["dbname"],
                pid=texts["pid"] or "",
                session=texts["session_id"],
                level=texts["error_severity"] or "",
                message=texts["message"] or "",
            )
        except _BadEntry as exc:
            yield Rejected((number,), f"line {number}: {exc}")


def _stderr_entries(lines: Sequence[str], prefix: str) -> Iterator[LogEntry | Rejected]:
    pattern = prefix_pattern(prefix)
    current: tuple[int, list[int], re.Match[str], list[str]] | None = None

    def finish() -> LogEntry | Rejected | None:
        if current is None:
            return None
        start, span, found, message = current
        groups = found.groupdict()
        if groups.get("time") is None:
            return Rejected(
                tuple(span), f"line {start}: the line prefix has no time (%m, %t or %n)"
            )
        try:
            return LogEntry(
                line=start,
                lines=tuple(span),
                time=_time(groups["time"]),
                user=groups.get("user") or None,
                database=groups.get("database") or None,
                pid=groups.get("pid") or "",
                session=groups.get("session") or None,
                level=groups["level"],
                message="\n".join(message),
            )
        except _BadEntry as exc:
            return Rejected(tuple(span), f"line {start}: {exc}")

    for number, line in enumerate(lines, start=1):
        if line.startswith("\t") and current is not None:
            current[1].append(number)
            current[3].append(line[1:])
            continue
        if not line.strip():
            continue
        found = pattern.match(line)
        if found is None:
            done = finish()
            current = None
            if done is not None:
                yield done
            yield Rejected(
                (number,), f"line {number}: does not start with the log line prefix {prefix!r}"
            )
            continue
        done = finish()
        if done is not None:
            yield done
        current = (number, [number], found, [found.group("message")])
    done = finish()
    if done is not None:
        yield done


def log_entries(lines: Sequence[str], prefix: str | None = None) -> Iterator[LogEntry | Rejected]:
    """The entries of a server log (csvlog, jsonlog or stderr with ``prefix``, PostgreSQL's
    default when None), recognised from its first non-blank line; records that cannot be
    read come as :class:`Rejected`."""
    first = next((line for line in lines if line.strip()), "")
    if first.startswith("{"):
        return _json_entries(lines)
    if _CSV_START.match(first) and not prefix_pattern(prefix or DEFAULT_PREFIX).match(first):
        return _csv_entries(lines)
    return _stderr_entries(lines, prefix or DEFAULT_PREFIX)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """pgaudit's fields of one ``AUDIT:`` message."""

    kind: str
    statement_id: str
    substatement_id: str
    audit_class: str
    command: str
    object_type: str
    object_name: str
    statement: str
    parameters: str
    #: The rows count (``pgaudit.log_rows = on``), or "" when the log has none.
    rows: str = ""


def parse_audit(message: str) -> AuditEntry | None:
    """pgaudit's fields of ``message``, or None when it is no ``AUDIT:`` message. Raises
    :class:`ValueError` for an ``AUDIT:`` message that is not pgaudit's CSV."""
    if not message.startswith("AUDIT: "):
        return None
    try:
        rows = list(csv.reader(io.StringIO(message[len("AUDIT: ") :], newline=""), strict=True))
    except csv.Error:
        raise ValueError("an AUDIT message that is not CSV") from None
    if len(rows) != 1 or len(rows[0]) not in (9, 10):
        raise ValueError("an AUDIT message without pgaudit's 9 fields")
    fields = rows[0]
    if fields[0] not in ("SESSION", "OBJECT") or not fields[1].isdigit() or not fields[2].isdigit():
        raise ValueError("an AUDIT message without pgaudit's type and statement ids")
    kind, statement_id, substatement_id, audit_class, command, object_type, name = fields[:7]
    return AuditEntry(
        kind,
        statement_id,
        substatement_id,
        audit_class,
        command,
        object_type,
        name,
        statement=fields[7],
        parameters=fields[8],
        rows=fields[9] if len(fields) == 10 else "",
    )


def _parameters(text: str) -> list[str] | None:
    if text == _NOT_LOGGED:
        return None
    if text in ("", "<none>"):
        return []
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _target(object_name: str) -> tuple[str, str]:
    schema, _, table = object_name.rpartition(".")
    return schema.lower(), table.lower()


def read_pgaudit(lines: Sequence[str], mapping: LogMapping) -> ReadLog:
    """Read a PostgreSQL log's pgaudit entries as access events, by ``mapping``.

    Never raises for the log's content: records that cannot be read are ``rejected``,
    entries that map to no access are ``unmapped`` (each with its line and reason)."""
    out = ReadLog()
    # pgaudit.log_statement_once logs a statement only with its first entry: the last
    # statement of each session is kept (statement ids grow within a session).
    # The entries of one statement (one per table and alias) are one access each: their
    # events take the time of the statement's first entry (later ones may be a few
    # milliseconds later), so they get the same id.
    statements: dict[str, tuple[str, datetime, dict[str, tuple[str, str]]]] = {}
    for item in log_entries(lines, mapping.log_line_prefix):
        out.records += 1
        if isinstance(item, Rejected):
            out.rejected.append(item)
            continue
        try:
            audit = parse_audit(item.message)
        except ValueError as exc:
            out.rejected.append(Rejected(item.lines, f"line {item.line}: {exc}"))
            continue
        if audit is None:
            continue
        out.entries += 1
        session = item.session or item.pid
        current, began, parts = statements.get(session, ("", item.time, {}))
        if current != audit.statement_id:
            began, parts = item.time, {}
            statements[session] = (audit.statement_id, began, parts)
        statement, parameters = audit.statement, audit.parameters
        if statement == _PREVIOUS or parameters == _PREVIOUS:
            statement, parameters = parts.get(audit.substatement_id, ("", _NOT_LOGGED))
        else:
            parts[audit.substatement_id] = (statement, parameters)
        _map_entry(out, mapping, item, began, audit, statement, _parameters(parameters))
    return out


def _rows(audit: AuditEntry) -> int | None:
    # A count that is not a plain number (never seen from pgaudit) is left out, not guessed.
    text = audit.rows.strip()
    return int(text) if text.isdigit() and len(text) < 19 else None


def _map_entry(
    out: ReadLog,
    mapping: LogMapping,
    entry: LogEntry,
    began: datetime,
    audit: AuditEntry,
    statement: str,
    params: list[str] | None,
) -> None:
    line = entry.line
    if audit.audit_class not in ("READ", "WRITE"):
        out.skip(line, "not_access", f"class {audit.audit_class}")
        return
    if not audit.object_name:
        out.skip(line, "resource", "the entry names no table (set pgaudit.log_relation = on)")
        return
    principal = mapping.principal_for(role=entry.user) if entry.user else None
    schema, table = _target(audit.object_name)
    rule = mapping.table_for([audit.object_name, table])

    def unknown_role() -> None:
        who = shown_id(entry.user) if entry.user else "(none: add %u to log_line_prefix)"
        out.skip(line, "principal", f"role {who}")

    if rule is None:
        if principal is None:
            unknown_role()
        else:
            out.skip(line, "resource", f"table {shown_id(audit.object_name)}")
        return
    target = TableTarget(schema, table)
    values: set[str] | None = None
    if rule.subject_column is not None:
        try:
            if not statement:
                raise Unparsed
            values = statement_subjects_cached(
                statement, "postgres", target, rule.subject_column, params
            )
        except Unparsed:
            if principal is None:
                unknown_role()
                return
            out.skip(line, "subject", "the statement was not logged or could not be parsed")
            return
        except ParametersNotLogged:
            if principal is None:
                unknown_role()
                return
            out.skip(line, "subject", "named by a parameter, and pgaudit.log_parameter is off")
            return
    if not values:
        # Not restricted to named subjects: one access to many people.
        if _bulk(out, mapping, entry, began, audit, statement, target, principal):
            return
        if principal is None:
            unknown_role()
            return
        if rule.subject_column is None:
            out.skip(line, "subject", f"the mapping names no subject column of {rule.table}")
            return
        out.skip(
            line,
            "subject",
            f"the statement is not restricted to named values of {rule.subject_column}",
        )
        return
    if principal is None:
        unknown_role()
        return
    action = "modify" if audit.audit_class == "WRITE" else "read"
    if audit.command == "COPY":
        action = "export" if audit.audit_class == "READ" else "modify"
    for value in sorted(values):
        subject = subject_id(rule.subject_prefix, value)
        if subject is None:
            out.skip(line, "subject", f"a value of {rule.subject_column} is not an id")
            continue
        key = _statement_key("pga", began, entry, audit, subject)
        extra = {
            "log_line": line,
            "log_principal": (entry.user or "")[:256],
            "object": audit.object_name[:256],
            "command": audit.command[:64],
        }
        if entry.database:
            extra["database"] = entry.database[:128]
        out.add(
            line,
            access_event(
                mapping,
                key=key,
                time=began,
                principal=principal,
                action=action,
                subject=subject,
                category=rule.category,
                decision="allow",
                precision=rule.precision,
                extra=extra,
            ),
        )


def _statement_key(
    prefix: str, began: datetime, entry: LogEntry, audit: AuditEntry, *more: str
) -> str:
    """The id of what one audited statement did to one object (and ``more``: the subject of
    a per-subject event): the same log entry read again gives the same id."""
    return event_id(
        prefix,
        began.isoformat(),
        entry.pid,
        entry.session,
        entry.user,
        entry.database,
        audit.statement_id,
        audit.substatement_id,
        audit.object_name,
        *more,
    )


def _bulk(
    out: ReadLog,
    mapping: LogMapping,
    entry: LogEntry,
    began: datetime,
    audit: AuditEntry,
    statement: str,
    target: TableTarget,
    principal: str | None,
) -> bool:
    """Keep a READ entry that names no subject as a bulk access; False (nothing kept) for
    a write, an entry without a role, or a statement that cannot be parsed."""
    rule = mapping.table_for([audit.object_name, target.table])
    if audit.audit_class != "READ" or rule is None or not entry.user or not statement:
        return False
    found = bulk_of_cached(statement, "postgres", target)
    if found is None:
        return False
    scope, shape, digest = found
    key = _statement_key("pgb", began, entry, audit)
    out.add_bulk(
        bulk_access(
            mapping,
            key=key,
            time=began,
            principal=principal,
            actor=entry.user,
            action="export" if audit.command == "COPY" or scope.export else "read",
            decision="allow",
            obj=audit.object_name,
            category=rule.category,
            precision=rule.precision,
            scope=scope,
            rows=_rows(audit),
            shape=shape,
            digest=digest,
            command=audit.command,
            line=entry.line,
            database=entry.database,
        )
    )
    return True
