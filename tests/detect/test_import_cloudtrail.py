"""CloudTrail logs imported as access events through a mapping file: realistic records (S3
GetObject, DynamoDB GetItem, Athena StartQueryExecution, AssumeRole sessions) in both file
shapes, stored in a real home, then seen by detection as accesses that bypassed custos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.detect import EventStore
from custos.detect.importers import import_log, parse_mapping, read_log
from custos.errors import InvalidInput, ValidationFailed
from custos.store.bulk import BulkAccessStore
from tests.factories import SUPPORT_WORLD, load_org

ACCOUNT = "111122223333"
MAPPING = rf"""
format: cloudtrail
purpose: support
source: aws-prod
principals:
  - session_name: alice@corp.example
    principal: emp-1001
  - user_name: bob
    principal: emp-1002
tables:
  - table: analytics.users
    category: profile
    subject_column: user_id
resources:
  - s3: "customer-data/profiles/*"
    category: profile
    subject:
      path: requestParameters.key
      pattern: "^profiles/(?P<subject>[^/]+)\\.json$"
  - dynamodb: Payments
    category: payment
    subject: {{path: requestParameters.key.UserId}}
  - arn: "arn:aws:dynamodb:*:{ACCOUNT}:table/Contacts"
    category: contact
    subject: {{path: requestParameters.key.UserId}}
