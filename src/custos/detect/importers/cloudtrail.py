"""AWS CloudTrail records as access events (docs/formats.md, *Audit-log mapping*).

A log is either CloudTrail's file shape, one JSON document ``{"Records": [...]}`` (as
delivered to S3, pretty-printed or not), or JSON Lines of records or of such documents (as
CloudTrail Lake, Firehose or a SIEM exports them). Data events on S3 objects and DynamoDB
items, and Athena queries, become access events; everything else (``AssumeRole``, console
sign-ins, listings) is counted as not an access to data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlglot import exp

from custos.detect.importers.common import (
    ReadLog,
    Rejected,
    access_event,
    event_id,
    parse_statements,
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
    principal = _principal(mapping, identity if isinstance(identity, dict) else {})
    if principal is None:
        kind = identity.get("type") if isinstance(identity, dict) else None
        who = (
            identity.get("arn") or identity.get("userName") if isinstance(identity, dict) else None
        )
        out.skip(line, "principal", f"{shown_id(str(kind))} {shown_id(str(who))}")
        return
    params = record.get("requestParameters")
    params = params if isinstance(params, dict) else {}
    who = identity.get("arn") if isinstance(identity, dict) else None
    extra = {
        "log_line": line,
        "log_principal": who[:256] if isinstance(who, str) else "",
        "event_name": name[:64],
        "event_source": source[:64],
        "aws_event_id": record["eventID"][:128],
    }
    common: dict[str, Any] = {
        "time": time,
        "principal": principal,
        "action": action,
        "decision": decision,
        "extra": extra,
    }
    if source == _ATHENA:
        _map_query(out, mapping, line, record, params, common)
        return
    listed = record.get("resources")
    arns = [
        r["ARN"]
        for r in (listed if isinstance(listed, list) else [])
        if isinstance(r, dict) and isinstance(r.get("ARN"), str)
    ]
    rule = _resource_rule(mapping, source, params, arns)
    if rule is None:
        out.skip(line, "resource", _named(record))
        return
    value = rule.subject.find(record) if rule.subject is not None else None
    if value is None:
        where = rule.subject.path if rule.subject is not None else "(the mapping names none)"
        out.skip(line, "subject", f"nothing found at {where}")
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


def _qualified(node: exp.Table, database: str | None) -> str:
    return f"{node.db or database or ''}.{node.name}"


def _map_query(
    out: ReadLog,
    mapping: LogMapping,
    line: int,
    record: Mapping[str, Any],
    params: Mapping[str, Any],
    common: dict[str, Any],
) -> None:
    query = _text(params.get("queryString"))
    trees = parse_statements(query, "athena") if query else None
    if not trees:
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
        out.skip(line, "resource", "no table of the query is mapped")
        return
    for rule in rules:

        def is_target(node: exp.Table, rule: TableRule = rule) -> bool:
            return mapping.table_for([_qualified(node, database), node.name]) is rule

        column = rule.subject_column
        # Athena's execution parameters are not in CloudTrail: a ``?`` names no subject.
        values = subjects_of(trees, is_target, column, []) if column else None
        if not values:
            out.skip(
                line, "subject", f"the query is not restricted to named subjects of {rule.table}"
            )
            continue
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
