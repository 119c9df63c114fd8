"""The detection commands as a person runs them: real subprocesses, files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.detect.office import Office, at
from tests.factories import write_org

CUSTOS = [sys.executable, "-m", "custos"]


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*CUSTOS, *args], capture_output=True, text=True, env=env, timeout=180, check=False
    )


@pytest.fixture
def loaded(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    office = Office()
    office.access("emp-1", "jour-1", at(1, 11), "ip_history")
    office.access("emp-1", "acct-2", at(2, 11), "profile")
    assert run(home, "init").returncode == 0
    # These rules are under test here; the office's hand-made events were never meant to
    # follow the policy pack, which replay (tests/detect/test_replay.py) would judge.
    (home / "config.toml").write_text("[detect]\nreplay = false\n", encoding="utf-8")
    directory = write_org(
        tmp_path / "org.yaml",
        {"principals": office.principals, "subjects": office.subjects, "tickets": office.tickets},
    )
    assert run(home, "org", "load", str(directory)).returncode == 0
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in office.events), encoding="utf-8")
    return home, events


def test_import_detect_and_triage(loaded: tuple[Path, Path]) -> None:
    home, events = loaded
    imported = run(home, "events", "import", str(events), "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["added"] > 300

    found = run(home, "detect", "--json")
    assert found.returncode == 0, found.stderr
    alerts = json.loads(found.stdout)
    assert {a["rule"] for a in alerts} == {"protected_subject_access", "colleague_account_access"}
    for alert in alerts:
        assert set(alert) >= {
            "id",
            "rule",
            "severity",
            "principals",
            "subjects",
            "events",
            "first_seen",
            "last_seen",
            "explanation",
        }
        assert alert["id"].startswith("al-")
        assert alert["first_seen"].endswith("Z")
        assert alert["severity"] in {"low", "medium", "high", "critical"}

    later = run(home, "detect", "--since", "2026-01-07T00:00:00Z", "--json")
    assert [a["rule"] for a in json.loads(later.stdout)] == ["colleague_account_access"]

    listed = json.loads(run(home, "cases", "list", "--json").stdout)
    assert len(listed) == 1
    case_id = listed[0]["id"]
    assert listed[0]["status"] == "open"
    assert run(home, "cases", "assign", case_id, "emp-20").returncode == 0
    commented = run(home, "cases", "comment", case_id, "called the agent", "--by", "emp-20")
    assert commented.returncode == 0, commented.stderr
    shown = json.loads(run(home, "cases", "show", case_id, "--json").stdout)
    assert shown["assignee"] == "emp-20"
    assert shown["comments"][0]["text"] == "called the agent"
    assert len(shown["alerts"]) == 2
    closed = run(
        home, "cases", "close", case_id, "--disposition", "false_positive", "--json", "--by", "x"
    )
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["disposition"] == "false_positive"

    text = run(home, "detect")
    assert text.returncode == 0
    assert "alert(s) from" in text.stdout


def test_bad_events_file_names_every_line_and_stores_nothing(
    loaded: tuple[Path, Path], tmp_path: Path
) -> None:
    home, events = loaded
    bad = tmp_path / "bad.jsonl"
    good_line = events.read_text().splitlines()[0]
    bad.write_text(f"{good_line}\n{{broken\n{good_line.replace('read', 'peek')}\n")
    result = run(home, "events", "import", str(bad))
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert "line 3" in result.stderr
    assert "Traceback" not in result.stderr
    as_json = json.loads(run(home, "events", "import", str(bad), "--json").stdout)
    assert as_json["error"]["code"] == "validation_failed"
    assert len(as_json["error"]["problems"]) == 2
    rejects = tmp_path / "rejects.jsonl"
    kept = run(home, "events", "import", str(bad), "--rejects", str(rejects), "--json")
    assert json.loads(kept.stdout) == {"added": 1, "unchanged": 0, "rejected": 2}
    assert len(rejects.read_text().splitlines()) == 2


def test_unknown_case_and_bad_options(loaded: tuple[Path, Path]) -> None:
    home, _ = loaded
    missing = run(home, "cases", "show", "case-99", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)["error"]["code"] == "unknown_case"
    since = run(home, "detect", "--since", "last tuesday")
    assert since.returncode == 2
    assert "--since" in since.stderr


def test_simulate_load_and_eval(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "world"
    made = run(
        home,
        "simulate",
        "--out",
        str(out),
        "--employees",
        "60",
        "--days",
        "14",
        "--seed",
        "5",
        "--scenario",
        "journalist_2022",
        "--scenario",
        "bribed_agent",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert set(body["scenarios"]) == {"journalist_2022", "bribed_agent"}
    assert {p.name for p in out.iterdir()} == {
        "directory.yaml",
        "events.jsonl",
        "grants.jsonl",
        "labels.json",
    }
    assert run(home, "init").returncode == 0
    loaded = run(home, "org", "load", str(out / "directory.yaml"))
    assert loaded.returncode == 0, loaded.stderr
    assert run(home, "events", "import", str(out / "events.jsonl")).returncode == 0
    scored = run(home, "eval", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert set(report) >= {
        "scenarios",
        "false_alerts",
        "false_alerts_per_1000_employee_days",
        "employee_days",
    }
    assert report["scenarios"]["journalist_2022"]["detected"] is True
    text = run(home, "eval", str(out))
    assert "journalist_2022" in text.stdout
    assert "per 1,000 employee-days" in text.stdout
    unknown = run(home, "simulate", "--out", str(out), "--scenario", "nope")
    assert unknown.returncode == 2
    assert "unknown scenario" in unknown.stderr


def test_eval_seeds_prints_each_seed_and_the_total(home: Path) -> None:
    done = run(home, "eval", "--seeds", "3", "--employees", "40", "--days", "14", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    seed = body["seeds"]["3"]
    assert seed["scenarios"]["approval_ring"]["detected"] is True
    assert seed["scenarios"]["grant_abuse"]["detected"] is True
    assert body["total"]["false_alerts"] == seed["false_alerts"]
    assert body["total"]["employee_days"] == seed["employee_days"]
    text = run(home, "eval", "--seeds", "3", "--employees", "40", "--days", "14")
    assert text.stdout.splitlines()[2].startswith("| 3 | ")
    assert "| total |" in text.stdout
    for bad in (["--seeds", "5-1"], ["--seeds", "x"], []):
        refused = run(home, "eval", *bad)
        assert refused.returncode == 2, bad
