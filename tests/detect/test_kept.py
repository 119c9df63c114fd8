"""The kept classification (:class:`custos.detect.kept.Classification`) against a run that
keeps nothing: over a simulated organisation with every scenario, events arrive in batches,
some leave and come back changed, and tickets arrive, are reassigned, re-scoped, reopened or
deleted between runs. After every step the rules must find exactly what they find when every
event is classified afresh."""

from __future__ import annotations

import json
import random
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.detect import DetectConfig, Detector, EventStore, connect, load_store
from custos.detect.kept import Classification
from custos.directory import read_directory_file
from custos.sim import simulate
from tests.detect.office import as_decided, assert_kept_holds_a_fresh_pass, findings

TABLES = ("events", "principals", "subjects", "tickets")


@pytest.fixture(scope="module")
def world(module_system: Custos, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated organisation with every scenario, most events as custos decided them,
    stored in a custos home and written out as the four tables detection reads (Parquet)."""
    folder = tmp_path_factory.mktemp("kept")
    simulate(folder / "world", employees=60, days=21, seed=4)
    directory = read_directory_file(folder / "world" / "directory.yaml")
    module_system.directory.merge(directory)
    tickets = {t.id: t for t in directory.tickets}
    lines = (folder / "world" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [as_decided(json.loads(line), tickets) for line in lines]
    EventStore(module_system.db).append(events, from_ledger=True)
    con = connect(2)
    try:
        load_store(con, EventStore(module_system.db), module_system.directory)
        # A third of them as if imported, so both ways of classifying are exercised.
        con.execute("UPDATE events SET explained = NULL WHERE hash(id) % 3 = 0")
        files = {name: folder / f"{name}.parquet" for name in TABLES}
        for name, path in files.items():
            con.execute(f"COPY {name} TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return files


def _step(con: duckdb.DuckDBPyConnection, kept: Classification, fresh: bool, tell: bool) -> None:
    """Make ``events`` and ``tickets`` what ``want_events`` and ``want_tickets`` hold, telling
    ``kept`` about every event that leaves or arrives (a changed event leaves, then arrives),
    and, when ``tell``, which tickets were written (as the directory tells; else ``kept``
    compares them all with its snapshot)."""
    if fresh:
        con.execute("CREATE OR REPLACE TABLE events AS SELECT * FROM want_events")
        con.execute("CREATE OR REPLACE TABLE tickets AS SELECT * FROM want_tickets")
        assert kept.open()
        kept.start()
        return
    con.execute(
        """CREATE OR REPLACE TEMP TABLE gone AS
           SELECT e.* FROM events e LEFT JOIN want_events w USING (id)
           WHERE w.id IS NULL OR e.records IS DISTINCT FROM w.records"""
    )
    kept.remove("gone")
    con.execute("DELETE FROM events WHERE id IN (SELECT id FROM gone)")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE came AS
           SELECT * FROM want_events WHERE id NOT IN (SELECT id FROM events)"""
    )
    con.execute("INSERT INTO events SELECT * FROM came")
    kept.add("came")
    con.execute(
        """CREATE OR REPLACE TEMP TABLE written AS
           SELECT id FROM ((SELECT * FROM want_tickets EXCEPT SELECT * FROM tickets)
                           UNION ALL (SELECT * FROM tickets EXCEPT SELECT * FROM want_tickets))"""
    )
    con.execute("CREATE OR REPLACE TABLE tickets AS SELECT * FROM want_tickets")
    assert not kept.open()
    if kept.told:  # the tickets as they are now, and the ids of those that went
        kept.follow_tickets(
            "(SELECT * FROM tickets WHERE id IN (SELECT id FROM written))",
            removed="(SELECT id FROM written WHERE id NOT IN (SELECT id FROM tickets))",
        )
    else:
        kept.follow_tickets("written" if tell else None)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**31),
    steps=st.integers(2, 4),
    mode=st.sampled_from(["told", "compared", "compared where written"]),
    fold=st.booleans(),
)
def test_kept_classification_finds_what_a_fresh_one_finds(
    world: dict[str, Path], seed: int, steps: int, mode: str, fold: bool
) -> None:
    rng = random.Random(seed)
    con = connect(2)
    try:
        for name, path in world.items():
            prefix = "all_" if name in ("events", "tickets") else ""
            con.execute(f"CREATE TABLE {prefix}{name} AS SELECT * FROM read_parquet('{path}')")
        kept = Classification(con, DetectConfig(), "main", told=mode == "told")
        if fold:
            kept.slack = -(2**62)  # the activity's changes folded together on every run
        row = con.execute("SELECT min(time), max(time) FROM all_events").fetchone()
        assert row is not None
        first, last = row
        for step in range(1, steps + 1):
            final = step == steps
            cut = first + (last - first) * step / steps
            # Events up to the cut; some held back this time (they arrive later), some
            # with another count than they will finally have (a fold that comes later).
            held, recount = rng.randrange(7), rng.randrange(7)
            con.execute(
                f"""CREATE OR REPLACE TABLE want_events AS
                    SELECT * REPLACE (CASE WHEN NOT {final} AND hash(id, {recount}) % 11 = 0
                                           THEN coalesce(records, 1) + 7 ELSE records END
                                      AS records)
                    FROM all_events
                    WHERE time <= TIMESTAMP '{cut}'
                      AND ({final} OR hash(id, {held}) % 13 <> 0)"""
            )
            # Tickets known by then, some of them (before the last step) reassigned to
            # another principal, about another subject, of another kind, closed early,
            # opened by their assignee, or not there at all (deleted, or not yet arrived).
            salt = rng.randrange(1000)
            con.execute(
                f"""CREATE OR REPLACE TABLE want_tickets AS
                    WITH t AS (SELECT *, CASE WHEN {final} THEN 99
                                         ELSE hash(id, {salt}) % 40 END AS roll
                               FROM all_tickets
                               WHERE opened IS NULL OR opened <= TIMESTAMP '{cut}')
                    SELECT * EXCLUDE (roll) REPLACE (
                        CASE WHEN roll = 0 THEN 'emp-9999' ELSE assignee END AS assignee,
                        CASE WHEN roll = 1 THEN 'user-nobody' ELSE subject END AS subject,
                        CASE WHEN roll = 2 THEN 'legal_process' ELSE kind END AS kind,
                        CASE WHEN roll = 3 THEN opened ELSE closed END AS closed,
                        CASE WHEN roll = 4 THEN assignee ELSE opened_by END AS opened_by)
                    FROM t WHERE roll <> 5"""
            )
            _step(con, kept, fresh=step == 1, tell=mode != "compared")
            # The kept tables hold exactly what the passes over every event give ...
            assert_kept_holds_a_fresh_pass(con, kept)
            # ... and the rules find the same in them.
            as_kept = findings(con, kept)
            assert as_kept == findings(con)  # every event classified afresh
        assert as_kept  # the scenarios are found at the end
    finally:
        con.close()


def test_other_settings_classify_everything_again(world: dict[str, Path]) -> None:
    con = connect(2)
    try:
        for name, path in world.items():
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path}')")
        kept = Classification(con, DetectConfig(), "main")
        assert kept.open()
        kept.start()
        assert not Classification(con, DetectConfig(), "main").open()
        other = Classification(con, DetectConfig(retro_minutes=30), "main")
        assert other.open()  # emptied: the first pass means something else now
        row = con.execute(f"SELECT count(*) FROM {other.residue}").fetchone()
        assert row == (0,)
        other.start()
        shorter = DetectConfig(retro_minutes=30)
        as_kept = Detector(con, shorter).run(other)
        assert [f.to_dict() for f in as_kept] == [f.to_dict() for f in Detector(con, shorter).run()]
    finally:
        con.close()
