"""Importing access events: whole file or nothing, every bad line named, rejects set aside."""

from __future__ import annotations

import json
import os
import string
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.access.journal import decision_entry
from custos.access.read import release_entry
from custos.detect import AccessEvent, EventStore, connect, load_store, parse_event, parse_lines
from custos.errors import ValidationFailed
from custos.policy import AccessRequest
from custos.textfiles import read_lines
from custos.vocabulary import ACTIONS, CATEGORIES, OUTCOMES, PURPOSES
from tests.factories import SUPPORT_WORLD, load_org


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "ev-1",
        "time": "2026-01-05T10:03:00Z",
        "principal": "emp-1001",
        "action": "read",
        "subject": "user-42",
        "category": "ip_history",
        "purpose": "support",
        "ticket": "T-9001",
        "decision": "allow",
        "precision": "coarse",
        "records": 12,
        "source": "admin-console",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def lines(*events: dict[str, Any] | str) -> list[str]:
    return [e if isinstance(e, str) else json.dumps(e) for e in events]


def test_design_example_round_trips_and_keeps_unknown_fields(system: Custos) -> None:
    store = EventStore(system.db)
    report = store.import_lines(lines(event(tool_version="3.1", grant="G-7")), "log.jsonl")
    assert (report.added, report.unchanged, report.rejected) == (1, 0, 0)
    (stored,) = store.get(["ev-1"])
    body = stored.to_dict()
    assert body["tool_version"] == "3.1"
    assert body["grant"] == "G-7"
    assert body["records"] == 12
    assert body["time"] == "2026-01-05T10:03:00Z"


def test_importing_twice_changes_nothing(system: Custos) -> None:
    store = EventStore(system.db)
    data = lines(event(), event(id="ev-2"))
    assert store.import_lines(data, "a").added == 2
    again = store.import_lines(data, "a")
    assert (again.added, again.unchanged) == (0, 2)
    assert store.count() == 2


def test_an_id_stored_already_as_another_access_refuses_the_whole_import(
    system: Custos,
) -> None:
    store = EventStore(system.db)
    store.import_lines(lines(event()), "a")
    rewritten = event(action="export", precision="precise", records=5000)
    with pytest.raises(ValidationFailed) as caught:
        store.import_lines(lines(event(id="ev-new"), rewritten), "b")
    assert caught.value.problems == ["event 'ev-1' is stored already as a different access"]
    assert store.count() == 1
    (kept,) = store.get(["ev-1"])
    assert (kept.action, kept.records) == ("read", 12)


def test_counts_per_utc_day_by_decision(system: Custos) -> None:
    store = EventStore(system.db)
    store.import_lines(
        lines(
            event(id="ev-1", time="2026-01-05T00:00:00Z"),
            event(id="ev-2", time="2026-01-05T23:59:59.999Z", decision="deny", ticket=None),
            event(id="ev-3", time="2026-01-06T00:00:00Z"),
            # 23:30 in New York is already the 6th in UTC.
            event(id="ev-4", time="2026-01-05T23:30:00-05:00", decision="deny", ticket=None),
            event(id="ev-5", time="2026-01-04T23:59:59Z"),
        ),
        "log.jsonl",
    )
    days = [date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)]
    assert store.per_day(days) == {
        date(2026, 1, 5): {"allow": 1, "deny": 1},
        date(2026, 1, 6): {"allow": 1, "deny": 1},
        date(2026, 1, 7): {},
    }


