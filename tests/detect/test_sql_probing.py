"""Guarded SQL reaches detection: refused queries and refused counts, read from the ledger,
raise ``sql_probing`` (run through Custos.query on a real DuckDB source)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.access import Custos, QueryRequest
from custos.detect.config import DetectConfig
from custos.detect.sql_events import SQL_ENTRY_TYPES, sql_event
from custos.errors import ConfigurationError, QueryRefused, SqlRejected
from tests.sql.world import sql_home

#: What an insider tries when feeling for the analyzer's edges (every one is refused).
PROBES = (
    "SELECT ip FROM logins WHERE email LIKE 'jane%'",
    "SELECT user_id FROM logins WHERE ip LIKE '198.51.%'",
    "SELECT a.ip, b.ip FROM logins a JOIN logins b ON a.ip = b.ip",
    "SELECT user_id, city FROM logins WHERE city = 'Paris'",
    "DELETE FROM logins WHERE ip = '198.51.100.10'",
    "SELECT email FROM logins ORDER BY login_at",
)


@pytest.fixture
def world(system: Custos) -> Custos:
    sql_home(system)
    return system


def _refuse(system: Custos, principal: str, sql: str, purpose: str, ticket: str | None) -> None:
    with pytest.raises((QueryRefused, SqlRejected)):
        system.query(QueryRequest(principal, "app", sql, purpose, ticket))


def _sql_alerts(system: Custos) -> list[dict[str, object]]:
    return [a.to_dict() for a in system.detect().alerts if a.rule == "sql_probing"]


def test_repeated_refusals_raise_a_high_alert_naming_them(world: Custos) -> None:
    start = world.ledger.size()
    for sql in PROBES:
        _refuse(world, "emp-1001", sql, "support", "T-1")
    refused = [
        i
        for i, raw in world.ledger.entries(start, world.ledger.size())
        if b'"type":"sql_refused"' in raw
    ]
    assert len(refused) == len(PROBES)
    (alert,) = _sql_alerts(world)
    assert alert["severity"] == "high"
    assert alert["principals"] == ["emp-1001"]
    assert alert["subjects"] == []
    assert alert["events"] == [f"ledger-{i}" for i in refused]
    text = str(alert["explanation"])
    assert "emp-1001" in text
    assert f"{len(PROBES)} queries custos's SQL analyzer would not run" in text
    assert "query_refused" in text
    assert "sql_rejected" in text
    assert "on app" in text
    assert "60-minute window" in text
    # Never a value of the queries.
    assert "jane" not in text
    assert "198.51" not in text
    assert "Paris" not in text


def test_a_few_refusals_raise_nothing(world: Custos) -> None:
    for sql in PROBES[:4]:
        _refuse(world, "emp-1001", sql, "support", "T-1")
    for sql in PROBES[:4]:
        _refuse(world, "emp-1002", sql, "support", "T-2")
    assert _sql_alerts(world) == []


def test_a_count_refused_for_an_internal_investigation_is_critical(world: Custos) -> None:
    hunt = "SELECT ip, count(*) FROM logins GROUP BY ip"
    _refuse(world, "emp-2001", hunt, "internal_investigation", None)
    (alert,) = _sql_alerts(world)
    assert alert["severity"] == "critical"
    assert alert["principals"] == ["emp-2001"]
    text = str(alert["explanation"])
    assert "1 count the policies refused" in text
    assert "ip_history" in text
    assert "internal_investigation" in text
    assert "sources are hunted" in text
    # The same run again finds the same alert, not a second one.
    assert len(_sql_alerts(world)) == 1


def test_allowed_counts_and_queries_raise_nothing(world: Custos) -> None:
    for _ in range(6):
        world.query(QueryRequest("emp-9001", "app", "SELECT count(*) FROM logins", "product_debug"))
    world.query(
        QueryRequest(
            "emp-1001",
            "app",
            "SELECT login_at, ip FROM logins WHERE user_id = 'user-1'",
            "support",
            "T-1",
        )
    )
    assert _sql_alerts(world) == []


def test_the_threshold_and_window_come_from_the_config(world: Custos) -> None:
    for sql in PROBES[:3]:
        _refuse(world, "emp-1001", sql, "support", "T-1")
    assert _sql_alerts(world) == []
    config = world.settings.home / "config.toml"
    assert not config.exists() or "[detect]" not in config.read_text(encoding="utf-8")
    with config.open("a", encoding="utf-8") as out:
        out.write("\n[detect]\nsql_probing_refusals = 3\n")
    with Custos.open(world.settings.home) as reopened:
        (alert,) = [a for a in reopened.detect().alerts if a.rule == "sql_probing"]
    assert len(alert.events) == 3


def test_bad_sql_probing_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="sql_probing_refusals must be at least 1"):
        DetectConfig.from_section({"sql_probing_refusals": 0})
    with pytest.raises(ConfigurationError, match="sql_hunt_purposes must be a list"):
        DetectConfig.from_section({"sql_hunt_purposes": "internal_investigation"})


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["type", "time", "principal", "dataset", "purpose", "decision", "code", "category"]
        ),
        st.one_of(st.none(), st.integers(), st.text(max_size=30), st.sampled_from(SQL_ENTRY_TYPES)),
    ),
    st.integers(min_value=0, max_value=2**40),
)
def test_any_ledger_json_maps_to_a_row_or_none(entry: dict[str, object], index: int) -> None:
    row = sql_event(index, entry)
    if row is None:
        return
    assert entry["type"] in SQL_ENTRY_TYPES
    assert row["id"] == f"ledger-{index}"
    assert row["principal"] == entry["principal"]
    assert row["decision"] in {"deny", entry.get("decision")}
    if entry["type"] == "sql_refused":
        assert (row["kind"], row["action"], row["decision"]) == ("refused", "search", "deny")
