"""Accesses custos's guarded path explained as it decided them (``explained`` in the ledger).

Detection takes them as explained without joining them to the tickets again. That must change
no finding where the directory agrees with what the guarded path saw; the explanation is only
believed from custos's own ledger; and it stands as decided when the directory changes later.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from custos.access import Custos
from custos.detect import DetectConfig, Detector, EventStore, connect, load_store
from custos.directory import read_directory_file
from custos.policy import AccessRequest
from custos.sim import simulate
from tests.detect.office import Office, as_decided, at, findings, rules_for
from tests.factories import APPROVALS_WORLD, load_org


def _rules(con: duckdb.DuckDBPyConnection, principal: str) -> set[str]:
    return {f.rule for f in Detector(con, DetectConfig()).run() if principal in f.principals}


@pytest.mark.parametrize("seed", [4, 9])
def test_custos_own_explanations_change_no_finding(
    system: Custos, tmp_path: Path, seed: int
) -> None:
    world = tmp_path / "world"
    simulate(world, employees=60, days=21, seed=seed)
    directory = read_directory_file(world / "directory.yaml")
    system.directory.merge(directory)
    tickets = {t.id: t for t in directory.tickets}
    lines = (world / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [as_decided(json.loads(line), tickets) for line in lines]
    EventStore(system.db).append(events, from_ledger=True)
    explained = sum(1 for e in events if e.get("explained") == "ticket")
    assert explained > 0.75 * len(events)  # as in a custos deployment: most work is routine
    assert any(e.get("explained") == "own_ticket" for e in events)

    con = connect(2)
    try:
        load_store(con, EventStore(system.db), system.directory)
        row = con.execute("SELECT count(*) FROM events WHERE explained = 'ticket'").fetchone()
        assert row == (explained,)
        decided = findings(con)
        assert decided  # the scenarios are found
        # Fewer explained than the share at which the residue is copied first: the other plan.
        con.execute("UPDATE events SET explained = NULL WHERE hash(id) % 3 = 0")
        partly = findings(con)
        con.execute("UPDATE events SET explained = NULL")
        every_one_checked = findings(con)
    finally:
        con.close()
    assert decided == every_one_checked
    assert partly == every_one_checked


def test_the_guarded_path_writes_and_the_feed_keeps_the_explanation(system: Custos) -> None:
    legal = {
        "id": "T-90",
        "kind": "legal_process",
        "subject": "user-1",
        "assignee": "emp-4001",
        "status": "open",
        "opened_by": "legal",
    }
    load_org(system, {**APPROVALS_WORLD, "tickets": [*APPROVALS_WORLD["tickets"], legal]})
    routine = system.decide(
        AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11")
    )
    exported = system.decide(
        AccessRequest("emp-4001", "user-1", "profile", "legal_process", "export", ticket="T-90")
    )
    system.feed_events()
    con = connect(1)
    try:
        load_store(con, system.events, system.directory)
        rows = dict(con.execute("SELECT id, explained FROM events").fetchall())
    finally:
        con.close()
    assert rows[routine.event_id or ""] == "ticket"
    assert exported.allowed
    assert rows[exported.event_id or ""] is None  # exports are always reviewed


def test_an_imported_event_cannot_claim_the_guarded_paths_explanation(system: Custos) -> None:
    office = Office()
    ticket = office.ticket("emp-4", "jour-1")  # someone else's ticket about the journalist
    office.access(
        "emp-3", "jour-1", at(3, 11), "ip_history", ticket=ticket,
        type="decision", explained="ticket",
    )  # fmt: skip
    assert "protected_subject_access" in rules_for(office.detect(system), "emp-3")
    (event,) = EventStore(system.db).get([office.events[-1]["id"]])
    assert event.extras()["explained"] == "ticket"  # kept as what it said, believed nowhere


def test_an_explanation_stands_as_decided_when_the_ticket_changes_later(
    system: Custos,
) -> None:
    office = Office()
    ticket = office.ticket("emp-3", "jour-1")
    office.access("emp-3", "jour-1", at(3, 11), "ip_history", ticket=ticket)
    decided = {**office.events[-1], "type": "decision", "explained": "ticket"}
    office.events.pop()
    office.tickets[-1]["assignee"] = "emp-4"  # reassigned after the access
    office.detect(system)
    EventStore(system.db).append([decided], from_ledger=True)
    con = connect(1)
    try:
        load_store(con, system.events, system.directory)
        as_decided = {
            f.rule for f in Detector(con, DetectConfig()).run() if "emp-3" in f.principals
        }
        con.execute("UPDATE events SET explained = NULL")
        as_now = {f.rule for f in Detector(con, DetectConfig()).run() if "emp-3" in f.principals}
    finally:
        con.close()
    # The directory now says the ticket was never theirs; the ledger says custos checked it
    # when it let the access through. Detection keeps to the ledger.
    assert "protected_subject_access" in as_now
    assert "protected_subject_access" not in as_decided
