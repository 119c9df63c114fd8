"""AWS CloudTrail records as access events (docs/formats.md, *Audit-log mapping*).

A log is either CloudTrail's file shape, one JSON document ``{"Records": [...]}`` (as
delivered to S3, pretty-printed or not), or JSON Lines of records or of such documents (as
CloudTrail Lake, Firehose or a SIEM exports them). Data events on S3 objects and DynamoDB
items, and Athena queries, become access events; everything else (``AssumeRole``, console
sign-ins, listings) is counted as not an access to data. A read of a mapped resource that
names no subject — a DynamoDB ``Scan`` or ``Query`` whose key the mapping's path does not
find, an S3 object that is no one person's (a whole export), an Athena query not restricted
to named subjects — is one access to many people: it becomes a bulk access
(:mod:`custos.store.bulk`), by a mapped principal or not (the ARN is then kept).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlglot import exp

from custos.detect.importers.common import (
    BulkScope,
    ReadLog,
    Rejected,
    access_event,
    bulk_access,
    bulk_scope,
    event_id,
    parse_statements,
    statement_shape,
    subject_id,
    subjects_of,
)
from custos.detect.importers.mapping import LogMapping, ResourceRule, TableRule
from custos.errors import shown_id
from custos.textfiles import strict_json

_S3, _DYNAMODB, _ATHENA = "s3.amazonaws.com", "dynamodb.amazonaws.com", "athena.amazonaws.com"
#: The calls that reach personal data, and the access each is.
DATA_CALLS: dict[tuple[str, str], str] = {
    (_S3, "GetObject"): "read",
    (_S3, "SelectObjectContent"): "read",
    (_S3, "PutObject"): "modify",
    (_S3, "DeleteObject"): "modify",
    (_DYNAMODB, "GetItem"): "read",
    (_DYNAMODB, "BatchGetItem"): "read",
    (_DYNAMODB, "Query"): "search",
    (_DYNAMODB, "Scan"): "search",
    (_DYNAMODB, "PutItem"): "modify",
    (_DYNAMODB, "UpdateItem"): "modify",
    (_DYNAMODB, "DeleteItem"): "modify",
    (_ATHENA, "StartQueryExecution"): "read",
}
#: The calls that read many people's items when they name no one (a bulk access).
BULK_CALLS = {
    (_S3, "GetObject"),
    (_S3, "SelectObjectContent"),
    (_DYNAMODB, "Query"),
    (_DYNAMODB, "Scan"),
    (_ATHENA, "StartQueryExecution"),
}
_REQUIRED = ("eventTime", "eventID", "eventName", "eventSource")
_DENIED = re.compile(r"AccessDenied|Unauthorized|Forbidden", re.I)


def _document_spans(text: str, count: int) -> list[tuple[int, ...]]:
    """The lines each of the ``count`` records of a ``{"Records": [...]}`` document spans
    (one line each, the first, when the document cannot be walked)."""
    decoder = json.JSONDecoder()
    found = re.search(r'"Records"\s*:\s*\[', text)
    spans: list[tuple[int, ...]] = []
    if found is not None:
        pos, line, counted = found.end(), 1, 0
        try:
            for _ in range(count):
                while text[pos] in " \t\r\n,":
                    pos += 1
                _, end = decoder.raw_decode(text, pos)
                line += text.count("\n", counted, pos)
                last = line + text.count("\n", pos, end)
                spans.append(tuple(range(line, last + 1)))
                line, counted, pos = last, end, end
        except (ValueError, IndexError, RecursionError):
            spans = []
    return spans if len(spans) == count else [(1,)] * count


def records(lines: Sequence[str]) -> Iterator[tuple[tuple[int, ...], Any] | Rejected]:
    """Each record of the log with the lines it spans, and what cannot be read as
    :class:`Rejected`."""
    text = "\n".join(lines)
    whole: Any = None
    if text.lstrip().startswith("{"):
        try:
            whole = strict_json(text)
        except (ValueError, RecursionError):
            whole = None  # not one document: JSON Lines
    if isinstance(whole, dict) and "Records" in whole:
        found = whole["Records"]
        if not isinstance(found, list):
            yield Rejected(tuple(range(1, len(lines) + 1)), "field 'Records': not a list")
            return
        yield from zip(_document_spans(text, len(found)), found, strict=True)
        return
    if isinstance(whole, dict):  # one record, over however many lines
        yield tuple(range(1, len(lines) + 1)), whole
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = strict_json(line)
        except (ValueError, RecursionError):
            yield Rejected((number,), f"line {number}: not valid JSON")
            continue
        if isinstance(data, dict) and isinstance(data.get("Records"), list):
            yield from (((number,), record) for record in data["Records"])
        else:
            yield (number,), data


def _time(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def read_cloudtrail(lines: Sequence[str], mapping: LogMapping) -> ReadLog:
    """Read CloudTrail records as access events, by ``mapping``.

    Never raises for the log's content: records that cannot be read (not JSON, not an
    object, without ``eventTime``, ``eventID``, ``eventName``, ``eventSource``) are
    ``rejected``, records that map to no access are ``unmapped`` (each with line and
    reason)."""
    out = ReadLog()
    for item in records(lines):
        out.records += 1
        if isinstance(item, Rejected):
            out.rejected.append(item)
            continue
        span, record = item
        line = span[0]
        if not isinstance(record, dict):
            out.rejected.append(Rejected(span, f"line {line}: a record must be a JSON object"))
            continue
        missing = next((k for k in _REQUIRED if not isinstance(record.get(k), str)), None)
        if missing is not None:
            out.rejected.append(Rejected(span, f"line {line}: field '{missing}': missing"))
            continue
        time = _time(record["eventTime"])
        if time is None:
            out.rejected.append(
                Rejected(span, f"line {line}: field 'eventTime': not a time with a zone")
            )
            continue
        out.entries += 1
        _map_record(out, mapping, line, time, record)
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _principal(mapping: LogMapping, identity: Mapping[str, Any]) -> str | None:
    arn, user_name = _text(identity.get("arn")), _text(identity.get("userName"))
    session = None
    # arn:aws:sts::<account>:assumed-role/<role>/<session name>
    if identity.get("type") == "AssumedRole" and arn and arn.count("/") >= 2:
        session = arn.split("/", 2)[2]
    return mapping.principal_for(arn=arn, user_name=user_name, session_name=session)


def _resource_rule(
    mapping: LogMapping, source: str, params: Mapping[str, Any], arns: Sequence[str]
) -> ResourceRule | None:
    bucket, key = _text(params.get("bucketName")), _text(params.get("key"))
    table = _text(params.get("tableName"))
    for rule in mapping.resources:
        if rule.s3 and source == _S3 and bucket and key and fnmatchcase(f"{bucket}/{key}", rule.s3):
            return rule
        if rule.dynamodb and source == _DYNAMODB and table and fnmatchcase(table, rule.dynamodb):
            return rule
        if rule.arn and any(fnmatchcase(arn, rule.arn) for arn in arns):
            return rule
    return None


def _named(record: Mapping[str, Any]) -> str:
    params = record.get("requestParameters")
    params = params if isinstance(params, dict) else {}
    name = (
        _text(params.get("tableName"))
        or "/".join(filter(None, (_text(params.get("bucketName")), _text(params.get("key")))))
        or "(no resource named)"
    )
    return shown_id(name)


def _map_record(
    out: ReadLog, mapping: LogMapping, line: int, time: datetime, record: dict[str, Any]
) -> None:
    source, name = record["eventSource"], record["eventName"]
    action = DATA_CALLS.get((source, name))
    if action is None:
        out.skip(line, "not_access", f"{shown_id(source)} {shown_id(name)}")
        return
    decision = "allow"
    error = record.get("errorCode")
    if error is not None:
        if not _DENIED.search(str(error)):
            out.skip(line, "not_access", f"the call failed ({shown_id(str(error))})")
            return
        decision = "deny"
    identity = record.get("userIdentity")
    identity = identity if isinstance(identity, dict) else {}
    principal = _principal(mapping, identity)
    actor = _text(identity.get("arn")) or _text(identity.get("userName"))
    params = record.get("requestParameters")
    params = params if isinstance(params, dict) else {}

    def unknown() -> None:
        kind, who = identity.get("type"), identity.get("arn") or identity.get("userName")
        out.skip(line, "principal", f"{shown_id(str(kind))} {shown_id(str(who))}")

    bulk = _Bulk(out, mapping, line, time, record, principal, actor, decision)
    if principal is None and (actor is None or (source, name) not in BULK_CALLS):
        unknown()
        return
    who = identity.get("arn")
    extra = {
        "log_line": line,
        "log_principal": who[:256] if isinstance(who, str) else "",
        "event_name": name[:64],
        "event_source": source[:64],
        "aws_event_id": record["eventID"][:128],
    }
    common: dict[str, Any] = {
        "time": time,
        "principal": principal or "",
        "action": action,
        "decision": decision,
        "extra": extra,
    }
    if source == _ATHENA:
        _map_query(out, mapping, line, record, params, common, bulk, unknown)
        return
    listed = record.get("resources")
    arns = [
        r["ARN"]
        for r in (listed if isinstance(listed, list) else [])
        if isinstance(r, dict) and isinstance(r.get("ARN"), str)
    ]
    rule = _resource_rule(mapping, source, params, arns)
    if rule is None:
        if principal is None:
            unknown()
        else:
            out.skip(line, "resource", _named(record))
        return
    value = rule.subject.find(record) if rule.subject is not None else None
    if value is None:
        if (source, name) in BULK_CALLS and bulk.keep(
            _resource_name(record), rule.category, rule.precision, _call_scope(name, params)
        ):
            return
        if principal is None:
            unknown()
            return
        where = rule.subject.path if rule.subject is not None else "(the mapping names none)"
        out.skip(line, "subject", f"nothing found at {where}")
        return
    if principal is None:
        unknown()
        return
    subject = subject_id("", value)
    if subject is None:
        out.skip(line, "subject", "the value found is not an id")
        return
    key = event_id("ct", record["eventID"], rule.category, subject)
    out.add(
        line,
        access_event(
            mapping,
            key=key,
            subject=subject,
            category=rule.category,
            precision=rule.precision,
            **common,
        ),
    )


def _resource_name(record: Mapping[str, Any]) -> str:
    """The table or ``bucket/key`` a bulk access reached, kept with it. A key is a name,
    but one can be made of a person's address: such a key is not kept."""
    params = record.get("requestParameters")
    params = params if isinstance(params, dict) else {}
    key = _text(params.get("key"))
    if key is not None and any(
        not shown_id(part).startswith("'") for part in re.split(r"[/_]", key) if part
    ):
        key = "(a key that looks like personal data, not kept)"
    return (
        _text(params.get("tableName"))
        or "/".join(filter(None, (_text(params.get("bucketName")), key)))
        or "(no resource named)"
    )


