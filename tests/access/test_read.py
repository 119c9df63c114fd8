"""The guarded read: decide → log → release → log, fail closed, on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from custos.access import Custos
from custos.errors import LedgerUnavailable, StoreUnavailable
from custos.policy import AccessRequest
from custos.times import iso
from tests.factories import SUPPORT_WORLD, load_org

_DAY = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
LOGINS = [
    json.dumps(
        {
            "id": f"l-{n}",
            "kind": "login",
            "subject": "user-1",
            # Recent, so that no record is past retention (expired ones arrive shredded).
            "time": iso(_DAY - timedelta(days=10 - n)),
            "ip": f"198.51.100.{n}",
        }
    )
    for n in range(1, 6)
]
READ = AccessRequest("emp-1001", "user-1", "ip_history", "support", ticket="T-1")


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    system.ingest(LOGINS, "logins.jsonl")
    return system


def test_a_support_agent_reads_networks_never_addresses(world: Custos) -> None:
    before = world.ledger.size()
    result = world.read(READ)
    assert (result.decision.outcome, result.decision.precision) == ("allow", "coarse")
    assert [r["network"] for r in result.records] == ["198.51.100.0/24"] * 5
    assert all("ip" not in r for r in result.records)
    # Two entries, in order: the decision, then what was released.
    decision = json.loads(world.ledger.entry(before))
    release = json.loads(world.ledger.entry(before + 1))
    assert (decision["type"], decision["decision"]) == ("decision", "allow")
    assert (release["type"], release["records"], release["precision"]) == ("release", 5, "coarse")
    assert release["decision_id"] == decision["id"] == result.decision.event_id
    assert "198.51.100" not in world.ledger.entry(before + 1).decode()


def test_precise_needs_a_grant_and_releases_nothing_without_one(world: Custos) -> None:
    result = world.read(
        AccessRequest(
            "emp-1001", "user-1", "ip_history", "support", ticket="T-1", precision="precise"
        )
    )
    assert result.decision.outcome == "approval_required"
    assert result.records == []


def test_a_denied_read_releases_nothing_and_logs_only_the_decision(world: Custos) -> None:
    before = world.ledger.size()
    result = world.read(AccessRequest("emp-1001", "user-1", "ip_history", "support", ticket="T-2"))
    assert (result.decision.outcome, result.records) == ("deny", [])
    assert world.ledger.size() == before + 1


def _make_ledger_read_only(system: Custos) -> None:
    with system.db.engine.begin() as conn:
        if system.db.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER ro BEFORE INSERT ON ledger_entries "
                    "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION ro() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'read-only'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER ro BEFORE INSERT ON ledger_entries "
                    "FOR EACH ROW EXECUTE FUNCTION ro()"
                )
            )


def test_with_the_ledger_unwritable_reads_are_denied_and_return_nothing(world: Custos) -> None:
    _make_ledger_read_only(world)
    with pytest.raises(LedgerUnavailable) as refused:
        world.read(READ)
    # The database's own reason, first line only: no SQL, no values.
    assert "read-only" in str(refused.value)
    assert "INSERT" not in str(refused.value)
    assert "198.51.100" not in str(refused.value)


def test_with_the_database_gone_reads_fail_closed(world: Custos, home: Path) -> None:
    if world.db.is_sqlite:
        world.db.dispose()
        for path in home.glob("custos.db*"):
            path.rename(path.with_name("moved-" + path.name))
    else:
        with world.db.engine.begin() as conn:
            conn.execute(text("DROP TABLE ledger_entries CASCADE"))
    with pytest.raises(StoreUnavailable):
        world.read(READ)


def test_read_from_the_cli(world: Custos, home: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "custos",
            "read",
            "--principal",
            "emp-1001",
            "--subject",
            "user-1",
            "--category",
            "ip_history",
            "--purpose",
            "support",
            "--ticket",
            "T-1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "CUSTOS_HOME": str(home)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["decision"], body["released"]) == ("allow", 5)
    assert body["records"][0]["network"] == "198.51.100.0/24"
