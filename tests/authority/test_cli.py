"""The command line: `custos org load` ledgers who loaded what before it counts, and
`custos log verify` / `custos log replay` name what the ledger does not vouch for."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from custos.access import Custos
from custos.policy import AccessRequest
from tests.cli.test_cli import run
from tests.factories import SUPPORT_WORLD, load_org, write_org
from tests.operators import Cli, require_operators


def test_org_load_names_who_loaded_it_and_verify_names_an_edited_row(
    home: Path, tmp_path: Path
) -> None:
    assert run(home, "init").returncode == 0
    loaded = run(home, "org", "load", str(write_org(tmp_path / "org.yaml", SUPPORT_WORLD)))
    assert loaded.returncode == 0, loaded.stderr
    with Custos.open(home) as system:
        entries = [json.loads(raw) for _, raw in system.ledger.entries(0, system.ledger.size())]
    authority = [e for e in entries if e["type"] == "authority"]
    assert {e["kind"] for e in authority} == {"principal", "subject", "ticket"}
    assert all(e["by"]["authenticated"] is False for e in authority)
    assert all(e["source"].endswith("org.yaml") for e in authority)

    check = run(
        home,
        "check",
        "--principal", "emp-1001", "--subject", "user-1", "--category", "profile",
        "--purpose", "support", "--ticket", "T-1", "--json",
    )  # fmt: skip
    assert json.loads(check.stdout)["decision"] == "allow"
    verified = run(home, "log", "verify", "--json")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout)["replayed_decisions"] >= 1

    with Custos.open(home) as system, system.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE tickets SET assignee = 'emp-2001' WHERE id = 'T-1'"))
    failed = run(home, "log", "verify", "--json")
    assert failed.returncode != 0
    report = json.loads(failed.stdout)
    assert {"table": "tickets", "id": "T-1", "index": None} in [
        {k: f[k] for k in ("table", "id", "index")} for f in report["authority_findings"]
    ]
    text = run(home, "log", "verify")
    assert text.returncode != 0
    assert "tickets row 'T-1'" in text.stderr


def test_log_replay_shows_a_decision_beside_its_replay(home: Path, tmp_path: Path) -> None:
    assert run(home, "init").returncode == 0
    assert (
        run(home, "org", "load", str(write_org(tmp_path / "o.yaml", SUPPORT_WORLD))).returncode == 0
    )
    with Custos.open(home) as system:
        decision = system.decide(
            AccessRequest(
                "emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7"
            )
        )
    shown = run(home, "log", "replay", str(decision.ledger_index), "--json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["same"] is True
    assert body["logged"]["decision"] == body["replayed"]["decision"] == "deny"
    missing = run(home, "log", "replay", "0")
    assert missing.returncode != 0
    assert "holds no decision" in missing.stderr


def test_with_operator_auth_data_is_asked_for_only_as_the_tokens_own_principal(
    home: Path, cli: Cli
) -> None:
    with Custos.init(home) as system:
        load_org(system, SUPPORT_WORLD)
        _, tool = system.accounts.create_token("console", ["tool"], "emp-1001")
        _, auditor = system.accounts.create_token("monitor", ["auditor"])
    require_operators(home)
    ask = ("check", "--subject", "user-1", "--category", "profile", "--purpose", "support",
           "--ticket", "T-1")  # fmt: skip
    assert cli(*ask, "--principal", "emp-1001").code != 0  # no token
    assert cli(*ask, "--principal", "emp-2001", token=tool).code == 9  # someone else
    assert cli(*ask, "--principal", "emp-1001", token=auditor).code == 9  # not a tool
    before = Custos.open(home).ledger.size()
    assert cli.ok(*ask, "--principal", "emp-1001", token=tool)["decision"] == "allow"
    assert Custos.open(home).ledger.size() == before + 1  # only the allowed one was decided