def _call_scope(name: str, params: Mapping[str, Any]) -> BulkScope:
    """What a DynamoDB ``Scan``/``Query`` or an S3 read that names no one covered: only a
    count (``Select: COUNT``), items a condition chose (a query, a filter), or all."""
    wanted = params.get("attributesToGet") or params.get("projectionExpression")
    columns: tuple[str, ...] = ("*",)
    if isinstance(wanted, list):
        columns = tuple(sorted(str(c).lower()[:128] for c in wanted if isinstance(c, str)))[:64]
    if str(params.get("select", "")).upper() == "COUNT":
        return BulkScope("aggregate", ())
    chosen = ("filterExpression", "scanFilter", "keyConditionExpression", "keyConditions")
    if name in ("Query", "SelectObjectContent") or any(params.get(k) for k in chosen):
        return BulkScope("range", columns)
    return BulkScope("table", columns)


class _Bulk:
    """Keeps a record that read many people's data as a bulk access."""

    def __init__(
        self,
        out: ReadLog,
        mapping: LogMapping,
        line: int,
        time: datetime,
        record: Mapping[str, Any],
        principal: str | None,
        actor: str | None,
        decision: str,
    ) -> None:
        self.out, self.mapping, self.line, self.time = out, mapping, line, time
        self.record, self.principal, self.actor, self.decision = (
            record, principal, actor, decision,
        )  # fmt: skip

    def keep(
        self,
        obj: str,
        category: str,
        precision: str,
        scope: BulkScope,
        shape: tuple[str, str] | None = None,
    ) -> bool:
        """Keep it (False, nothing kept, when the log names no actor)."""
        if self.actor is None:
            return False
        name = str(self.record["eventName"])
        if shape is None:
            # A call has no statement: its shape is the call itself.
            call = f"{self.record['eventSource']} {name}"
            shape = (call, "sha256:" + hashlib.sha256(call.encode()).hexdigest())
        text, digest = shape
        self.out.add_bulk(
            bulk_access(
                self.mapping,
                key=event_id("ctb", self.record["eventID"], obj, category),
                time=self.time,
                principal=self.principal,
                actor=self.actor,
                action="read",
                decision=self.decision,
                obj=obj,
                category=category,
                precision=precision,
                scope=scope,
                rows=None,
                shape=text,
                digest=digest,
                command=name,
                line=self.line,
            )
        )
        return True


