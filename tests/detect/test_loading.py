"""Loading the custos database into DuckDB for detection: the four tables hold exactly what
the directory and the event store hold, on either backend (the database writes the rows
itself; nothing here is made into Python objects one row at a time)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos
from custos.detect import EventStore, connect, load_store
from custos.errors import ConfigurationError
from tests.factories import load_org, org

WORLD = org(
    principals=[
        {"id": "emp-1", "role": "support_agent"},
        {
            "id": "emp-2",
            "role": "trust_safety_investigator",
            "team": "trust & safety, EU",
            "manager": "emp-1",
            "status": "leaving",
            "kind": "contractor",
            "role_since": "2026-02-03T04:05:06.789012Z",
        },
    ],
    subjects=[
        {"id": "user-1", "jurisdiction": "US"},
        {"id": "user-2", "jurisdiction": "DE", "protected": ["journalist", "minor"]},
        {
            "id": "user-3",
            "jurisdiction": "US",
            "protected": ["employee_account"],
            "employee": "emp-2",
        },
        {"id": "user-4", "jurisdiction": "US", "employee": "emp-1"},
    ],
    tickets=[
        {
            "id": "T-1",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1",
            "status": "open",
        },
        {
            "id": "T-2",
            "kind": "trust_safety",
            "subject": "user-2",
            "assignee": "emp-2",
            "status": "closed",
            "opened": "2026-01-05T10:00:00Z",
            "closed": "2026-01-06T11:30:00.000001Z",
            "opened_by": "emp-2",
        },
    ],
)


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _table(con: Any, sql: str) -> set[tuple[Any, ...]]:
    return set(con.execute(sql).fetchall())


def test_the_directory_arrives_as_stored(system: Custos) -> None:
    load_org(system, WORLD)
    con = connect()
    assert load_store(con, EventStore(system.db), system.directory) == 0
    directory = system.directory
    assert _table(con, "SELECT * FROM principals") == {
        (p.id, p.kind, p.role, p.team, p.manager, p.country, p.status, _naive(p.role_since))
        for p in directory.principals()
    }
    assert _table(con, "SELECT id, protected, employee FROM subjects") == {
        (s.id, "|".join(s.protected) or None, s.employee) for s in directory.subjects()
    }
    assert _table(con, "SELECT * FROM tickets") == {
        (t.id, t.kind, t.subject, t.assignee, t.status, _naive(t.opened), _naive(t.closed),
         t.opened_by)
        for t in directory.tickets()
    }  # fmt: skip
    # The rows above are those of the world, not empty on both sides.
    assert con.execute("SELECT count(*) FROM tickets WHERE closed IS NOT NULL").fetchone() == (1,)
    assert con.execute("SELECT role_since FROM principals WHERE id = 'emp-2'").fetchone() == (
        datetime(2026, 2, 3, 4, 5, 6, 789012),
    )


def test_an_empty_store_loads_empty_tables(system: Custos) -> None:
    con = connect()
    assert load_store(con, EventStore(system.db), system.directory) == 0
    for table in ("events", "principals", "subjects", "tickets"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_a_temporary_folder_that_cannot_take_the_files_is_a_clear_error(
    system: Custos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    with pytest.raises(ConfigurationError) as refused:
        load_store(connect(), EventStore(system.db), system.directory)
    assert str(not_a_folder) in refused.value.message
    assert refused.value.hint is not None
