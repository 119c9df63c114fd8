"""Misuse written from documented cases that the simulator does not ship, injected into a
simulated organisation: the detectors must be general enough to name these culprits too."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

from custos.sim import evaluate, simulate
from custos.sim.world import Person, World, shift_time


def _someone(world: World, role: str, used: set[str]) -> Person:
    person = next(
        p
        for p in world.people
        if p.role == role and p.status == "active" and p.role_since is None and p.id not in used
    )
    used.add(person.id)
    return person


def _label(world: World, name: str, who: list[str], events: list[dict[str, Any]]) -> None:
    world.labels[name] = {"culprits": who, "events": [e["id"] for e in events], "description": name}


def takeover_for_hire(rng: random.Random, world: World, used: set[str]) -> None:
    """Staff paid to hand hijacked accounts back: self-made tickets, credentials changed."""
    person = _someone(world, "support_agent", used)
    day = world.start + timedelta(days=9)
    events = []
    for subject in rng.sample(world.ordinary_subjects(), k=5):
        moment = shift_time(rng, person, day + timedelta(days=rng.randint(0, 3)))
        ticket = world.ticket(
            "support",
            subject,
            person.id,
            moment - timedelta(minutes=5),
            moment + timedelta(hours=1),
            person.id,
        )
        events.append(
            world.event(
                time=moment,
                principal=person.id,
                subject=subject,
                category="credentials",
                purpose="support",
                ticket=ticket["id"],
                action="modify",
            )
        )
    _label(world, "takeover_for_hire", [person.id], events)


def officials_hijacked(rng: random.Random, world: World, used: set[str]) -> None:
    """An admin tool used to reset high-profile accounts within an hour."""
    person = _someone(world, "security_responder", used)
    moment = shift_time(rng, person, world.start + timedelta(days=11))
    events = []
    for subject in world.flagged("public_official")[:3]:
        moment += timedelta(minutes=rng.uniform(3, 15))
        events.append(
            world.event(
                time=moment,
                principal=person.id,
                subject=subject,
                category="credentials",
                purpose="security_incident",
                action="modify",
            )
        )
    _label(world, "officials_hijacked", [person.id], events)


def slow_exfiltration(rng: random.Random, world: World, used: set[str]) -> None:
    """Months of small exports by one analyst (here: every working day)."""
    person = _someone(world, "data_scientist", used)
    events = []
    for offset in range(world.days):
        day = world.start + timedelta(days=offset)
        if day.weekday() < 5:
            events.append(
                world.event(
                    time=shift_time(rng, person, day),
                    principal=person.id,
                    subject=rng.choice(world.ordinary_subjects()),
                    category="contact",
                    purpose="product_debug",
                    action="export",
                    records=rng.randint(300, 900),
                )
            )
    _label(world, "slow_exfiltration", [person.id], events)


def camera_voyeur(rng: random.Random, world: World, used: set[str]) -> None:
    """An engineer keeps watching a few customers' private content."""
    person = _someone(world, "engineer", used)
    events = []
    for subject in rng.sample(world.ordinary_subjects(), k=3):
        for offset in rng.sample(range(2, world.days), k=4):
            events.append(
                world.event(
                    time=shift_time(rng, person, world.start + timedelta(days=offset)),
                    principal=person.id,
                    subject=subject,
                    category="content",
                    purpose="product_debug",
                )
            )
    _label(world, "camera_voyeur", [person.id], events)


def test_unseen_cases_are_caught_within_budget(tmp_path: Path) -> None:
    extra = {
        "takeover_for_hire": takeover_for_hire,
        "officials_hijacked": officials_hijacked,
        "slow_exfiltration": slow_exfiltration,
        "camera_voyeur": camera_voyeur,
    }
    simulate(tmp_path, employees=120, days=28, seed=11, extra=extra)
    report = evaluate(tmp_path)
    assert {s.name for s in report.scenarios} == set(extra)
    assert [s.name for s in report.scenarios if not s.detected] == []
    assert report.false_rate <= 1.0, report.false_rules
