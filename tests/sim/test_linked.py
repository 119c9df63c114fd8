"""Linked accounts in the simulated world: benign links among ordinary users, second accounts
of protected people, and the 2022 scenario pulling a journalist's second account too."""

from __future__ import annotations

import json
from pathlib import Path

from custos.directory import read_directory_file
from custos.sim import simulate


def test_the_world_links_accounts_and_the_2022_hunt_pulls_a_second_account(
    tmp_path: Path,
) -> None:
    simulate(tmp_path, employees=40, days=14, seed=9)
    subjects = read_directory_file(tmp_path / "directory.yaml").subjects
    flags = {s.id: s.protected for s in subjects}
    links = [(s.id, other) for s in subjects for other in s.linked]
    assert links
    ordinary = [pair for pair in links if not flags[pair[0]] and not flags[pair[1]]]
    protected = [pair for pair in links if "journalist" in flags[pair[1]]]
    assert len(ordinary) > len(protected) > 0
    second = {a for a, j in protected}
    label = json.loads((tmp_path / "labels.json").read_text())["scenarios"]["journalist_2022"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    pulled = {e["subject"] for e in events if e["id"] in set(label["events"])}
    assert pulled & second