def test_every_bad_line_is_reported_by_number_and_nothing_is_stored(system: Custos) -> None:
    store = EventStore(system.db)
    data = lines(
        event(),  # 1 good
        "{not json",  # 2
        event(id="ev-3", principal=...),  # 3 missing field
        event(id="ev-4", action="peek"),  # 4 bad enum
        event(id="ev-5", time="2026-01-05T10:03:00"),  # 5 no zone
        event(id="ev-6", time="yesterday"),  # 6 not a time
        "[1, 2]",  # 7 not an object
        event(id="ev-1"),  # 8 duplicate id
        event(id="ev-9", records=-3),  # 9 negative count
        "",  # 10 blank: skipped
        json.dumps(event(id="ev-11", score=float("nan"))),  # 11 NaN (Python writes it)
        event(id="ev-12", records=2**70),  # 12 beyond any store's integers
        event(id="ev-13", time="9999-12-31T23:59:59-05:00"),  # 13 past year 9999 in UTC
        event(id="ev-14", time="2026-01-05"),  # 14 a date, not a time
    )
    with pytest.raises(ValidationFailed) as caught:
        store.import_lines(data, "log.jsonl")
    problems = caught.value.problems
    assert [p.split(":")[1].strip() for p in problems] == [
        f"line {n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)
    ]
    assert "field 'principal': missing" in problems[1]
    assert "field 'action'" in problems[2]
    assert "time zone" in problems[3]
    assert "ISO 8601" in problems[4]
    assert "duplicate id (first on line 1)" in problems[6]
    assert "not valid JSON" in problems[8]
    assert "field 'records'" in problems[9]
    assert "out of range" in problems[10]
    assert "time zone" in problems[11]
    assert store.count() == 0


def test_lines_split_only_at_line_feeds_and_a_byte_order_mark_is_dropped(
    system: Custos, tmp_path: Path
) -> None:
    # U+2028 and U+0085 inside JSON strings are legal; str.splitlines() cut lines there.
    first = json.dumps(event(note="a\u2028b"), ensure_ascii=False)
    second = json.dumps(event(id="ev-2", note="c\u0085d"), ensure_ascii=False)
    path = tmp_path / "log.jsonl"
    path.write_bytes(("\ufeff" + first + "\r\n" + second + "\r\n").encode())
    read = read_lines(path, "an events file")
    assert read[:2] == [first, second]
    report = EventStore(system.db).import_lines(read, "log.jsonl")
    assert report.added == 2


def test_errors_never_repeat_the_bad_value(system: Custos) -> None:
    secret = "203.0.113.77"
    with pytest.raises(ValidationFailed) as caught:
        EventStore(system.db).import_lines(lines(event(subject=secret + " x")), "log")
    assert secret not in str(caught.value)


