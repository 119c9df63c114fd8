"""``custos sql`` and ``custos sources check`` through the real CLI, on a real home."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import duckdb
import pytest

from custos.access import Custos
from custos.cli import main
from tests.sql.world import sql_home

SUPPORT = [
    "sql",
    "--source",
    "app",
    "--principal",
    "emp-1001",
    "--purpose",
    "support",
    "--ticket",
    "T-1",
]


@pytest.fixture
def home_with_sql(system: Custos) -> Path:
    return sql_home(system)


def _run(home: Path, *args: str) -> tuple[int, str]:
    """Run the CLI through ``main`` (errors caught in its one place, with their exit codes),
    in a subprocess-free way: stdout and stderr captured together."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(["--home", str(home), *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


def test_custos_sql_prints_coarse_rows_as_a_table(home_with_sql: Path) -> None:
    code, out = _run(
        home_with_sql, *SUPPORT, "SELECT ip, email FROM logins WHERE user_id = 'user-1'"
    )
    assert code == 0, out
    assert "198.51.100.0/24" in out
    assert "198.51.100.10" not in out
    assert "3 rows" in out


def test_custos_sql_json(home_with_sql: Path) -> None:
    code, out = _run(
        home_with_sql, *SUPPORT, "--json", "SELECT ip FROM logins WHERE user_id = 'user-1'"
    )
    assert code == 0, out
    body = json.loads(out)
    assert body["row_count"] == 3
    assert body["decisions"][0]["request"]["subject"] == "user-1"


def test_custos_sql_refusal_exits_7_and_says_why(home_with_sql: Path) -> None:
    code, out = _run(
        home_with_sql,
        "sql",
        "--source",
        "app",
        "--principal",
        "emp-2001",
        "--purpose",
        "internal_investigation",
        "--ticket",
        "T-7",
        "SELECT ip FROM logins WHERE user_id = 'user-42'",
    )
    assert code == 7
    assert "source protection" in out


def test_custos_sql_needs_its_options_and_one_select(home_with_sql: Path) -> None:
    code, out = _run(home_with_sql, "sql", "--source", "app", "SELECT 1")
    assert code == 2
    assert "--principal" in out
    code, out = _run(home_with_sql, *SUPPORT, "SELECT 1", "SELECT 2")
    assert code == 2
    assert "one SELECT" in out


def test_sources_check(home_with_sql: Path) -> None:
    code, out = _run(home_with_sql, "sources", "check", "--json")
    assert code == 0, out
    body = json.loads(out)
    assert body["ok"] is True
    assert body["sources"][0]["source"] == "app"
    with duckdb.connect(str(home_with_sql / "data" / "app.duckdb")) as con:
        con.execute("ALTER TABLE logins RENAME COLUMN email TO mail")
    code, out = _run(home_with_sql, "sources", "check")
    assert code == 6
    assert "column email does not exist" in out
    assert "unmapped in logins (refused to queries): mail" in out
