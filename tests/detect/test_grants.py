"""Grants are evidence, not excuses: reads under grants whose approvers are not independent
of the holder alert, and name the approvals; reads under independent grants do not."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from custos.access import Custos
from custos.detect import Alert, run_detection
from custos.sim.run import load_grants
from tests.detect.office import Office, at, iso, rules_for
from tests.factories import load_org


def _person(pid: str, team: str, role: str = "support_agent", **more: Any) -> dict[str, Any]:
    return {"id": pid, "name": pid, "role": role, "team": team, "country": "US", **more}


@pytest.fixture
def office() -> Office:
    office = Office()
    office.principals += [
        _person("po-1", "privacy-office", "privacy_officer", groups=["privacy_office"]),
        _person("lead-x", "legal", "legal_counsel", groups=["approvers"]),
    ]
    return office


class Grants:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, holder: str, subject: str, approvers: list[str], starts: datetime) -> str:
        name = f"G-{len(self.records) + 1}"
        self.records.append(
            {
                "grant": name,
                "principal": holder,
                "subject": subject,
                "categories": ["ip_history"],
                "actions": ["read"],
                "purpose": "support",
                "ticket": None,
                "precision": "precise",
                "approvals": len(approvers),
                "approver_groups": ["approvers"],
                "approvers": approvers,
                "starts": iso(starts),
                "ends": iso(starts + timedelta(hours=8)),
                "reason": "a reason",
            }
        )
        return name


def detect(system: Custos, office: Office, grants: Grants, *, mirror: bool = False) -> list[Alert]:
    """Like :meth:`Office.detect`, with the grants stored as the approvals part stores them."""
    load_org(
        system,
        {"principals": office.principals, "subjects": office.subjects, "tickets": office.tickets},
    )
    system.events.append(office.events)
    lines = [json.dumps(g) for g in grants.records]
    load_grants(system.db, lines, "test")
    home = system.settings.home if mirror else None
    return run_detection(system.db, system.directory, home=home).alerts


def _read(office: Office, holder: str, subject: str, day: int, grant: str) -> str:
    return office.access(holder, subject, at(day, 11), "ip_history", grant=grant)


@pytest.mark.parametrize("mirror", [False, True])
def test_reads_under_ring_grants_alert_naming_the_ring(
    system: Custos, office: Office, mirror: bool
) -> None:
    ring = ["rg-1", "rg-2", "rg-3", "rg-4"]
    for n, pid in enumerate(ring):
        office.principals.append(_person(pid, f"team-{n}"))  # no two on one team
    grants = Grants()
    evidence = []
    for n, pid in enumerate(ring):
        approver = ring[(n + 1) % len(ring)]
        name = grants.add(pid, "jour-1", [approver, "po-1"], at(8, 9 + n))
        evidence.append(office.access(pid, "jour-1", at(8, 10 + n), "ip_history", grant=name))
    alerts = detect(system, office, grants, mirror=mirror)
    (alert,) = [a for a in alerts if a.rule == "approval_ring"]
    assert alert.principals == tuple(ring)
    assert set(alert.events) == set(evidence)
    assert "a ring of 4 (rg-1, rg-2, rg-3, rg-4" in alert.explanation
    assert "rg-2 approved rg-1" in alert.explanation
    assert alert.severity == "critical"
    # The grant no longer explains the reads, so the protected-subject rule sees them too.
    assert "protected_subject_access" in rules_for(alerts, "rg-1")
    assert "close_approvers" not in {a.rule for a in alerts}


def test_a_reciprocal_pair_is_a_ring_of_two(system: Custos, office: Office) -> None:
    office.principals += [_person("rp-1", "team-a"), _person("rp-2", "team-b")]
    grants = Grants()
    _read(office, "rp-1", "act-1", 8, grants.add("rp-1", "act-1", ["rp-2", "po-1"], at(8, 9)))
    _read(office, "rp-2", "act-1", 9, grants.add("rp-2", "act-1", ["rp-1", "po-1"], at(9, 9)))
    alerts = detect(system, office, grants)
    (alert,) = [a for a in alerts if a.rule == "approval_ring"]
    assert "a reciprocal pair (rp-1, rp-2" in alert.explanation


def test_reads_under_independent_grants_raise_nothing(system: Custos, office: Office) -> None:
    grants = Grants()
    for n in range(1, 5):
        name = grants.add(f"emp-{n}", "jour-1", ["po-1", "lead-x"], at(8, 8 + n))
        # Each with a ticket of their own, opened by the subject: ordinary protected work.
        ticket = office.ticket(f"emp-{n}", "jour-1", opened=at(8, 7))
        office.access(f"emp-{n}", "jour-1", at(8, 9 + n), "ip_history", ticket=ticket, grant=name)
    # And the ring's approvals made to people outside it do not make a ring.
    _read(office, "emp-5", "act-1", 9, grants.add("emp-5", "act-1", ["po-1"], at(9, 9)))
    assert detect(system, office, grants) == []


def test_an_approver_from_the_holders_own_team_is_named(system: Custos, office: Office) -> None:
    grants = Grants()
    ids = [_read(office, "emp-1", "jour-1", 8, grants.add("emp-1", "jour-1", ["emp-2"], at(8, 9)))]
    alerts = detect(system, office, grants)
    (alert,) = [a for a in alerts if a.rule == "close_approvers"]
    assert alert.principals == ("emp-1",)
    assert alert.events == tuple(ids)
    assert "emp-2 (same team)" in alert.explanation
    assert "protected_subject_access" in rules_for(alerts, "emp-1")


def test_a_managers_approval_is_the_management_chain(system: Custos, office: Office) -> None:
    office.person("emp-1")["manager"] = "boss-1"
    office.principals.append(_person("boss-1", "elsewhere", groups=["approvers"]))
    grants = Grants()
    _read(office, "emp-1", "minor-1", 8, grants.add("emp-1", "minor-1", ["boss-1"], at(8, 9)))
    alerts = detect(system, office, grants)
    (alert,) = [a for a in alerts if a.rule == "close_approvers"]
    assert "boss-1 (management chain)" in alert.explanation


def test_grant_holders_converging_on_one_subject(system: Custos, office: Office) -> None:
    grants = Grants()
    for n in (1, 3, 5):
        name = grants.add(f"emp-{n}", "jour-1", ["po-1", "lead-x"], at(8, 8 + n))
        _read(office, f"emp-{n}", "jour-1", 8, name)
    alerts = detect(system, office, grants)
    (alert,) = [a for a in alerts if a.rule == "grant_convergence"]
    assert alert.principals == ("emp-1", "emp-3", "emp-5")
    assert alert.subjects == ("jour-1",)
    assert "3 different people" in alert.explanation
    # Two are not a crowd.
    assert [a.rule for a in alerts] == ["grant_convergence"]


def test_two_grant_holders_are_not_a_convergence(system: Custos, office: Office) -> None:
    grants = Grants()
    for n in (1, 3):
        _read(office, f"emp-{n}", "jour-1", 8, grants.add(f"emp-{n}", "jour-1", ["po-1"], at(8, 9)))
    assert detect(system, office, grants) == []


def test_one_persons_grants_far_above_their_peers(system: Custos, office: Office) -> None:
    grants = Grants()
    for n in range(1, 9):  # peers: one independent grant each, used under a ticket
        subject = f"user-{n}"
        ticket = office.ticket(f"emp-{n}", subject, opened=at(1, 8))
        name = grants.add(f"emp-{n}", subject, ["po-1", "lead-x"], at(1, 9))
        office.access(f"emp-{n}", subject, at(1, 10), ticket=ticket, grant=name)
    many = []
    for k in range(10):
        subject = f"user-{20 + k}"
        name = grants.add("emp-1", subject, ["po-1", "lead-x"], at(8 + k % 5, 9))
        many.append(office.access("emp-1", subject, at(8 + k % 5, 10), "contact", grant=name))
    alerts = detect(system, office, grants)
    (alert,) = [a for a in alerts if a.rule == "grant_volume"]
    assert alert.principals == ("emp-1",)
    assert set(alert.events) == set(many)
    assert "received 10 grants" in alert.explanation
    assert [a.rule for a in alerts] == ["grant_volume"]
