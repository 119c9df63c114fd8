"""The wire front end to end: psql and psycopg on loopback, Custos.query, the analyzer, real
DuckDB and PostgreSQL sources, and the ledger. The 2022 query is refused with its reason;
a legitimate support query returns coarse rows, logged before they leave."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from custos.access import Custos
from custos.wire import WireSettings
from tests.sql.world import pg_source, source_yaml, sql_home
from tests.wire.conftest import Running, start_front

PSQL = "/usr/bin/psql"
pytestmark = pytest.mark.skipif(not os.path.exists(PSQL), reason="needs psql (PostgreSQL client)")


@dataclass
class World:
    system: Custos
    running: Running
    tokens: dict[str, str]  # principal -> tool token

    def connect(self, principal: str, options: str, **kw: object) -> psycopg.Connection:
        dsn = self.running.dsn(self.tokens[principal], options=options)
        return psycopg.connect(dsn, autocommit=True, **kw)  # type: ignore[arg-type]

    def psql(self, principal: str, options: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=self.tokens[principal], PGOPTIONS=options)
        return subprocess.run(
            [PSQL, "-h", "127.0.0.1", "-p", str(self.running.port), "-d", "app", "-X", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def entries(self, start: int) -> list[dict[str, object]]:
        ledger = self.system.ledger
        return [json.loads(raw) for _, raw in ledger.entries(start, ledger.size())]


@pytest.fixture
def world(system: Custos, wire_settings: WireSettings) -> Iterator[World]:
    sql_home(system)
    tokens = {
        principal: system.accounts.create_token(f"tool-{principal}", ["tool"], principal)[1]
        for principal in ("emp-1001", "emp-2001", "emp-9001")
    }
    for running in start_front(system, system, wire_settings):
        yield World(system, running, tokens)


SUPPORT = "-c custos.purpose=support -c custos.ticket=T-1"


def test_a_support_query_through_psql_returns_coarse_rows_logged_first(world: World) -> None:
    start = world.system.ledger.size()
    done = world.psql(
        "emp-1001",
        SUPPORT,
        "-At",
        "-c",
        "SELECT ip, email FROM logins WHERE user_id = 'user-1' ORDER BY login_at",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["198.51.100.0/24|user-1@example.org"] * 3
    assert "198.51.100.10" not in done.stdout
    assert "ip: coarse (ip_history), email: precise (contact)" in done.stderr
    entries = world.entries(start)
    release = entries[-1]
    assert release["type"] == "sql_release"
    assert (release["rows"], release["subjects"]) == (3, ["user-1"])
    assert f"ledger index {world.system.ledger.size() - 1}" in done.stderr
    decisions = [e for e in entries if e["type"] == "decision"]
    token_id = world.tokens["emp-1001"].split("_")[1]
    assert {d["source"] for d in decisions} == {f"wire:{token_id}"}


def test_the_2022_query_is_refused_through_psycopg_with_its_reason(world: World) -> None:
    start = world.system.ledger.size()
    leak_hunt = "-c custos.purpose=internal_investigation -c custos.ticket=T-7"
    with world.connect("emp-2001", leak_hunt) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute("SELECT ip FROM logins WHERE user_id = %s", ("user-42",))
        assert "source protection" in str(refused.value)
        assert "198.51" not in str(refused.value)
        # Searching for the person by address instead is refused too.
        with pytest.raises(psycopg.errors.Error) as searched:
            conn.execute("SELECT user_id FROM logins WHERE ip = %s", ("198.51.102.10",))
        assert "198.51" not in str(searched.value)
    entries = world.entries(start)
    assert any(e["type"] == "decision" and e["decision"] == "deny" for e in entries)
    assert not [e for e in entries if e["type"] == "sql_release"]


def test_an_aggregate_and_rejected_sql_through_psycopg(world: World) -> None:
    with world.connect("emp-9001", "-c custos.purpose=product_debug") as conn:
        assert conn.execute("SELECT count(*) AS logins FROM logins").fetchall() == [("69",)]
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("DELETE FROM logins")
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELECT * FROM secrets")
        # Still usable: a refusal ends a statement, never the session.
        assert conn.execute("SHOW custos.purpose").fetchone() == ("product_debug",)


def test_an_unknown_source_names_the_valid_ones(world: World) -> None:
    dsn = world.running.dsn(world.tokens["emp-1001"], source="nope", options=SUPPORT)
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue, match="app"),
    ):
        conn.execute("SELECT ip FROM logins WHERE user_id = 'user-1'")


def test_a_postgresql_source_through_psycopg(world: World, home: Path) -> None:
    with pg_source() as pg:
        (home / "sources.yaml").write_text(
            source_yaml("app", pg.reader_url, pg.table), encoding="utf-8"
        )
        with world.connect("emp-1001", SUPPORT) as conn:
            rows = conn.execute(
                f"SELECT ip, email FROM {pg.table} WHERE user_id = %s", ("user-1",)
            ).fetchall()
            assert {row[0] for row in rows} == {"198.51.100.0/24"}
            assert len(rows) == 3
        with world.connect("emp-9001", "-c custos.purpose=product_debug") as conn:
            assert conn.execute(f"SELECT count(*) FROM {pg.table}").fetchall() == [("69",)]


def test_wire_tricks_never_widen_a_query(world: World) -> None:
    """Parameters, several statements in one message and comments reach the analyzer as
    what they are: no precise address of anyone comes back."""
    with world.connect("emp-1001", SUPPORT) as conn:
        # A parameter that tries to close its quote stays one literal: no such subject.
        with pytest.raises(psycopg.errors.Error) as injected:
            conn.execute("SELECT ip FROM logins WHERE user_id = %s", ("user-1' OR '1'='1",))
        assert "198.51." not in str(injected.value)
        # A comment hides nothing: the pin is still user-1 alone, coarse.
        rows = conn.execute(
            "SELECT ip FROM logins WHERE user_id = 'user-1' --' OR true\n"
        ).fetchall()
        assert rows == [("198.51.100.0/24",)] * 3
    # Two statements in one simple query: each analysed alone; the unpinned one refused.
    done = world.psql(
        "emp-1001",
        SUPPORT,
        "-At",
        "-c",
        "SELECT ip FROM logins WHERE user_id = 'user-1'; SELECT ip FROM logins",
    )
    assert done.returncode != 0
    assert done.stdout.splitlines() == ["198.51.100.0/24"] * 3
    assert "198.51.1" not in done.stdout.replace("198.51.100.0/24", "")
    assert "ERROR" in done.stderr