"""
ALICE_ROLE = f"arn:aws:sts::{ACCOUNT}:assumed-role/SupportReadOnly/alice@corp.example"


def assumed(session: str = "alice@corp.example") -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEID:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/SupportReadOnly/{session}",
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLEKEY",
        "sessionContext": {
            "sessionIssuer": {
                "type": "Role",
                "principalId": "AROAEXAMPLEID",
                "arn": f"arn:aws:iam::{ACCOUNT}:role/SupportReadOnly",
                "accountId": ACCOUNT,
                "userName": "SupportReadOnly",
            },
            "attributes": {"creationDate": "2026-01-05T09:58:00Z", "mfaAuthenticated": "true"},
        },
    }


BOB = {
    "type": "IAMUser",
    "principalId": "AIDAEXAMPLEBOB",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/bob",
    "accountId": ACCOUNT,
    "userName": "bob",
}


def record(n: int, source: str, name: str, identity: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "eventVersion": "1.09",
        "userIdentity": identity,
        "eventTime": f"2026-01-05T10:{n:02d}:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0",
        "eventID": f"0b6c2a3e-5d7f-4c1e-9a0b-{n:012d}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT,
        **more,
    }


def s3_get(n: int, identity: dict[str, Any], bucket: str, key: str) -> dict[str, Any]:
    return record(
        n,
        "s3.amazonaws.com",
        "GetObject",
        identity,
        requestParameters={"bucketName": bucket, "Host": f"{bucket}.s3.amazonaws.com", "key": key},
        resources=[
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
            {"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"},
        ],
        eventCategory="Data",
    )


def dynamo_get(
    n: int, identity: dict[str, Any], table: str, user: str, **more: Any
) -> dict[str, Any]:
    return record(
        n,
        "dynamodb.amazonaws.com",
        "GetItem",
        identity,
        requestParameters={"tableName": table, "key": {"UserId": user}, "consistentRead": False},
        resources=[
            {
                "accountId": ACCOUNT,
                "type": "AWS::DynamoDB::Table",
                "ARN": f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{table}",
            }
        ],
        eventCategory="Data",
        **more,
    )


def athena(n: int, identity: dict[str, Any], query: str) -> dict[str, Any]:
    return record(
        n,
        "athena.amazonaws.com",
        "StartQueryExecution",
        identity,
        requestParameters={
            "queryString": query,
            "queryExecutionContext": {"database": "analytics", "catalog": "AwsDataCatalog"},
            "workGroup": "primary",
        },
        responseElements={"queryExecutionId": f"q-{n}"},
        readOnly=False,
    )


def trail() -> list[dict[str, Any]]:
    """A morning of CloudTrail: alice assumes a role and reads; bob reads; the rest is
    unmapped for each reason."""
    return [
        record(
            1,
            "sts.amazonaws.com",
            "AssumeRole",
            {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice", "userName": "alice"},
            requestParameters={
                "roleArn": f"arn:aws:iam::{ACCOUNT}:role/SupportReadOnly",
                "roleSessionName": "alice@corp.example",
            },
        ),
        s3_get(2, assumed(), "customer-data", "profiles/user-42.json"),
        dynamo_get(3, BOB, "Payments", "user-1"),
        dynamo_get(
            4,
            BOB,
            "Contacts",
            "user-2",
            errorCode="AccessDenied",
            errorMessage="User is not authorized to perform: dynamodb:GetItem",
        ),
        athena(5, assumed(), "SELECT email, city FROM users WHERE user_id IN ('user-1', 'user-2')"),
        athena(6, assumed(), "SELECT count(*) FROM analytics.users"),
        s3_get(7, assumed("mallory@corp.example"), "customer-data", "profiles/user-1.json"),
        s3_get(8, assumed(), "marketing-assets", "banner.png"),
        record(9, "s3.amazonaws.com", "ListBuckets", BOB, requestParameters={"Host": "s3"}),
    ]


def document_lines(records: list[dict[str, Any]]) -> list[str]:
    return json.dumps({"Records": records}, indent=2).split("\n")


def json_lines(records: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r) for r in records]


@pytest.mark.parametrize("shape", ["document", "json_lines"])
def test_records_become_events_and_the_rest_is_reported_by_line_and_reason(
    system: Custos, shape: str
) -> None:
    records = trail()
    lines = document_lines(records) if shape == "document" else json_lines(records)
    mapping = parse_mapping(MAPPING, "map.yaml")
    report = import_log(EventStore(system.db), lines, "trail.json", mapping)
    assert (report.records, report.entries, report.events) == (9, 9, 5)
    assert (report.added, report.unchanged, report.rejected) == (5, 0, 0)
    assert report.unmapped_by_reason() == {"not_access": 2, "principal": 1, "resource": 1}
    # Each unmapped entry points at the line its record starts on.
    starts = (
        [n for n, line in enumerate(lines, 1) if line == "    {"]
        if shape == "document"
        else list(range(1, 10))
    )
    assert [u.line for u in report.unmapped] == [starts[i] for i in (0, 6, 7, 8)]
    assert [u.reason for u in report.unmapped] == [
        "not_access", "principal", "resource", "not_access",
    ]  # fmt: skip
    texts = [u.describe("trail.json") for u in report.unmapped]
    # A session name that is an email address is not repeated (the line says where it is).
    assert "'AssumedRole'" in texts[1]
    assert "mallory" not in texts[1]
    assert "'marketing-assets/banner.png'" in texts[2]
    # The count over every user is one access to many people: kept as a bulk access.
    assert (report.bulk, report.bulk_added) == (1, 1)
    (bulk,) = BulkAccessStore(system.db).search()
    assert (bulk["principal"], bulk["object"], bulk["category"], bulk["scope"]) == (
        "emp-1001", "analytics.users", "profile", "aggregate",
    )  # fmt: skip
    assert (bulk["log_line"], bulk["command"]) == (starts[5], "StartQueryExecution")
    assert bulk["shape"] == "SELECT COUNT(*) FROM analytics.users"

    events = {(e.principal, e.subject, e.category): e for e in EventStore(system.db).search()}
    assert set(events) == {
        ("emp-1001", "user-42", "profile"),  # S3 object of an assumed-role session
        ("emp-1002", "user-1", "payment"),  # DynamoDB table by name
        ("emp-1002", "user-2", "contact"),  # DynamoDB table by ARN, refused by AWS
        ("emp-1001", "user-1", "profile"),  # Athena, both subjects of the IN list
        ("emp-1001", "user-2", "profile"),
    }
    denied = events[("emp-1002", "user-2", "contact")]
    assert (denied.decision, denied.precision) == ("deny", None)
    s3 = events[("emp-1001", "user-42", "profile")]
    assert (s3.decision, s3.action, s3.purpose, s3.ticket, s3.source) == (
        "allow", "read", "support", None, "aws-prod",
    )  # fmt: skip
    assert s3.extras()["guarded"] is False
    assert s3.extras()["event_name"] == "GetObject"
    assert s3.extras()["log_principal"] == ALICE_ROLE
    assert s3.extras()["mapping"] == mapping.digest
    assert s3.time.isoformat() == "2026-01-05T10:02:00+00:00"

    # The same log again changes nothing.
    again = import_log(EventStore(system.db), lines, "trail.json", mapping)
    assert (again.added, again.unchanged) == (0, 5)
    assert (again.bulk_added, again.bulk_unchanged) == (0, 1)


def dynamo_scan(n: int, identity: dict[str, Any], table: str, **params: Any) -> dict[str, Any]:
    return record(
        n,
        "dynamodb.amazonaws.com",
        "Scan",
        identity,
        requestParameters={"tableName": table, **params},
        resources=[
            {
                "accountId": ACCOUNT,
                "type": "AWS::DynamoDB::Table",
                "ARN": f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/{table}",
            }
        ],
        eventCategory="Data",
    )


STRANGER = {
    "type": "IAMUser",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/etl-nightly",
    "accountId": ACCOUNT,
    "userName": "etl-nightly",
}


def test_scans_and_whole_exports_are_bulk_accesses_without_their_values(system: Custos) -> None:
    records = [
        # Every payment: a Scan names no key.
        dynamo_scan(1, BOB, "Payments"),
        # Only a count of them.
        dynamo_scan(2, BOB, "Payments", select="COUNT"),
        # Filtered on a value (the value never kept).
        dynamo_scan(
            3,
            BOB,
            "Payments",
            filterExpression="Amount > :a",
            expressionAttributeValues={":a": {"N": "9999"}},
        ),
        # A whole export of profiles, by an IAM user the mapping does not know.
        s3_get(4, STRANGER, "customer-data", "profiles/export-2026-01.csv"),
        # An object whose key is made of someone's address: the key is not kept.
        s3_get(7, BOB, "customer-data", "profiles/exports/jane.doe@example.org.csv"),
        # A Scan by nobody named at all is unmapped (nothing to say who it was).
        dynamo_scan(5, {"type": "AWSService"}, "Payments"),
        # A write naming no one is no bulk read.
        record(
            6,
            "dynamodb.amazonaws.com",
            "PutItem",
            BOB,
            requestParameters={"tableName": "Payments", "item": {}},
        ),
    ]
    mapping = parse_mapping(MAPPING, "map.yaml")
    report = import_log(EventStore(system.db), json_lines(records), "trail.json", mapping)
    assert report.events == 0
    assert (report.bulk, report.bulk_added) == (5, 5)
    assert report.unmapped_by_reason() == {"principal": 1, "subject": 1}
    assert "5 bulk access(es) to many people (5 stored, 0 already present)" in report.summary()
    found = {r["log_line"]: r for r in BulkAccessStore(system.db).search()}
    assert {n: (r["principal"], r["scope"], r["category"]) for n, r in found.items()} == {
        1: ("emp-1002", "table", "payment"),
        2: ("emp-1002", "aggregate", "payment"),
        3: ("emp-1002", "range", "payment"),
        4: (None, "table", "profile"),
        5: ("emp-1002", "table", "profile"),
    }
    assert found[5]["object"] == ("customer-data/(a key that looks like personal data, not kept)")
    assert all("jane" not in str(r) for r in found.values())
    assert found[4]["actor"] == STRANGER["arn"]
    assert found[4]["object"] == "customer-data/profiles/export-2026-01.csv"
    assert found[1]["shape"] == "dynamodb.amazonaws.com Scan"
    assert all("9999" not in str(r) for r in found.values())
    again = import_log(EventStore(system.db), json_lines(records), "other-name.json", mapping)
    assert (again.bulk_added, again.bulk_unchanged) == (0, 5)


def test_one_pretty_printed_record_is_read_as_one(system: Custos) -> None:
    lines = json.dumps(s3_get(2, assumed(), "customer-data", "profiles/user-42.json"), indent=2)
    read = read_log(lines.split("\n"), parse_mapping(MAPPING, "map.yaml"))
    assert (read.records, len(read.events), read.rejected) == (1, 1, [])


def test_detection_takes_an_imported_access_as_unguarded(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    mapping = parse_mapping(MAPPING, "map.yaml")
    lines = json_lines([s3_get(2, assumed(), "customer-data", "profiles/user-42.json")])
    assert import_log(EventStore(system.db), lines, "trail.json", mapping).added == 1
    alerts = system.detect().alerts
    # user-42 is a journalist; emp-1001 reached her profile with no ticket, outside custos.
    protected = [a for a in alerts if a.rule == "protected_subject_access"]
    assert protected
    assert protected[0].principals == ("emp-1001",)
    assert protected[0].subjects == ("user-42",)
    # Replay judged it as custos would have: no ticket, so refused.
    assert "policy_replay" in {a.rule for a in alerts}


def test_unreadable_records_refuse_the_whole_file_unless_set_aside(
    system: Custos, tmp_path: Path
) -> None:
    records = trail()[:3]
    lines = [*json_lines(records), "{not json", json.dumps({"eventName": "GetObject"}), "[1, 2]"]
    mapping = parse_mapping(MAPPING, "map.yaml")
    store = EventStore(system.db)
    with pytest.raises(ValidationFailed) as caught:
        import_log(store, lines, "trail.jsonl", mapping)
    assert caught.value.problems == [
        "trail.jsonl: line 4: not valid JSON",
        "trail.jsonl: line 5: field 'eventTime': missing",
        "trail.jsonl: line 6: a record must be a JSON object",
    ]
    assert store.count() == 0
    rejects = tmp_path / "rejects.jsonl"
    report = import_log(store, lines, "trail.jsonl", mapping, rejects=rejects)
    assert (report.added, report.rejected) == (2, 3)
    assert rejects.read_text(encoding="utf-8").splitlines() == lines[3:]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("format: cloudtrail\npurpose: support\nprincipals:\n  - principal: emp-1\n",
         "field 'principals.0': give exactly one of role, arn, user_name, session_name"),
        ("format: cloudtrail\npurpose: gossip\n", "field 'purpose'"),
        ("format: cloudtrail\npurpose: support\nresources:\n  - s3: b/*\n    category: profile\n"
         "    subject: {path: key, pattern: '(no group)'}\n", "needs a named group"),
        ("format: cloudtrail\npurpose: support\nextra: 1\n", "field 'extra': unknown field"),
    ],
)  # fmt: skip
def test_a_bad_mapping_says_which_field(text: str, expected: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_mapping(text, "map.yaml")
    assert any(expected in p for p in caught.value.problems), caught.value.problems
    with pytest.raises(InvalidInput, match="not valid YAML at line 1"):
        parse_mapping("format: [", "map.yaml")


def test_the_cli_imports_and_reports(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}

    def custos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "custos", *args],
            capture_output=True, text=True, env=env, timeout=180, check=False,
        )  # fmt: skip

    assert custos("init").returncode == 0
    (tmp_path / "map.yaml").write_text(MAPPING, encoding="utf-8")
    log = tmp_path / "trail.json"
    log.write_text("\n".join(document_lines(trail())), encoding="utf-8")
    done = custos("events", "import", "--format", "cloudtrail", "--mapping",
                  str(tmp_path / "map.yaml"), str(log), "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["records"], body["added"], body["rejected"]) == (9, 5, 0)
    assert body["unmapped"] == {"not_access": 2, "principal": 1, "resource": 1}
    assert (body["bulk"], body["bulk_added"], body["bulk_unchanged"]) == (1, 1, 0)
    wrong = custos("events", "import", "--format", "pgaudit", "--mapping",
                   str(tmp_path / "map.yaml"), str(log))  # fmt: skip
    assert wrong.returncode == 2
    assert "maps a cloudtrail log, not pgaudit" in wrong.stderr + wrong.stdout


MAPPED = parse_mapping(MAPPING, "map.yaml")
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "eventTime": st.sampled_from(["2026-01-05T10:00:00Z", "yesterday", "2026-01-05T10:00:00"]),
        "eventID": st.text(max_size=40),
        "eventName": st.sampled_from(["GetObject", "GetItem", "StartQueryExecution", "Nope"]),
        "eventSource": st.sampled_from(
            ["s3.amazonaws.com", "dynamodb.amazonaws.com", "athena.amazonaws.com", "x"]
        ),
        "userIdentity": st.one_of(JSON, st.just(assumed()), st.just(BOB)),
        "requestParameters": st.one_of(
            JSON,
            st.fixed_dictionaries({"queryString": st.text(max_size=80)}),
            st.fixed_dictionaries({"tableName": st.just("Payments"), "key": JSON}),
            st.fixed_dictionaries({"bucketName": st.just("customer-data"), "key": st.text()}),
        ),
        "errorCode": st.text(max_size=20),
        "resources": JSON,
    },
)


NOT_A_FILE = JSON.filter(lambda value: not (isinstance(value, dict) and "Records" in value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.text(max_size=60), NOT_A_FILE.map(json.dumps), FIELDS.map(json.dumps)),
        max_size=8,
    )
)
def test_garbage_never_crashes_and_every_record_is_accounted_for(lines: list[str]) -> None:
    lines = [part for line in lines for part in line.replace("\r", "").split("\n")]
    read = read_log(lines, MAPPED)
    assert len(read.rejected) + read.entries == read.records
    for rejected in read.rejected:
        assert rejected.lines
        assert all(1 <= n <= len(lines) for n in rejected.lines)
    # Every record read is an event, a repeat of one, unmapped, or rejected: none is
    # dropped unseen.
    outcomes = {u.line for u in read.unmapped} | {e.extras()["log_line"] for e in read.events}
    assert len(outcomes) + read.duplicates >= read.entries
