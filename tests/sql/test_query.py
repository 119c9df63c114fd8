"""Custos.query end to end on real DuckDB files and the real PostgreSQL: decided per subject
and category, logged in one batch before rows leave, refusals logged, aggregates checked
against k, the map ledgered, subjects' reports showing SQL accesses."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from custos.access import Custos, QueryRequest, Viewer
from custos.access.query import MAP_MARKER, json_value
from custos.errors import (
    InvalidInput,
    LedgerUnavailable,
    QueryRefused,
    SourceUnavailable,
    SqlRejected,
)
from custos.sql import parse_data_map
from tests.sql.world import make_ledger_read_only, pg_source, source_yaml, sql_home

SUPPORT = QueryRequest(
    principal="emp-1001",
    source="app",
    sql="SELECT login_at, ip, email FROM logins WHERE user_id = 'user-1' ORDER BY login_at",
    purpose="support",
    ticket="T-1",
)
COUNT = QueryRequest(
    principal="emp-9001",
    source="app",
    sql="SELECT count(*) AS logins FROM logins",
    purpose="product_debug",
)


@pytest.fixture
def world(system: Custos) -> Iterator[Custos]:
    sql_home(system)
    return system


def _entries(system: Custos, start: int = 0) -> list[dict[str, object]]:
    return [json.loads(raw) for _, raw in system.ledger.entries(start, system.ledger.size())]


def test_an_individual_query_returns_coarse_rows_after_logging_them(world: Custos) -> None:
    start = world.ledger.size()
    result = world.query(SUPPORT)
    assert [c.name for c in result.columns] == ["login_at", "ip", "email"]
    assert [(c.category, c.precision) for c in result.columns] == [
        (None, None),
        ("ip_history", "coarse"),
        ("contact", "precise"),
    ]
    assert [row[1] for row in result.rows] == ["198.51.100.0/24"] * 3
    assert {row[2] for row in result.rows} == {"user-1@example.org"}
    assert not result.truncated
    entries = _entries(world, start)
    kinds = [e["type"] for e in entries]
    assert kinds == ["data_map", "decision", "decision", "sql_release"]
    data_map, *decisions, release = entries
    assert {(d["subject"], d["category"], d["precision"]) for d in decisions} == {
        ("user-1", "ip_history", "coarse"),
        ("user-1", "contact", "precise"),
    }
    assert all(d["data_map"] == data_map["digest"] for d in decisions)
    assert release["subjects"] == ["user-1"]
    assert release["subjects_reported"] is True
    assert release["categories"] == {"contact": "precise", "ip_history": "coarse"}
    assert (release["rows"], release["truncated"]) == (3, False)
    assert release["decisions"] == [d["id"] for d in decisions]
    assert release["sql_sha256"] == result.sql_digest
    assert result.release_index == world.ledger.size() - 1
    # Never a value in the ledger: not the addresses, not the e-mail, not the SQL.
    raw = "".join(raw.decode() for _, raw in world.ledger.entries(start, world.ledger.size()))
    for value in ("198.51.100", "example.org", "SELECT", "user_id ="):
        assert value not in raw.replace(json.dumps(data_map["body"]), "")


def test_the_sql_that_ran_is_the_digest_logged(world: Custos) -> None:
    result = world.query(SUPPORT)
    (release,) = [e for e in _entries(world) if e["type"] == "sql_release"]
    assert len(result.sql_digest) == 64
    assert release["sql_sha256"] == result.sql_digest
    assert hashlib.sha256(SUPPORT.sql.encode()).hexdigest() != result.sql_digest  # rewritten


def test_a_refused_query_logs_its_refusals_and_returns_nothing(world: Custos) -> None:
    start = world.ledger.size()
    leak_hunt = QueryRequest(
        principal="emp-2001",
        source="app",
        sql="SELECT ip FROM logins WHERE user_id = 'user-42'",
        purpose="internal_investigation",
        ticket="T-7",
    )
    with pytest.raises(QueryRefused, match="source protection") as refused:
        world.query(leak_hunt)
    assert "198.51" not in str(refused.value.to_dict())
    entries = _entries(world, start)
    assert [e["type"] for e in entries] == ["data_map", "decision"]
    assert entries[1]["decision"] == "deny"
    assert entries[1]["reasons"][0] == "source-protection"


def test_one_refused_subject_refuses_the_whole_query(world: Custos) -> None:
    both = QueryRequest(
        principal="emp-1001",
        source="app",
        sql="SELECT ip FROM logins WHERE user_id IN ('user-1', 'user-2')",
        purpose="support",
        ticket="T-1",
    )
    with pytest.raises(QueryRefused, match="need"):
        world.query(both)
    decided = {(e["subject"], e["decision"]) for e in _entries(world) if e["type"] == "decision"}
    assert decided == {("user-1", "allow"), ("user-2", "deny")}
    assert not [e for e in _entries(world) if e["type"] == "sql_release"]


def test_a_search_on_precise_values_needs_a_grant(world: Custos) -> None:
    probe = QueryRequest(
        principal="emp-1001",
        source="app",
        sql="SELECT login_at FROM logins WHERE user_id = 'user-1' AND ip LIKE '198.51.100.1%'",
        purpose="support",
        ticket="T-1",
    )
    with pytest.raises(QueryRefused):
        world.query(probe)
    (search,) = [e for e in _entries(world) if e.get("action") == "search"]
    assert (search["category"], search["requested_precision"]) == ("ip_history", "precise")
    assert search["decision"] == "approval_required"


def test_with_the_ledger_unwritable_nothing_leaves(world: Custos) -> None:
    world.data_map()  # ledgered while the ledger could still be written
    make_ledger_read_only(world)
    with pytest.raises(LedgerUnavailable) as failed:
        world.query(SUPPORT)
    assert "198.51" not in str(failed.value)


def test_a_source_that_fails_releases_nothing_but_its_decisions_are_logged(
    world: Custos, home: Path
) -> None:
    (home / "data" / "app.duckdb").unlink()
    with pytest.raises(SourceUnavailable):
        world.query(SUPPORT)
    kinds = [e["type"] for e in _entries(world)]
    assert "decision" in kinds
    assert "sql_release" not in kinds


def test_rejected_sql_is_logged_but_decides_nothing(world: Custos) -> None:
    before = world.ledger.size()
    secret = "DELETE FROM logins WHERE ip = '198.51.100.10'"
    with pytest.raises(SqlRejected):
        world.query(QueryRequest("emp-1001", "app", secret, "support", "T-1"))
    unpinned = "SELECT ip FROM logins WHERE email LIKE 'jane%'"
    with pytest.raises(QueryRefused):
        world.query(QueryRequest("emp-1001", "app", unpinned, "support", "T-1"))
    with pytest.raises(InvalidInput, match="unknown source"):
        world.query(QueryRequest("emp-1001", "nowhere", SUPPORT.sql, "support", "T-1"))
    entries = _entries(world, before)
    assert [e["type"] for e in entries] == ["data_map", "sql_refused", "sql_refused"]
    rejected, refused = entries[1:]
    assert (rejected["code"], refused["code"]) == ("sql_rejected", "query_refused")
    assert rejected["principal"] == "emp-1001"
    assert rejected["sql_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    raw = json.dumps(entries[1:])
    assert "198.51" not in raw
    assert "jane" not in raw


def test_the_subjects_report_shows_the_sql_access(world: Custos) -> None:
    result = world.query(SUPPORT)
    report = world.subject_report("user-1", viewer=Viewer("test", "emp-1001", ("auditor",)))
    indexes = {item["index"] for item in report["entries"]}
    assert result.release_index in indexes
    rows = [a for a in report["accesses"] if a["release_entry"] == result.release_index]
    assert {(a["category"], a["precision"], a["records"]) for a in rows} == {
        ("ip_history", "coarse", 3),
        ("contact", "precise", 3),
    }
    other = world.subject_report("user-2", viewer=Viewer("test", "emp-1001", ("auditor",)))
    assert result.release_index not in {item["index"] for item in other["entries"]}


def test_an_aggregate_is_decided_per_category_and_checked_against_k(world: Custos) -> None:
    result = world.query(COUNT)
    assert result.rows == [(69,)]
    assert result.aggregate
    assert [c.name for c in result.columns] == ["logins"]
    entries = _entries(world)
    (release,) = [e for e in entries if e["type"] == "sql_release"]
    assert release["aggregate"] is True
    assert release["k"] == 10
    assert "subjects" not in release
    by_network = QueryRequest(
        principal="emp-9001",
        source="app",
        sql="SELECT ip, count(*) FROM logins GROUP BY ip",
        purpose="product_debug",
    )
    with pytest.raises(QueryRefused, match="fewer than 10 subjects"):
        world.query(by_network)
    counted = [e for e in _entries(world) if e["type"] == "aggregate_decision"]
    assert {(e["category"], e["decision"]) for e in counted} == {("ip_history", "allow")}


def test_nobody_counts_for_an_internal_investigation(world: Custos) -> None:
    hunt = QueryRequest(
        principal="emp-2001",
        source="app",
        sql="SELECT ip, count(*) FROM logins GROUP BY ip",
        purpose="internal_investigation",
    )
    with pytest.raises(QueryRefused):
        world.query(hunt)
    (refusal,) = [e for e in _entries(world) if e["type"] == "aggregate_decision"]
    assert refusal["decision"] == "deny"
    assert not [e for e in _entries(world) if e["type"] == "sql_release"]


def test_the_map_is_ledgered_once_and_again_when_it_changes(world: Custos, home: Path) -> None:
    world.query(SUPPORT)
    world.query(COUNT)
    maps = [e for e in _entries(world) if e["type"] == "data_map"]
    assert len(maps) == 1
    text = source_yaml("app", "duckdb:data/app.duckdb", "logins").replace(
        "email: contact", "email: {category: contact, coarse: none}"
    )
    (home / "sources.yaml").write_text(text, encoding="utf-8")
    world.query(COUNT)
    maps = [e for e in _entries(world) if e["type"] == "data_map"]
    assert len(maps) == 2
    assert maps[1]["digest"] == parse_data_map(text).digest
    assert world.verify_authority().results
    assert all(r.same for r in world.verify_authority().results)


def test_a_query_under_a_map_never_ledgered_is_named_by_verify(world: Custos, home: Path) -> None:
    # An insider edits sources.yaml and the marker so that custos believes it ledgered the
    # new map: the queries decided under it are named by `custos log verify`.
    text = source_yaml("app", "duckdb:data/app.duckdb", "logins").replace(
        "ip: ip_history", "ip: {category: ip_history, coarse: {duckdb: 'lower({col})'}}"
    )
    digest = parse_data_map(text).digest
    (home / "sources.yaml").write_text(text, encoding="utf-8")
    (home / MAP_MARKER).write_text(digest + "\n", encoding="ascii")
    fresh = Custos.open(home)
    try:
        fresh.query(SUPPORT)
    finally:
        fresh.close()
    problems = [r.problem for r in world.verify_authority().results if not r.same]
    assert problems
    assert all(f"data map {digest[:12]}, which the ledger never took" in p for p in problems if p)


# -- PostgreSQL ---------------------------------------------------------------------------


def test_an_individual_query_on_postgres(world: Custos, home: Path) -> None:
    with pg_source() as pg:
        (home / "sources.yaml").write_text(
            source_yaml("app", pg.reader_url, pg.table), encoding="utf-8"
        )
        request = QueryRequest(
            principal="emp-1001",
            source="app",
            sql=f"SELECT ip, email FROM {pg.table} WHERE user_id = 'user-1'",
            purpose="support",
            ticket="T-1",
        )
        result = world.query(request)
        assert {row[0] for row in result.rows} == {"198.51.100.0/24"}
        counted = world.query(
            QueryRequest("emp-9001", "app", f"SELECT count(*) FROM {pg.table}", "product_debug")
        )
        assert counted.rows == [(69,)]


def test_the_result_shape_in_formats_md_is_a_real_results(world: Custos) -> None:
    text = (Path(__file__).parents[2] / "docs" / "formats.md").read_text(encoding="utf-8")
    section = text.split("## Guarded SQL results (JSON)", 1)[1].split("\n## ", 1)[0]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    real = world.query(SUPPORT).to_dict()
    assert set(shown) == set(real)
    assert set(shown["columns"][0]) == set(real["columns"][0])
    assert json.loads(json.dumps(real)) == real  # JSON-safe as it is


def test_a_role_raised_with_sql_counts_nothing(world: Custos) -> None:
    # A DBA makes the data scientist a privacy officer behind custos' back, to count
    # anything for a "legal process": the row is not what the ledger set, so it is refused.
    with world.db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE principals SET role = 'privacy_officer' WHERE id = 'emp-9001'")
        )
    world.directory.invalidate()
    grouped = QueryRequest(
        "emp-9001", "app", "SELECT city, count(*) FROM logins GROUP BY city", "legal_process"
    )
    with pytest.raises(QueryRefused, match="ledger"):
        world.query(grouped)
    (refusal,) = [e for e in _entries(world) if e["type"] == "aggregate_decision"]
    assert (refusal["decision"], refusal["reasons"]) == ("deny", ["authority-mismatch"])
    assert refusal["role"] is None
    (alert,) = world.casebook.alerts()
    assert (alert.rule, alert.severity, alert.principals) == (
        "authority_mismatch",
        "critical",
        ("emp-9001",),
    )
    assert refusal["id"] in alert.events


def test_aggregate_decisions_replay_to_their_logged_outcome(world: Custos) -> None:
    world.query(
        QueryRequest(
            "emp-9001", "app", "SELECT city, count(*) FROM logins GROUP BY city", "product_debug"
        )
    )
    with pytest.raises(QueryRefused):
        world.query(
            QueryRequest(
                "emp-9001", "app", "SELECT city, count(*) FROM logins GROUP BY city", "support"
            )
        )
    indexes = [i for i, e in enumerate(_entries(world)) if e["type"] == "aggregate_decision"]
    replayed = {r.index: r for r in world.verify_authority().results}
    assert len(indexes) == 2
    assert all(replayed[i].same for i in indexes)
    assert [replayed[i].logged["decision"] for i in indexes] == ["allow", "deny"]
    assert world.verify_authority().projection.findings == []


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.decimals()
    | st.datetimes()
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.ip_addresses(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(_VALUES)
def test_every_database_value_becomes_strict_json(value: object) -> None:
    shown = json_value(value)
    assert json.loads(json.dumps(shown, allow_nan=False)) == shown


def test_plain_columns_of_a_pinned_subject_are_still_decided(world: Custos) -> None:
    # When did the journalist log in? Only plain columns, yet about her: decided as her
    # account data, so source protection refuses the leak hunt here too.
    when = QueryRequest(
        "emp-2001",
        "app",
        "SELECT login_at FROM logins WHERE user_id = 'user-42'",
        "internal_investigation",
        "T-7",
    )
    with pytest.raises(QueryRefused, match="source protection"):
        world.query(when)
    support = world.query(
        QueryRequest(
            "emp-1001",
            "app",
            "SELECT login_at FROM logins WHERE user_id = 'user-1'",
            "support",
            "T-1",
        )
    )
    assert len(support.rows) == 3
    assert [(d.request.category, d.outcome) for d in support.decisions] == [("profile", "allow")]


def test_queries_from_several_threads_are_each_decided_and_released(world: Custos) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: world.query(SUPPORT), range(8)))
    assert all(len(r.rows) == 3 for r in results)
    releases = [e for e in _entries(world) if e["type"] == "sql_release"]
    assert sorted(r["id"] for r in releases) == sorted({r["id"] for r in releases})
    assert len(releases) == 8
    assert {r.release_index for r in results} == {
        i for i, e in enumerate(_entries(world)) if e["type"] == "sql_release"
    }


def test_a_repeated_text_is_decided_again_and_follows_a_changed_map(
    world: Custos, home: Path
) -> None:
    # Analyses are kept by text: the decisions and the release are never kept with them.
    first = world.query(SUPPORT)
    start = world.ledger.size()
    again = world.query(SUPPORT)
    assert again.rows == first.rows
    assert [e["type"] for e in _entries(world, start)] == ["decision", "decision", "sql_release"]
    # A changed map is a new analysis: the same text now runs with the new coarse form.
    text = source_yaml("app", "duckdb:data/app.duckdb", "logins").replace(
        "ip: ip_history", "ip: {category: ip_history, coarse: none}"
    )
    (home / "sources.yaml").write_text(text, encoding="utf-8")
    changed = world.query(SUPPORT)
    assert [row[1] for row in changed.rows] == [None] * len(first.rows)
    assert changed.sql_digest != first.sql_digest
