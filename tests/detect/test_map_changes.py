"""Data map changes that weaken protection raise ``data_map_weakened``: maps written to
``sources.yaml`` and taken in through ``Custos.data_map`` (what ``custos sql`` and ``custos
sources check`` call), ledgered, then read back from the ledger by detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos, QueryRequest
from custos.detect import run_detection
from custos.detect.map_changes import KINDS, MapHistory
from tests.sql.world import make_duckdb, source_yaml, sql_home

APP = "postgresql://reader@127.0.0.1:5432/app"
COLUMNS = {
    "login_at": "plain",
    "ip": "ip_history",
    "city": "{category: location, coarse: none}",
    "lat": "{category: location, coarse: grid}",
    "email": "contact",
    "note": "{category: content, coarse: none}",
}


def source(
    name: str = "app",
    url: str = APP,
    table: str = "public.logins",
    subject: str = "user_id",
    file: str | None = None,
    **changes: str | None,
) -> list[str]:
    """The lines of one source mapping one login table; ``changes`` replace (or, as None,
    drop) columns of :data:`COLUMNS`."""
    columns = {**COLUMNS, **changes}
    lines = [f"  {name}:", f"    url: {url!r}", "    tables:", f"      {table}:"]
    lines.append(f"        subject: {subject}")
    if file:
        lines.append(f"        file: {file!r}")
    lines.append("        columns:")
    lines += [f"          {c}: {kind}" for c, kind in columns.items() if kind is not None]
    return lines


def use(system: Custos, *sources: list[str]) -> int:
    """Write ``sources.yaml`` and take it in as ``custos sql`` does; the ledger index of the
    ``data_map`` entry it made."""
    home = system.settings.home
    text = "sources:\n" + "".join(line + "\n" for lines in sources for line in lines)
    new = home / "sources.yaml.new"
    new.write_text(text, encoding="utf-8")
    # A new file (a new inode), as an editor saving it would: the map in force is re-read.
    os.replace(new, home / "sources.yaml")
    before = system.ledger.size()
    system.data_map()
    entries = [
        i for i, raw in system.ledger.entries(before, system.ledger.size()) if b'"data_map"' in raw
    ]
    assert len(entries) == 1, "the map was not ledgered anew"
    return entries[0]


def alerts(system: Custos) -> list[dict[str, Any]]:
    return [a.to_dict() for a in system.detect().alerts if a.rule == "data_map_weakened"]


def one(system: Custos, entry: int) -> dict[str, Any]:
    (alert,) = [a for a in alerts(system) if a["events"] == [f"ledger-{entry}"]]
    return alert


@pytest.fixture
def first(system: Custos) -> int:
    entry = use(system, source())
    assert alerts(system) == []  # a first map weakens nothing
    return entry


def test_a_category_column_made_plain_is_critical(system: Custos, first: int) -> None:
    entry = use(system, source(ip="plain"))
    alert = one(system, entry)
    assert alert["severity"] == "critical"
    assert alert["principals"] == []
    assert alert["subjects"] == []
    text = alert["explanation"]
    assert (
        f"public.logins.ip in source app: ip_history (coarse ip_prefix) -> plain (ledger entry "
        f"{first})" in text
    )
    assert f"ledger entry {entry}" in text
    assert "no decision" in text
    assert "sources.yaml" in text
    assert "names no author" in text
    # Its own case, titled by the rule: it names nobody.
    case = system.casebook.case(alert["case"])
    assert (case.title, case.principal) == ("data map weakened", "(none)")
    # A plain content column is high, not critical: content neither locates nor is sensitive.
    entry = use(system, source(ip="plain", note="plain"))
    alert = one(system, entry)
    assert alert["severity"] == "high"
    assert (
        "public.logins.note in source app: content (coarse none) -> plain" in alert["explanation"]
    )
    assert "1 change" in alert["explanation"]


def test_a_move_to_a_less_guarded_category(system: Custos, first: int) -> None:
    entry = use(system, source(lat="{category: content, coarse: none}", email="profile"))
    alert = one(system, entry)
    # Off the locating categories: high; between two ordinary ones: medium.
    assert alert["severity"] == "high"
    text = alert["explanation"]
    assert "2 changes" in text
    assert (
        "public.logins.lat in source app: location (coarse grid) -> content (coarse none)" in text
    )
    assert "decided as content" in text
    assert "public.logins.email in source app: contact (coarse email_mask) -> profile" in text
    assert text.index(".lat ") < text.index(".email ")  # the worst first


def test_a_coarse_form_that_shows_more(system: Custos, first: int) -> None:
    entry = use(
        system,
        source(
            city="{category: location, coarse: grid}",
            lat='{category: location, coarse: {postgres: "CAST({col} AS TEXT)"}}',
            email='{category: contact, coarse: {postgres: "left({col}, 3)"}}',
        ),
    )
    alert = one(system, entry)
    assert alert["severity"] == "critical"
    text = alert["explanation"]
    assert (
        "public.logins.lat in source app: location (coarse grid) -> location (coarse custom "
        "SQL that is the column itself)" in text
    )
    assert "the precise value leaves" in text
    assert "location (coarse none) -> location (coarse grid)" in text
    assert "contact (coarse email_mask) -> contact (coarse custom SQL)" in text


def test_a_changed_subject_key_is_critical(system: Custos, first: int) -> None:
    entry = use(system, source(subject="email", email="subject", user_id="plain"))
    alert = one(system, entry)
    assert alert["severity"] == "critical"
    text = alert["explanation"]
    assert "public.logins in source app: subject key user_id -> email" in text
    assert "user_id is now plain here" in text
    assert "decided for whoever email names" in text


def test_a_second_source_on_the_same_data(system: Custos, first: int) -> None:
    other = "postgresql://writer@127.0.0.1:5432/app"
    entry = use(system, source(), source("app2", other, "logins", ip="plain"))
    alert = one(system, entry)
    assert alert["severity"] == "critical"
    text = alert["explanation"]
    # The bare name is public.logins of the same database, whatever the source is called.
    assert "logins.ip in source app2: ip_history (coarse ip_prefix) -> plain (as " in text
    assert "source app2: connects as role writer where source app connected as reader" in text
    # Another database is other data: nothing to compare it with.
    elsewhere = "postgresql://reader@127.0.0.1:5432/other"
    use(system, source(), source("app3", elsewhere, "logins", ip="plain"))
    assert [a["events"] for a in alerts(system)] == [[f"ledger-{entry}"]]


def test_removal_is_no_weakening_but_mapping_it_again_weaker_is(system: Custos, first: int) -> None:
    use(system, source(ip=None, note=None))  # columns gone: queries naming them are refused
    use(system, ["  app:", f"    url: {APP!r}", "    tables: {}"])  # the table gone
    use(system, source("other", "postgresql://reader@127.0.0.1:5432/other"))  # the source gone
    assert alerts(system) == []
    entry = use(system, source(ip="plain"))
    alert = one(system, entry)
    assert (
        f"ip_history (coarse ip_prefix) -> plain (ledger entry {first})" in (alert["explanation"])
    )


def test_a_wider_parquet_glob_reads_files_mapped_stronger(system: Custos) -> None:
    lake = source("lake", "duckdb:", "logins", file="data/logins/*.parquet")
    use(system, lake)
    wide = source("lake2", "duckdb:", "everything", file="data/*/*.parquet", ip="plain")
    entry = use(system, lake, wide)
    alert = one(system, entry)
    assert (
        "everything.ip in source lake2: ip_history (coarse ip_prefix) -> plain"
        in (alert["explanation"])
    )


def test_strengthening_raises_nothing(system: Custos, first: int) -> None:
    use(
        system,
        source(
            login_at="{category: profile, coarse: day}",  # plain -> a category
            ip="{category: ip_history, coarse: none}",  # a coarse form -> none
            email="ip_history",  # contact -> a locating category
            lat="{category: location, coarse: none}",
            extra="messages",  # a new column
        ),
        source("more", "postgresql://reader@127.0.0.1:5432/app", "public.other", ip="plain"),
    )
    assert alerts(system) == []


def test_a_ledgered_body_that_is_no_map_alerts_and_changes_nothing(
    system: Custos, first: int
) -> None:
    entry = system.ledger.append(
        {"type": "data_map", "time": "2026-12-07T09:00:00Z", "digest": "0" * 64, "body": []}
    ).index
    alert = one(system, entry)
    assert alert["severity"] == "high"
    assert "not a data map's body" in alert["explanation"]
    # The maps after it are held against the last one custos could read.
    weak = use(system, source(ip="plain"))
    assert f"-> plain (ledger entry {first})" in one(system, weak)["explanation"]


def test_continuous_detection_reads_only_new_map_entries(system: Custos, first: int) -> None:
    home = system.settings.home
    weak = use(system, source(ip="plain"))
    run = system.detect()
    assert run.raised == 1
    position = _meta(home)["position"]
    assert int(position) >= weak
    # Nothing new: the same alert, not raised again, the position where it was.
    run = system.detect()
    assert run.raised == 0
    assert [a.rule for a in run.alerts].count("data_map_weakened") == 1
    worse = use(system, source(ip="plain", lat="plain"))
    run = system.detect()
    assert run.raised == 1
    mine = [a for a in run.alerts if a.rule == "data_map_weakened"]
    assert [list(a.events) for a in mine] == [[f"ledger-{weak}"], [f"ledger-{worse}"]]
    assert "public.logins.lat" in mine[1].explanation
    assert "public.logins.ip" not in mine[1].explanation  # not again: it was plain already
    assert int(_meta(home)["position"]) > int(position)
    # A mirror that does not hold what the ledger holds is read again from the start, and
    # finds the same alerts (the same fingerprints: nothing raised twice).
    with duckdb.connect(str(home / "detect" / "mirror.duckdb")) as con:
        con.execute("UPDATE map_meta SET value = '0:forged' WHERE key = 'tip'")
        con.execute("DELETE FROM map_changes")
    run = system.detect()
    assert run.raised == 0
    assert len([a for a in run.alerts if a.rule == "data_map_weakened"]) == 2
    # Without the mirror (a full load), the same.
    full = run_detection(system.db, system.directory, home=None)
    assert sorted(a.events[0] for a in full.alerts if a.rule == "data_map_weakened") == sorted(
        [f"ledger-{weak}", f"ledger-{worse}"]
    )


def _meta(home: Path) -> dict[str, str]:
    with duckdb.connect(str(home / "detect" / "mirror.duckdb"), read_only=True) as con:
        return dict(con.execute("SELECT key, value FROM map_meta").fetchall())


# --- the fold, in pieces or at once -------------------------------------------------------

_KINDS = st.sampled_from(
    [
        None,
        {"category": None, "subject": False, "coarse": None},
        *(
            {"category": c, "subject": False, "coarse": {"name": f, "sql": {"postgres": s}}}
            for c in ("ip_history", "contact", "profile")
            for f, s in (("none", "NULLIF({col}, {col})"), ("custom", "{col}"), ("day", "x"))
        ),
    ]
)


def _body(columns: dict[str, Any], url: str, subject: str) -> dict[str, Any]:
    mapped = {c: m for c, m in columns.items() if m is not None}
    mapped[subject] = {"category": None, "subject": True, "coarse": None}
    table = {"subject": subject, "file": None, "columns": mapped}
    return {"sources": {"app": {"url": url, "dialect": "postgres", "tables": {"t": table}}}}


_MAPS = st.lists(
    st.builds(
        _body,
        st.fixed_dictionaries({"a": _KINDS, "b": _KINDS}),
        st.sampled_from([APP, "postgresql://other@127.0.0.1:5432/app"]),
        st.sampled_from(["user_id", "owner_id"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MAPS, st.integers(min_value=0, max_value=8))
def test_the_fold_kept_between_runs_finds_what_one_fold_finds(
    maps: list[dict[str, Any]], cut: int
) -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    grave = ("ip_history",)
    whole = MapHistory(grave)
    at_once = [c for n, body in enumerate(maps) for c in whole.follow(n, when, "d", body)]
    first = MapHistory(grave)
    found = [c for n, body in enumerate(maps[:cut]) for c in first.follow(n, when, "d", body)]
    again = MapHistory(grave)
    again.load(first.dump())
    found += [
        c
        for n, body in enumerate(maps[cut:], start=min(cut, len(maps)))
        for c in again.follow(n, when, "d", body)
    ]
    assert found == at_once
    assert {c.kind for c in found} <= set(KINDS)
    # The same map twice in a row changes nothing the second time.
    assert whole.follow(len(maps), when, "d", maps[-1]) == []


def test_through_the_cli(home: Path) -> None:
    """``custos sources check`` takes each map in (and ledgers it); ``custos detect`` alerts."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "custos", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )

    assert run("init").returncode == 0
    make_duckdb(home / "data" / "app.duckdb")
    columns = {"city": COLUMNS["city"], "lat": COLUMNS["lat"], "note": None}
    for ip in ("ip_history", "plain"):
        lines = source("app", "duckdb:data/app.duckdb", "logins", **columns, ip=ip)
        (home / "sources.yaml").write_text("sources:\n" + "\n".join(lines) + "\n")
        checked = run("sources", "check", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    found = run("detect", "--json")
    assert found.returncode == 0, found.stderr
    (alert,) = [a for a in json.loads(found.stdout) if a["rule"] == "data_map_weakened"]
    assert alert["severity"] == "critical"
    assert "main.logins" not in alert["explanation"]  # named as the map writes it
    assert (
        "logins.ip in source app: ip_history (coarse ip_prefix) -> plain" in (alert["explanation"])
    )


def test_the_alert_names_who_first_queried_under_the_weaker_map(system: Custos) -> None:
    """A real DuckDB source and Custos.query: the first query decided under the weakened
    map is named, found by a later continuous run (the same alert, now saying who)."""

    home = sql_home(system)
    use_text = source_yaml("app", "duckdb:data/app.duckdb", "logins")
    pinned = "SELECT login_at, ip FROM logins WHERE user_id = 'user-1'"
    system.query(QueryRequest("emp-1001", "app", pinned, "support", "T-1"))  # map v1
    assert alerts(system) == []
    new = home / "sources.yaml.new"
    new.write_text(use_text.replace("ip: ip_history", "ip: plain"), encoding="utf-8")
    os.replace(new, home / "sources.yaml")
    weak = system.ledger.size()
    system.data_map()
    (alert,) = alerts(system)
    assert alert["events"] == [f"ledger-{weak}"]
    assert "No guarded SQL query has been decided under it yet" in alert["explanation"]
    # Now the precise addresses leave on the same query: ip is plain data.
    result = system.query(QueryRequest("emp-1002", "app", pinned, "support", "T-2"))
    assert any(str(v).startswith("198.51.100.1") for row in result.rows for v in row)
    (again,) = alerts(system)
    assert again["id"] == alert["id"]  # the same alert, its words brought up to date
    text = again["explanation"]
    assert "The first guarded SQL query decided under it was emp-1002 (" in text
    first_use = next(
        i
        for i, raw in system.ledger.entries(weak + 1, system.ledger.size())
        if b'"data_map":"' in raw
    )
    assert f"(ledger entry {first_use}): the first person to ask" in text
    assert "No guarded SQL query" not in text


def test_a_weakened_map_put_back_after_a_fix_is_ledgered_and_alerts_again(
    system: Custos, first: int
) -> None:
    """v1 -> v2 (weaker) -> v1 (the fix) -> v2 again: each change of the map in force is a
    new ``data_map`` entry (``use`` asserts one each time), and the weakening put back is
    alerted again, under its own entry."""
    weak = use(system, source(ip="plain"))
    fixed = use(system, source())
    again = use(system, source(ip="plain"))
    assert first < weak < fixed < again
    assert one(system, weak)["severity"] == "critical"
    assert one(system, again)["severity"] == "critical"
    assert "public.logins.ip in source app" in one(system, again)["explanation"]
    # The same map again, unchanged: nothing new is ledgered.
    before = system.ledger.size()
    system.data_map()
    assert system.ledger.size() == before
