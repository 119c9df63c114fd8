"""Guarded SQL against the bare query it wraps, on the same source, same run.

- Guarded = ``Custos.query``: analyse the SELECT against the data map, decide the pinned
  subject's categories (one policy batch), rewrite, open the source read-only, run under the
  statement timeout and row cap, log the decisions and the release (one durable batch),
  return 100 rows. Baseline: the same SELECT run bare on the same source, opening a
  connection per query as the guarded path does (and, for reference, on a connection kept
  open). Goal: guarded ≤ 1.5 × bare + 2 ms. DuckDB always; PostgreSQL when 127.0.0.1:5432
  (database ``test``) answers.
- Parse + decide: analysing a ~1 KB SELECT and deciding its subjects × categories, without
  running or logging anything.

Prints times and ratios; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import yaml

from custos.access import Custos, QueryRequest
from custos.directory import parse_text
from custos.policy import AccessRequest
from custos.sql.analyze import analyze
from custos.sql.sources import run_query

ROWS = 100
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS = "user_id VARCHAR, login_at TIMESTAMP, ip VARCHAR, city VARCHAR, email VARCHAR"
MAP = """sources:
  {name}:
    url: {url!r}
    tables:
      {table}:
        subject: user_id
        columns:
          login_at: plain
          ip: ip_history
          city: {{category: location, coarse: none}}
          email: contact
