"""A fast command line: help imports nothing heavy, and ``custos org import`` as a person runs
it (a real subprocess, real files, real exit codes). Timings live in bench/cli.py; these
tests guard the behaviour that makes them (what gets imported), not the times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.cli.app import app, narrowed
from custos.cli.sim import SCENARIO_NAMES
from custos.directory import write_lines
from tests.factories import SUPPORT_WORLD, write_org

CUSTOS = [sys.executable, "-m", "custos"]

#: Modules a help page must not import: each costs tens to hundreds of milliseconds, and
#: none is needed to print what the commands are. (Typer itself brings rich's tables for
#: its help panels: the price of Typer.)
HEAVY = (
    "alembic",
    "cedarpy",
    "pydantic",
    "cryptography",
    "duckdb",
    "fastapi",
    "google.protobuf",
    "httpx",
    "opentelemetry",
    "requests",
    "sqlalchemy",
    "uvicorn",
    "yaml",
    "custos.access",
    "custos.ledger",
    "custos.store",
)

IMPORTS_AFTER = """
import json, sys
from custos.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*args: str) -> set[str]:
    """The modules loaded by running ``custos ARGS`` in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("org", "--help"),
        ("log", "--help"),
        ("check", "--help"),
        ("approvals", "--help"),
        ("simulate", "--help"),
    ],
)
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    loaded = modules_after(*args)
    heavy = sorted(
        name for name in loaded if any(name == h or name.startswith(h + ".") for h in HEAVY)
    )
    assert heavy == [], f"custos {' '.join(args)} imported {heavy[:8]}"


#: What a decision (``custos check``) must not import: parts and libraries it does not use,
#: which a package face or a module-level import would drag in (docs/design/cli.md).
NOT_FOR_A_DECISION = (
    "alembic",
    "pydantic",
    "custos.access.query",
    "custos.access.read",
    "custos.directory.bulk",
    "custos.directory.files",
    "custos.ledger.tiles",
    "custos.ledger.verify",
    "custos.ledger.witness",
    "custos.reports.html",
    "custos.sql",
)


def test_a_decision_imports_only_what_it_needs(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    assert (
        run(home, "org", "load", str(write_org(tmp_path / "org.yaml", SUPPORT_WORLD))).returncode
        == 0
    )
    check = ("check", "--principal", "emp-1001", "--subject", "user-1", "--category",
             "ip_history", "--purpose", "support", "--json")  # fmt: skip
    first = run(home, *check)  # (the first run may ask Alembic for the code's heads)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["decision"] in {"allow", "deny", "approval_required"}
    loaded = modules_after(*check)
    assert "custos.access.system" in loaded  # it did decide
    found = sorted(
        name
        for name in loaded
        if any(name == h or name.startswith(h + ".") for h in NOT_FOR_A_DECISION)
    )
    assert found == [], f"custos check imported {found[:8]}"


def test_the_help_names_every_simulated_scenario() -> None:
    from custos.sim import SCENARIOS

    assert tuple(SCENARIOS) == SCENARIO_NAMES


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*CUSTOS, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_org_import_loads_lines_and_prunes(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    path = tmp_path / "org.jsonl"
    write_lines(path, SUPPORT_WORLD)
    result = run(home, "org", "import", str(path), "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["added"] == {"principals": 5, "subjects": 4, "tickets": 7}
    smaller = {**SUPPORT_WORLD, "tickets": SUPPORT_WORLD["tickets"][:3]}
    write_lines(path, smaller)
    result = run(home, "org", "import", str(path), "--prune")
    assert result.returncode == 0, result.stderr
    assert "tickets: 0 added, 0 changed, 3 unchanged, 4 removed" in result.stdout
    verify = run(home, "log", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_org_import_names_a_bad_line_and_loads_nothing(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    path = tmp_path / "org.jsonl"
    write_lines(path, SUPPORT_WORLD)
    text = path.read_text(encoding="utf-8").splitlines()
    text[6] = '{"subject": {"id": "user-9", "jurisdiction": "Mars"}}'
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    result = run(home, "org", "import", str(path), "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "validation_failed"
    assert f"{path}:7 (id 'user-9'): field 'jurisdiction'" in json.dumps(error)
    assert "Traceback" not in result.stderr
    check = run(
        home,
        "check",
        "--principal",
        "emp-1001",
        "--subject",
        "user-1",
        "--category",
        "ip_history",
        "--purpose",
        "support",
    )
    assert check.returncode != 0  # nothing was loaded: the principal is unknown
    assert "unknown principal" in check.stderr


words = st.sampled_from(
    ["check", "org", "import", "log", "--home", "--home=/h", "--json", "-x", "nope", "/tmp/h"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(words, max_size=5))
def test_only_the_named_command_is_built(args: list[str]) -> None:
    only = narrowed(args)
    if only is app:
        return
    # The first word that is neither an option nor --home's value names it.
    rest = list(args)
    while rest and (rest[0].startswith("--home=") or rest[0] == "--home"):
        rest = rest[2:] if rest[0] == "--home" else rest[1:]
    assert rest
    assert not rest[0].startswith("-")
    names = [c.name for c in only.registered_commands] + [g.name for g in only.registered_groups]
    assert names == [rest[0]]


def test_a_command_after_home_runs_narrowed(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("CUSTOS_HOME", None)
    other = tmp_path / "elsewhere"
    result = subprocess.run(
        [*CUSTOS, "--home", str(other), "init", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["home"] == str(other)


def test_org_load_prune_reports_what_it_removed(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    path = write_org(tmp_path / "org.yaml", SUPPORT_WORLD)
    assert run(home, "org", "load", str(path)).returncode == 0
    smaller = {**SUPPORT_WORLD, "tickets": SUPPORT_WORLD["tickets"][:3]}
    result = run(home, "org", "load", str(write_org(path, smaller)), "--prune", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] == {"principals": 0, "subjects": 0, "tickets": 4}
    verify = run(home, "log", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
