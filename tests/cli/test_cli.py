"""The command line as a person runs it: a real subprocess, real files, real exit codes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from custos.access import Custos
from custos.cli.app import INTERNAL_ERROR_EXIT, main
from tests.factories import SUPPORT_WORLD, write_org

ROOT = Path(__file__).resolve().parents[2]
CUSTOS = [sys.executable, "-m", "custos"]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*CUSTOS, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.fixture
def loaded(home: Path, tmp_path: Path) -> Path:
    assert run(home, "init").returncode == 0
    result = run(home, "org", "load", str(write_org(tmp_path / "org.yaml", SUPPORT_WORLD)))
    assert result.returncode == 0, result.stderr
    return home


def test_check_json_has_the_documented_fields_and_exit_zero(loaded: Path) -> None:
    result = run(
        loaded,
        "check",
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
        "--json",
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["decision"] == "deny"
    assert body["precision"] is None
    assert body["reasons"][0]["policy"] == "source-protection"
    assert "source protection" in body["explanation"]


def test_check_text_output(loaded: Path) -> None:
    result = run(
        loaded,
        "check",
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
    )
    assert result.returncode == 0
    assert result.stdout.startswith("allow (coarse)")


def test_unknown_ids_exit_non_zero_with_a_clear_message(loaded: Path) -> None:
    result = run(
        loaded,
        "check",
        "--principal",
        "emp-404",
        "--subject",
        "user-1",
        "--category",
        "profile",
        "--purpose",
        "support",
    )
    assert result.returncode == 3
    assert "unknown principal 'emp-404'" in result.stderr
    assert "Traceback" not in result.stderr
    as_json = run(
        loaded,
        "check",
        "--principal",
        "emp-404",
        "--subject",
        "user-1",
        "--category",
        "profile",
        "--purpose",
        "support",
        "--json",
    )
    assert json.loads(as_json.stdout)["error"]["code"] == "unknown_principal"


def test_a_bad_directory_file_changes_nothing(loaded: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "principals:\n  - {id: emp-5, name: X, role: support_agent, team: t, country: US}\n"
        "tickets:\n  - {id: T-1, kind: support, subject: user-1, assignee: emp-5, status: bogus}\n"
    )
    result = run(loaded, "org", "load", str(bad))
    assert result.returncode == 2
    assert f"{bad}: tickets[0] (id 'T-1'): field 'status'" in result.stderr
    after = run(
        loaded,
        "check",
        "--principal",
        "emp-5",
        "--subject",
        "user-1",
        "--category",
        "profile",
        "--purpose",
        "support",
        "--json",
    )
    assert json.loads(after.stdout)["error"]["code"] == "unknown_principal"


def test_commands_before_init_say_to_run_init(home: Path) -> None:
    result = run(
        home,
        "check",
        "--principal",
        "a",
        "--subject",
        "b",
        "--category",
        "profile",
        "--purpose",
        "support",
    )
    assert result.returncode != 0
    assert "custos init" in result.stderr


def test_policy_validate_show_and_test(loaded: Path, tmp_path: Path) -> None:
    assert "valid: 21 policies" in run(loaded, "policy", "validate").stdout
    shown = json.loads(run(loaded, "policy", "show", "--json").stdout)
    assert {p["id"] for p in shown["policies"]} >= {"source-protection", "protected-two-person"}
    assert "internal_investigation" in shown["vocabulary"]["purposes"]
    table = loaded / "policies" / "cases.yaml"
    result = run(loaded, "policy", "test", str(table))
    assert result.returncode == 0, result.stdout
    assert re.search(r"^\d+ passed, 0 failed$", result.stdout, re.M)
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        table.read_text().replace(
            "expect: {decision: deny, reason: source-protection}", "expect: {decision: allow}", 1
        )
    )
    result = run(loaded, "policy", "test", str(failing))
    assert result.returncode == 1
    assert "FAIL internal audit pulling" in result.stdout


def test_an_invalid_policy_is_refused_by_validate_and_by_check(loaded: Path) -> None:
    (loaded / "policies" / "60-broken.cedar").write_text("permit (principal, action, resource")
    result = run(loaded, "policy", "validate")
    assert result.returncode == 4
    assert "60-broken.cedar" in result.stderr
    check = run(
        loaded,
        "check",
        "--principal",
        "emp-1001",
        "--subject",
        "user-1",
        "--category",
        "profile",
        "--purpose",
        "support",
        "--ticket",
        "T-1",
    )
    assert check.returncode == 4


def test_demo_runs_the_2022_case_through_the_service(tmp_path: Path) -> None:
    result = run(
        tmp_path / "demo-home",
        "demo",
        "--no-serve",
        "--json",
        "--employees",
        "60",
        "--days",
        "14",
        "--port",
        "0",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["refused_request_rule"] == "source-protection"
    assert summary["blocked_2022_reads"] >= 8
    assert summary["precise_read"]["decision"] == "allow"
    assert summary["precise_read"]["records"] > 0
    # The 2022 hunt as one SELECT is refused; a support agent's query returns coarse rows.
    sql = summary["sql"]
    assert sql["refused_2022_status"] == 403
    assert "source protection" in sql["refused_2022_reason"]
    assert sql["support"]["status"] == 200
    assert sql["support"]["rows"] > 0
    assert sql["support"]["precision"] == "coarse"
    assert sql["support"]["example"].endswith(".0/24")
    assert summary["alerts_naming_culprits"]
    assert summary["report_verified"] is True
    # Her report is where the summary says, and verifies with the CLI too.
    assert summary["report_file"].endswith(f"report-{summary['report_subject']}.json")
    assert summary["report_subject"] in summary["journalists"]
    verified = run(tmp_path / "demo-home", "report", "verify", summary["report_file"])
    assert verified.returncode == 0, verified.stderr
    # The alerts beyond the 2022 case, by rule, each with a count and its words.
    others = summary["other_alerts"]
    assert all(o["count"] >= 1 and o["example"] for o in others.values())
    assert summary["pending_request"].startswith("req-")
    # The simulated history is recent: the overview's last 14 days show it, not only today.
    system = Custos.open(tmp_path / "demo-home")
    try:
        today = datetime.now(UTC).date()
        before_today = [today - timedelta(days=n) for n in range(13, 0, -1)]
        history = system.events.per_day(before_today)
    finally:
        system.close()
    assert sum(sum(counts.values()) for counts in history.values()) > 1000
    # Every decision of the demo replays from the ledger alone to its logged outcome, and
    # every directory and grant row is what the ledger set.
    verified = run(tmp_path / "demo-home", "log", "verify", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["replayed_decisions"] >= 20
    assert report["replay_differences"] == []
    assert report["authority_findings"] == []


def test_the_readme_lists_every_benchmark() -> None:
    readme = (ROOT / "README.md").read_text()
    benches = sorted(path.name for path in (ROOT / "bench").glob("*.py"))
    assert benches
    assert [name for name in benches if f"bench/{name}" not in readme] == []


def test_readme_starts_with_the_two_commands_and_they_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block is not None
    assert readme.index("```sh") < 200
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    for command in commands:
        assert os.access(ROOT / command, os.X_OK)
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_command_documented_in_readme_has_help() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in sorted(set(re.findall(r"`custos ([a-z][a-z -]*?)(?: [A-Z\-\[<]|`)", readme))):
        result = subprocess.run(
            [*CUSTOS, *command.split(), "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, f"custos {command} --help: {result.stderr}"


def test_an_unexpected_error_is_one_line_without_traceback_or_values(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fault injection: a bug deep inside, whose message quotes personal data.
    def broken(*_: object, **__: object) -> object:
        raise RuntimeError("user-42 was at 198.51.100.7")

    monkeypatch.setenv("CUSTOS_HOME", str(home))
    monkeypatch.delenv("CUSTOS_DEBUG", raising=False)
    monkeypatch.setattr(Custos, "open", broken)
    for json_flag in ([], ["--json"]):
        args = ["check", "--principal", "emp-1", "--subject", "user-42", "--category",
                "profile", "--purpose", "support", *json_flag]  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == INTERNAL_ERROR_EXIT
        out, err = capsys.readouterr()
        assert "internal error (RuntimeError)" in out + err
        assert "198.51.100.7" not in out + err
        assert "Traceback" not in out + err


def test_demo_on_a_busy_port_says_so_at_once_and_leaves_no_home(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = run(tmp_path / "demo-home", "demo", "--no-serve", "--port", str(port))
        took = time.monotonic() - started
    assert result.returncode != 0
    assert f"port {port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "demo-home").exists()
    assert took < 30  # refused before simulating (a simulation alone takes longer)
