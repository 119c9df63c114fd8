"""``custos approvals`` as a user runs it: a real process, JSON out, refusals named."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from custos import examples
from tests.factories import APPROVALS_WORLD, write_org


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "custos", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def ok(home: Path, *args: str) -> Any:
    done = run(home, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_request_approve_and_refusals_from_the_command_line(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    assert (
        run(home, "org", "load", str(write_org(tmp_path / "org.yaml", APPROVALS_WORLD))).returncode
        == 0
    )
    refused = run(
        home,
        "approvals",
        "request",
        "--principal",
        "emp-2001",
        "--subject",
        "user-42",
        "--category",
        "ip_history",
        "--purpose",
        "internal_investigation",
        "--ticket",
        "T-7",
        "--reason",
        "leak hunt",
        "--json",
    )
    assert refused.returncode == 7
    assert json.loads(refused.stdout)["error"]["rule"] == "source-protection"

    request = ok(
        home,
        "approvals",
        "request",
        "--principal",
        "emp-3001",
        "--subject",
        "user-42",
        "--category",
        "ip_history",
        "--category",
        "location",
        "--purpose",
        "trust_safety",
        "--ticket",
        "T-10",
        "--reason",
        "abuse report R-77",
        "--hours",
        "4",
        "--json",
    )
    assert (request["status"], request["approvals_needed"]) == ("pending", 2)
    assert request["categories"] == ["ip_history", "location"]

    self_approval = run(
        home,
        "approvals",
        "approve",
        request["id"],
        "--by",
        "emp-3001",
        "--reason",
        "me",
        "--json",
    )
    assert self_approval.returncode == 7
    error = json.loads(self_approval.stdout)["error"]
    assert (error["code"], error["rule"]) == ("approval_refused", "self-approval")
    text = run(home, "approvals", "approve", request["id"], "--by", "emp-3000", "--reason", "x")
    assert text.returncode == 7
    assert "management chain" in text.stderr + text.stdout
    assert "Traceback" not in text.stderr

    ok(home, "approvals", "approve", request["id"], "--by", "emp-3002", "--reason", "ok", "--json")
    done = ok(
        home,
        "approvals",
        "approve",
        request["id"],
        "--by",
        "emp-4001",
        "--reason",
        "ok",
        "--json",
    )
    assert done["status"] == "approved"
    grant = ok(home, "approvals", "show", done["grant"], "--json")
    assert (grant["status"], grant["approvers"]) == ("active", ["emp-3002", "emp-4001"])
    listed = ok(home, "approvals", "list", "--status", "approved", "--json")
    assert [r["id"] for r in listed] == [request["id"]]

    read = ok(
        home,
        "read",
        "--principal",
        "emp-3001",
        "--subject",
        "user-42",
        "--category",
        "location",
        "--purpose",
        "trust_safety",
        "--ticket",
        "T-10",
        "--precision",
        "precise",
        "--json",
    )
    assert (read["decision"], read["grant"]) == ("allow", done["grant"])

    revoked = ok(
        home,
        "approvals",
        "revoke",
        done["grant"],
        "--by",
        "emp-4001",
        "--reason",
        "done",
        "--json",
    )
    assert revoked["status"] == "revoked"
    unknown = run(home, "approvals", "show", "req-nope", "--json")
    assert unknown.returncode == 3
    assert json.loads(unknown.stdout)["error"]["code"] == "unknown_request"
    rules = ok(home, "approvals", "rules", "--json")
    assert {"reciprocal-approval", "approval-ring", "same-team"} <= set(rules)
    # The design note's table names every rule the CLI lists, and no other.
    note = Path(__file__).parents[2] / "docs" / "design" / "approvals.md"
    table = re.findall(r"^\| `([a-z-]+)` \|", note.read_text(encoding="utf-8"), re.MULTILINE)
    assert set(table) == set(rules)


def test_ids_are_never_cut_and_a_new_grant_is_shown_as_honoured(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process (Typer's runner) on the README's example world, with a narrow terminal.
    from custos.cli import app
    from custos.cli.app import console

    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, f"{args}: {result.output} {result.exception!r}"
        return result.output

    examples.write(tmp_path, datetime.now(UTC))
    cli("init")
    cli("org", "load", str(tmp_path / examples.DIRECTORY_FILE))
    glass = cli(
        *("approvals", "break-glass", "--principal", "emp-5001", "--subject", "user-1"),
        *("--category", "ip_history", "--ticket", "INC-4", "--reason", "stuffing"),
    )
    assert "pending_ledger" not in glass
    assert " active BREAK-GLASS" in glass
    request = ("approvals", "request", "--principal", "emp-3001", "--subject", "user-42")
    asked = json.loads(
        cli(
            *request,
            *("--category", "ip_history", "--purpose", "trust_safety", "--ticket", "T-10"),
            *("--reason", "abuse report R-77", "--json"),
        )
    )
    grant = json.loads(cli("approvals", "list", "--grants", "--json"))[0]["id"]
    monkeypatch.setattr(console, "width", 40)
    assert asked["id"] in cli("approvals", "list")
    assert grant in cli("approvals", "list", "--grants")