def test_rejects_file_takes_the_good_lines_and_sets_bad_ones_aside(
    system: Custos, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    data = lines(event(), "{oops", event(id="ev-2", decision="maybe"), event(id="ev-3"))
    report = EventStore(system.db).import_lines(data, "log", rejects=rejects)
    assert (report.added, report.rejected) == (2, 2)
    assert rejects.read_text().splitlines() == [data[1], data[2]]
    assert os.stat(rejects).st_mode & 0o777 == 0o600


def test_append_takes_dicts_and_models_all_or_nothing(system: Custos) -> None:
    store = EventStore(system.db)
    model = parse_event(event(id="ev-m"))
    assert store.append([model, event(id="ev-d", decision="deny", precision=None)]).added == 2
    with pytest.raises(ValidationFailed) as caught:
        store.append([event(id="ev-x"), event(id="ev-y", category="dna")])
    assert caught.value.problems[0].startswith("event 1: field 'category'")
    assert store.count() == 2


ids = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=30).filter(
    lambda s: s[0].isalnum()
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
valid = st.fixed_dictionaries(
    {
        "id": ids,
        "time": times.map(lambda t: t.isoformat().replace("+00:00", "Z")),
        "principal": ids,
        "action": st.sampled_from(sorted(ACTIONS)),
        "subject": ids,
        "category": st.sampled_from(sorted(CATEGORIES)),
        "purpose": st.sampled_from(sorted(PURPOSES)),
        "decision": st.sampled_from(sorted(OUTCOMES)),
        "precision": st.sampled_from(["coarse", "precise", None]),
    },
    optional={"ticket": ids, "records": st.integers(0, 10**9), "source": ids, "note": st.text()},
)


@given(valid)
def test_any_valid_event_parses_and_round_trips(data: dict[str, Any]) -> None:
    parsed = parse_event(data)
    again = parse_event(parsed.to_dict())
    assert again == parsed
    assert again.extras() == parsed.extras()


@given(st.lists(st.one_of(st.text(max_size=80), valid.map(json.dumps)), max_size=8))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_parser_never_raises_and_accounts_for_every_line(raw: list[str]) -> None:
    result = parse_lines(raw, "fuzz")
    numbers = {n for n, _ in result.rejected}
    good = len(result.events)
    non_blank = sum(1 for line in raw if line.strip())
    assert good + len(numbers) == non_blank
    assert all(isinstance(e, AccessEvent) for e in result.events)


def test_custos_own_decisions_and_releases_feed_the_store(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    allowed = system.decide(AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"))
    refused = system.decide(AccessRequest("emp-1002", "user-42", "location", "support"))
    entries = [
        decision_entry(allowed, allowed.event_id or "", "custos"),
        release_entry(allowed, allowed.event_id or "", 3, 0, "custos"),
        decision_entry(refused, refused.event_id or "", "custos"),
    ]
    store = EventStore(system.db)
    assert store.append(entries).added == 3
    con = connect()
    assert load_store(con, store, system.directory) == 2
    rows = dict(con.execute("SELECT decision, records FROM events ORDER BY decision").fetchall())
    assert rows == {"allow": 3, "deny": None}


# What ``extra`` may hold for the two flags detection reads from it, and what each means: the
# export does in SQL what the rules' definitions say in Python (``is True``; truthy).
FLAG_VALUES: list[Any] = [True, False, None, 1, 0, 0.5, 0.0, "yes", "", [], [0], {}, {"a": 1}]
SOURCES = ["admin-console", 'a "quoted", comma\nand newline — é', None]


def test_the_store_exports_every_event_as_stored_for_detection(system: Custos) -> None:
    """Every combination of the flags' values and awkward sources, microsecond times, and
    custos releases (left out) against decisions and imported events of type release."""
    events: list[dict[str, Any]] = []
    for n, (flag, source) in enumerate(
        (flag, source) for flag in FLAG_VALUES for source in SOURCES
    ):
        body = event(id=f"ev-{n}", time=f"2026-01-05T10:03:{n % 60:02d}.{n:06d}Z")
        if source is None:
            body.pop("source")
        else:
            body["source"] = source
        body["break_glass"] = flag
        body["grant"] = flag
        if n % 3 == 0:
            body.pop("ticket")
            body.pop("records")
        events.append(body)
    # Custos releases (left out: their decision is the access), one of them for a decision
    # that has a count already (kept as it is), and things that only look like one (kept,
    # changing nothing stored): a release by another id, one about another subject, and
    # other types.
    events.append(event(id="ev-0:release", type="release", decision_id="ev-0", records=7))
    events.append(event(id="ev-rel", type="release", decision_id="ev-3", records=0))
    events.append(
        event(id="ev-6:release", type="release", decision_id="ev-6", subject="user-7", records=0)
    )
    events.append(event(id="ev-1:release", type="release", decision_id="ev-1", records=0))
    events.append(event(id="ev-typed", type="release", decision_id=7))
    events.append(event(id="ev-other", type="decision", decision_id="ev-1"))
    store = EventStore(system.db)
    store.append(events)
    con = connect()
    assert load_store(con, store, system.directory) == len(events) - 2
    loaded = {
        row[0]: row
        for row in con.execute(
            "SELECT id, time, ticket, records, source, break_glass, granted FROM events"
        ).fetchall()
    }
    assert not {"ev-0:release", "ev-1:release"} & set(loaded)
    assert {"ev-rel", "ev-6:release", "ev-typed", "ev-other"} <= set(loaded)
    for body in events:
        if body["id"] in ("ev-0:release", "ev-1:release"):
            continue
        _, moment, ticket, records, source, break_glass, granted = loaded[body["id"]]
        stored = parse_event(body)
        assert moment == stored.time.replace(tzinfo=None)
        assert (ticket, source) == (stored.ticket, stored.source)
        assert records == (7 if body["id"] == "ev-0" else stored.records)
        assert break_glass is (body.get("break_glass") is True)
        assert granted is bool(body.get("grant"))