def _qualified(node: exp.Table, database: str | None) -> str:
    return f"{node.db or database or ''}.{node.name}"


def _map_query(
    out: ReadLog,
    mapping: LogMapping,
    line: int,
    record: Mapping[str, Any],
    params: Mapping[str, Any],
    common: dict[str, Any],
    bulk: _Bulk,
    unknown: Callable[[], None],
) -> None:
    query = _text(params.get("queryString"))
    trees = parse_statements(query, "athena") if query else None
    if not trees:
        if not common["principal"]:
            unknown()
            return
        out.skip(line, "subject", "the query was not logged or could not be parsed")
        return
    context = params.get("queryExecutionContext")
    database = _text(context.get("database")) if isinstance(context, dict) else None
    rules: list[TableRule] = []
    for tree in trees:
        for node in tree.find_all(exp.Table):
            rule = mapping.table_for([_qualified(node, database), node.name])
            if rule is not None and rule not in rules:
                rules.append(rule)
    if not rules:
        if not common["principal"]:
            unknown()
            return
        out.skip(line, "resource", "no table of the query is mapped")
        return
    shape = statement_shape(trees, "athena")
    for rule in rules:

        def is_target(node: exp.Table, rule: TableRule = rule) -> bool:
            return mapping.table_for([_qualified(node, database), node.name]) is rule

        column = rule.subject_column
        # Athena's execution parameters are not in CloudTrail: a ``?`` names no subject.
        values = subjects_of(trees, is_target, column, []) if column else None
        if not values:
            obj = next(
                (
                    _qualified(node, database)
                    for tree in trees
                    for node in tree.find_all(exp.Table)
                    if is_target(node)
                ),
                rule.table,
            )
            if bulk.keep(obj, rule.category, rule.precision, bulk_scope(trees, is_target), shape):
                continue
            if not common["principal"]:
                unknown()
                return
            out.skip(
                line, "subject", f"the query is not restricted to named subjects of {rule.table}"
            )
            continue
        if not common["principal"]:
            unknown()
            return
        for value in sorted(values):
            subject = subject_id(rule.subject_prefix, value)
            if subject is None:
                out.skip(line, "subject", f"a value of {column} is not an id")
                continue
            key = event_id("ct", record["eventID"], rule.category, subject)
            out.add(
                line,
                access_event(
                    mapping,
                    key=key,
                    subject=subject,
                    category=rule.category,
                    precision=rule.precision,
                    **common,
                ),
            )
