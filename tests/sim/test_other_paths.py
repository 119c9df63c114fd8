"""The ``other_paths`` scenario: misuse through another path, caught by policy replay only."""

from __future__ import annotations

import json
from pathlib import Path

from custos.access import Custos
from custos.detect.replay import RULE
from custos.directory import read_directory_file
from custos.sim import simulate


def test_policy_replay_names_the_culprit_and_leaves_allowed_traffic_alone(
    system: Custos, tmp_path: Path
) -> None:
    world = tmp_path / "world"
    simulate(world, employees=40, days=14, seed=3, scenarios=["other_paths"])
    labels = json.loads((world / "labels.json").read_text())["scenarios"]["other_paths"]
    system.directory.merge(read_directory_file(world / "directory.yaml"), source="sim")
    lines = (world / "events.jsonl").read_text(encoding="utf-8").splitlines()
    system.events.import_lines(lines, "admin-console.jsonl")
    system.detect()
    replayed = [a for a in system.casebook.alerts() if a.rule == RULE]
    flagged = {event for alert in replayed for event in alert.events}
    (culprit,) = labels["culprits"]
    # Every access of the culprit's is refused on replay (default-deny for the role) ...
    assert set(labels["events"]) <= flagged
    scenario = set(labels["events"])
    mine = [a for a in replayed if scenario & set(a.events)]
    assert mine
    assert all(a.principals == (culprit,) for a in mine)
    assert all("policy default-deny" in a.explanation for a in mine)
    # ... and the teammate's use of the same console, within the rules, is not.
    assert labels["allowed"]
    assert not flagged & set(labels["allowed"])
    # No other rule holds the scenario's accesses as evidence: their tickets explain them.
    others = [a for a in system.casebook.alerts() if a.rule != RULE]
    assert not any(scenario & set(a.events) for a in others)
