"""What reading an audit log costs: a pgaudit csvlog and a CloudTrail log turned into access
events, against reading the same accesses as custos's own JSON Lines, same run.

Writes ``--entries`` accesses (default 10^5; ``--quick`` 10^4) three ways: custos events
(JSON Lines, parsed by ``parse_lines``), a PostgreSQL csvlog of pgaudit entries (prepared
statements with logged parameters, as a driver sends them, a tenth of them literals over
several lines, one entry in twenty a DDL or an unmapped role) and CloudTrail JSON Lines
(S3 GetObject and DynamoDB GetItem). Times each reader over the lines in memory (the store
step is the same for all three and is left out), each round with the importer's statement
cache emptied; prints entries per second and the ratio to JSON Lines. One pgaudit entry in
twenty is a bulk read a person typed (``SELECT user_id, ip FROM logins WHERE …`` with
literals of its own, naming no subject): since bulk accesses are kept, each is analysed for
its scope and shape and stored. The last line imports the pgaudit log whole, into a fresh
SQLite database (migrations excluded), to show what storing costs. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from custos.detect.events import EventStore, parse_lines
from custos.detect.importers import common, import_log, parse_mapping, read_log
from custos.store import open_database

PGAUDIT_MAP = parse_mapping(
    """
format: pgaudit
purpose: support
principals: [{role: app_support, principal: emp-1}]
tables:
  - {table: public.users, category: contact, subject_column: id}
  - {table: public.payments, category: payment, subject_column: user_id}
  - {table: public.logins, category: ip_history, subject_column: user_id}
""",
    "bench",
)
CLOUDTRAIL_MAP = parse_mapping(
    """
format: cloudtrail
purpose: support
principals: [{session_name: "*@corp.example", principal: emp-1}]
resources:
  - {s3: "data/profiles/*", category: profile,
     subject: {path: requestParameters.key, pattern: "^profiles/(?P<subject>[^/]+)$"}}
  - {dynamodb: Payments, category: payment, subject: {path: requestParameters.key.UserId}}
""",
    "bench",
)
STATEMENTS = [
    ("public.users", "SELECT email, city FROM users WHERE id = $1"),
    ("public.users", "UPDATE users SET city = $2 WHERE id = $1"),
    ("public.payments", "SELECT p.amount FROM payments p WHERE p.user_id = $1 AND p.amount > $2"),
]


def _csv(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(fields)
    return out.getvalue()


def pgaudit_log(n: int, rng: random.Random) -> list[str]:
    text = []
    for i in range(n):
        user = "app_support" if i % 20 else "nobody"
        table, statement = STATEMENTS[i % len(STATEMENTS)]
        params = f"user-{rng.randrange(10**6)},{i}"
        kind = "READ" if statement.startswith("SELECT") else "WRITE"
        if i % 10 == 0:
            statement = f"SELECT email\n  FROM public.users\n WHERE id = 'user-{i}'"
            table, kind, params = "public.users", "READ", "<none>"
        if i % 20 == 7:
            statement, table, kind, params = "CREATE TABLE t (x int)", "", "DDL", "<none>"
        if i % 20 == 13:
            statement = (
                f"SELECT user_id, ip FROM logins WHERE at > '2026-01-0{i % 9 + 1}'"
                f" AND ip << '10.{i % 256}.0.0/16'"
            )
            table, kind, params = "public.logins", "READ", "<none>"
        audit = _csv(["SESSION", str(i), "1", kind, "SELECT", "TABLE", table, statement, params])
        text.append(
            _csv(
                [
                    f"2026-01-05 10:00:{i % 60:02d}.{i % 1000:03d} UTC",
                    user,
                    "shop",
                    "4242",
                    "127.0.0.1:5000",
                    "65a1.1092",
                    str(i),
                    "SELECT",
                    "2026-01-05 09:00:00 UTC",
                    "3/1",
                    "0",
                    "LOG",
                    "00000",
                    "AUDIT: " + audit.rstrip("\n"),
                    *[""] * 12,
                ]
            )
        )
    return "".join(text).split("\n")


def cloudtrail_log(n: int, rng: random.Random) -> list[str]:
    lines = []
    for i in range(n):
        user = f"user-{rng.randrange(10**6)}"
        identity = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::1:assumed-role/Support/p{i % 50}@corp.example",
        }
        record: dict[str, Any] = {
            "eventTime": "2026-01-05T10:00:00Z",
            "eventID": f"e-{i}",
            "userIdentity": identity,
        }
        if i % 2:
            record |= {
                "eventSource": "s3.amazonaws.com",
                "eventName": "GetObject",
                "requestParameters": {"bucketName": "data", "key": f"profiles/{user}"},
            }
        else:
            record |= {
                "eventSource": "dynamodb.amazonaws.com",
                "eventName": "GetItem",
                "requestParameters": {"tableName": "Payments", "key": {"UserId": user}},
            }
        lines.append(json.dumps(record))
    return lines


def events_log(n: int, rng: random.Random) -> list[str]:
    return [
        json.dumps(
            {
                "id": f"ev-{i}",
                "time": "2026-01-05T10:00:00Z",
                "principal": "emp-1",
                "action": "read",
                "subject": f"user-{rng.randrange(10**6)}",
                "category": "contact",
                "purpose": "support",
                "decision": "allow",
                "precision": "precise",
            }
        )
        for i in range(n)
    ]


def _cold() -> None:
    """Forget every statement's kept analysis (bulk shapes too, where the code has them)."""
    common._parsed.cache_clear()
    common._template.cache_clear()
    kept = getattr(common, "bulk_of_cached", None)
    if kept is not None:
        kept.cache_clear()


def timed(work: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        # Each round starts cold: the importer keeps its analysis of each statement text,
        # and a second round would find all of them kept.
        _cold()
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = 10_000 if args.quick else args.entries
    rng = random.Random(7)
    jsonl, pgaudit, trail = events_log(n, rng), pgaudit_log(n, rng), cloudtrail_log(n, rng)
    base, parsed = timed(lambda: parse_lines(jsonl, "bench"), args.rounds)
    print(f"{n} entries each, best of {args.rounds}")
    events = len(parsed.events)
    print(f"custos JSON Lines    {base:7.2f} s  {n / base:9.0f}/s  1.00x  ({events} events)")
    for name, lines, mapping in (
        ("pgaudit csvlog", pgaudit, PGAUDIT_MAP),
        ("CloudTrail JSONL", trail, CLOUDTRAIL_MAP),
    ):
        spent, read = timed(partial(read_log, lines, mapping), args.rounds)
        print(
            f"{name:20} {spent:7.2f} s  {n / spent:9.0f}/s  {spent / base:5.2f}x  "
            f"({len(read.events)} events, {len(getattr(read, 'bulk', []))} bulk, "
            f"{len(read.unmapped)} unmapped, {len(read.rejected)} rejected)"
        )
    best = float("inf")
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            db = open_database(f"sqlite:///{Path(folder) / 'bench.db'}", migrate=True)
            _cold()
            start = time.perf_counter()
            import_log(EventStore(db), pgaudit, "bench", PGAUDIT_MAP)
            best = min(best, time.perf_counter() - start)
            db.dispose()
    print(f"{'pgaudit, stored':20} {best:7.2f} s  {n / best:9.0f}/s  {best / base:5.2f}x")


if __name__ == "__main__":
    main()
