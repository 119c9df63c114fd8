"""The simulator and the detection-quality measurement built on it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from custos.directory import read_directory_file
from custos.errors import InvalidInput
from custos.sim import SCENARIOS, evaluate, monday_of, simulate
from custos.sim.run import LABELS_FILE
from custos.sim.world import new_world


def test_every_scenario_is_caught_within_the_alert_budget(tmp_path: Path) -> None:
    simulate(tmp_path, employees=80, days=21, seed=3)
    report = evaluate(tmp_path)
    missed = [s.name for s in report.scenarios if not s.detected]
    assert missed == []
    assert len(report.scenarios) == len(SCENARIOS) >= 7
    assert report.false_rate <= 1.0, report.false_rules


def test_same_seed_same_world(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    simulate(a, employees=40, days=14, seed=9)
    simulate(b, employees=40, days=14, seed=9)
    for name in ("directory.yaml", "events.jsonl", "labels.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_the_same_seed_from_another_monday_is_the_same_world_shifted(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    simulate(a, employees=40, days=14, seed=9)
    later = datetime(2026, 11, 16, tzinfo=UTC)  # a Monday
    simulate(b, employees=40, days=14, seed=9, start=later)
    shift = later - datetime(2026, 1, 5, tzinfo=UTC)

    def moved(line: str) -> dict[str, object]:
        event = json.loads(line)
        moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        event["time"] = (moment + shift).isoformat()
        return dict(event)

    first = [moved(line) for line in (a / "events.jsonl").read_text().splitlines()]
    second = [json.loads(line) for line in (b / "events.jsonl").read_text().splitlines()]
    for event in second:
        event["time"] = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).isoformat()
    assert first == second
    labels = json.loads((b / "labels.json").read_text())
    assert labels["start"] == "2026-11-16T00:00:00Z"
    assert labels["scenarios"] == json.loads((a / "labels.json").read_text())["scenarios"]


def test_a_simulation_starts_on_a_monday(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Monday"):
        simulate(tmp_path, employees=40, days=14, start=datetime(2026, 11, 17, tzinfo=UTC))
    with pytest.raises(InvalidInput, match="Monday"):
        simulate(tmp_path, employees=40, days=14, start=datetime(2026, 11, 16, 9, tzinfo=UTC))
    assert monday_of(datetime(2026, 11, 22, 23, 59, tzinfo=UTC)) == datetime(
        2026, 11, 16, tzinfo=UTC
    )


def test_world_is_realistic_and_labels_point_at_real_things(tmp_path: Path) -> None:
    report = simulate(tmp_path, employees=60, days=14, seed=2)
    document = read_directory_file(tmp_path / "directory.yaml")
    roles = {p.role for p in document.principals}
    assert {"support_agent", "engineer", "internal_audit", "trust_safety_investigator"} <= roles
    assert len({p.country for p in document.principals}) >= 4
    assert any(p.manager for p in document.principals)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) == report.events
    explained = sum(1 for e in events if e.get("ticket"))
    assert explained / len(events) > 0.9
    ids = {e["id"] for e in events}
    people = {p.id for p in document.principals}
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert set(labels["scenarios"]) == set(SCENARIOS)
    for info in labels["scenarios"].values():
        assert set(info["events"]) <= ids
        assert set(info["culprits"]) <= people
        assert info["events"]


def test_bad_requests_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown scenario"):
        simulate(tmp_path, scenarios=["alien_abduction"])
    with pytest.raises(InvalidInput, match="at least 40 employees"):
        simulate(tmp_path, employees=5)
    with pytest.raises(InvalidInput, match="labels"):
        evaluate(tmp_path / "nowhere")
    folder = tmp_path / "odd"
    folder.mkdir()
    for scenarios in ('{"x": []}', '{"x": {"events": 5}}', '{"x": {"culprits": [1]}}'):
        (folder / LABELS_FILE).write_text(
            f'{{"employees": 40, "days": 7, "scenarios": {scenarios}}}'
        )
        with pytest.raises(InvalidInput, match="scenario 'x' must be a table"):
            evaluate(folder)
    (folder / LABELS_FILE).write_text("[" * 100_000)
    with pytest.raises(InvalidInput, match="not a labels file"):
        evaluate(folder)


def test_a_world_that_once_held_a_ticket_closed_before_it_opened_loads(tmp_path: Path) -> None:
    # Seed 4 at this size filed a ticket after its accesses and closed it before it opened;
    # `custos org load` then refused the whole directory.
    simulate(tmp_path, employees=60, days=21, seed=4)
    assert read_directory_file(tmp_path / "directory.yaml").tickets


@pytest.mark.parametrize("seed", range(20))
def test_no_ticket_closes_before_it_opens(seed: int) -> None:
    _, world = new_world(seed, 40, 14)
    backwards = [t["id"] for t in world.tickets if "closed" in t and t["closed"] < t["opened"]]
    assert backwards == []