"""


def rows(subjects: int) -> list[tuple[Any, ...]]:
    start = datetime(2026, 3, 1)
    out: list[tuple[Any, ...]] = []
    for s in range(subjects):
        for i in range(ROWS):
            out.append(
                (
                    f"user-{s}",
                    start + timedelta(minutes=i),
                    f"198.51.{s % 250}.{i % 250}",
                    "Paris",
                    f"user-{s}@example.org",
                )
            )
    return out


def build(home: Path) -> Custos:
    system = Custos.init(home)
    people = [
        {
            "id": "emp-1",
            "name": "Agent",
            "role": "support_agent",
            "team": "support",
            "country": "US",
        }
    ]
    users = [{"id": f"user-{i}", "jurisdiction": "US"} for i in range(20)]
    tickets = [
        {"id": "T-1", "kind": "support", "subject": "user-1", "assignee": "emp-1", "status": "open"}
    ]
    system.directory.merge(
        parse_text(
            yaml.safe_dump({"principals": people, "subjects": users, "tickets": tickets}), "bench"
        )
    )
    return system


def timed(run: Callable[[], object], n: int) -> float:
    """Median seconds of ``n`` runs (after one warm-up)."""
    run()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(name: str, guarded: float, first: float, bare: float, kept: float) -> None:
    goal = 1.5 * bare + 0.002
    print(
        f"{name}: guarded {guarded * 1e3:.2f} ms, bare {bare * 1e3:.2f} ms "
        f"(kept connection {kept * 1e3:.2f} ms); guarded/bare {guarded / bare:.2f}x; "
        f"goal 1.5x + 2 ms = {goal * 1e3:.2f} ms: {'met' if guarded <= goal else 'MISSED'}"
    )
    print(
        f"  a text never seen before (analysed afresh): {first * 1e3:.2f} ms, "
        f"{first / bare:.2f}x bare: {'met' if first <= goal else 'MISSED'}"
    )


def fresh(system: Custos, request: QueryRequest) -> Callable[[], object]:
    """The request with a text the desk has not analysed yet (a new trailing comment)."""
    count = iter(range(10**9))
    return lambda: system.query(dataclasses.replace(request, sql=f"{request.sql} -- {next(count)}"))


def bench_duckdb(system: Custos, home: Path, n: int) -> None:
    path = home / "app.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE logins ({COLUMNS})")
        con.executemany("INSERT INTO logins VALUES (?, ?, ?, ?, ?)", rows(20))
    (home / "sources.yaml").write_text(
        MAP.format(name="app", url="duckdb:app.duckdb", table="logins"), encoding="utf-8"
    )
    sql = "SELECT login_at, ip, email FROM logins WHERE user_id = 'user-1'"
    request = QueryRequest("emp-1", "app", sql, "support", ticket="T-1")
    assert len(system.query(request).rows) == ROWS

    # The same configuration as the guarded path's (DuckDB refuses two configurations of
    # one file in one process).
    config = {"enable_external_access": False, "lock_configuration": True}

    def bare() -> object:
        with duckdb.connect(str(path), read_only=True, config=config) as con:
            return con.execute(sql).fetchmany(10_001)

    guarded_s = timed(lambda: system.query(request), n)
    first_s = timed(fresh(system, request), n)
    bare_s = timed(bare, n)
    # Opened last: while it is open, every connection above would share its instance.
    kept_con = duckdb.connect(str(path), read_only=True, config=config)
    kept_s = timed(lambda: kept_con.execute(sql).fetchmany(10_001), n)
    kept_con.close()
    compare("DuckDB file, 100-row individual query", guarded_s, first_s, bare_s, kept_s)
    # Where the guarded path's time goes, each part alone.
    source = system.data_map().source("app")
    analysis = analyze(sql, source)
    precision = {"ip_history": "coarse", "contact": "precise"}
    rewritten = analysis.rewrite(precision)
    asked = [AccessRequest("emp-1", "user-1", c, "support", ticket="T-1") for c in precision]
    parts = {
        "analyze": timed(lambda: analyze(sql, source), n),
        "rewrite": timed(lambda: analysis.rewrite(precision), n),
        "decide": timed(lambda: system.decisions.decide_many(asked), n),
        "open+run": timed(
            lambda: run_query(source, home, rewritten, row_cap=10_000, timeout=30), n
        ),
        "ledger batch": timed(
            lambda: system.ledger.append_many(
                [{"type": "bench", "n": i} for i in range(len(asked) + 1)]
            ),
            n,
        ),
    }
    print("  parts: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in parts.items()))


def bench_postgres(system: Custos, home: Path, n: int) -> None:
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        print("PostgreSQL: not reachable at 127.0.0.1:5432, skipped")
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(
            f"CREATE TABLE {schema}.logins (user_id text, login_at timestamp, ip inet, "
            "city text, email text)"
        )
        with admin.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {schema}.logins VALUES (%s, %s, %s, %s, %s)", rows(20))
        admin.execute(f"CREATE INDEX ON {schema}.logins (user_id)")
        (home / "sources.yaml").write_text(
            MAP.format(name="pg", url=PG_ADMIN, table=f"{schema}.logins"), encoding="utf-8"
        )
        sql = f"SELECT login_at, ip, email FROM {schema}.logins WHERE user_id = 'user-1'"
        request = QueryRequest("emp-1", "pg", sql, "support", ticket="T-1")
        assert len(system.query(request).rows) == ROWS

        def bare() -> object:
            with psycopg.connect(PG_ADMIN) as con:
                return con.execute(sql.encode()).fetchall()

        kept_con = psycopg.connect(PG_ADMIN, autocommit=True)
        guarded_s = timed(lambda: system.query(request), n)
        first_s = timed(fresh(system, request), n)
        bare_s = timed(bare, n)
        kept_s = timed(lambda: kept_con.execute(sql.encode()).fetchall(), n)
        kept_con.close()
        compare("PostgreSQL, 100-row individual query", guarded_s, first_s, bare_s, kept_s)
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def bench_parse_decide(system: Custos, n: int) -> None:
    source = system.data_map().source("app")
    conditions = " OR ".join(
        f"(login_at >= '2026-03-0{d % 9 + 1} 00:00:00' AND login_at < '2026-04-0{d % 9 + 1}')"
        for d in range(12)
    )
    sql = (
        "WITH recent AS (SELECT user_id, login_at, ip, city, email FROM logins "
        "WHERE user_id IN ('user-1')) "
        "SELECT r.login_at, r.ip, r.city, r.email, "
        "row_number() OVER (ORDER BY r.login_at) AS n FROM recent r "
        f"WHERE {conditions} ORDER BY r.login_at LIMIT 100"
    )
    print(f"parse + decide: a {len(sql)}-byte SELECT", end="")
    analysis = analyze(sql, source)
    asked = [
        AccessRequest("emp-1", s, c, "support", ticket="T-1")
        for s in sorted(analysis.subjects)
        for c in sorted(analysis.reads)
    ] + [
        AccessRequest("emp-1", s, c, "support", action="search", precision="precise")
        for s in sorted(analysis.subjects)
        for c in sorted(analysis.searches)
    ]
    parse_s = timed(lambda: analyze(sql, source), n)
    decide_s = timed(lambda: system.decisions.decide_many(asked), n)
    print(
        f": parse {parse_s * 1e3:.2f} ms + decide {decide_s * 1e3:.2f} ms "
        f"({len(asked)} requests) = {(parse_s + decide_s) * 1e3:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    n = 20 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        with build(home) as system:
            bench_duckdb(system, home, n)
            bench_parse_decide(system, n)
            bench_postgres(system, home, n)


if __name__ == "__main__":
    main()
