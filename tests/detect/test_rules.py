"""Each rule fires on a small hand-made misuse and stays quiet on its explained twin.

The office (tests/detect/office.py) has two weeks of ordinary, fully explained work, so any
alert in a benign twin is a false alert.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from custos.access import Custos
from tests.detect.office import Office, at, rules_for


@pytest.fixture
def office() -> Office:
    return Office()


def test_ordinary_work_raises_no_alert(system: Custos, office: Office) -> None:
    assert office.detect(system) == []


@pytest.mark.parametrize("explained", [False, True])
def test_protected_subject_access(system: Custos, office: Office, explained: bool) -> None:
    ticket = office.ticket("emp-1", "jour-1", opened=at(3, 9)) if explained else None
    evidence = office.access("emp-1", "jour-1", at(3, 11), "ip_history", ticket=ticket)
    alerts = office.detect(system)
    if explained:
        assert alerts == []
        return
    (alert,) = [a for a in alerts if a.rule == "protected_subject_access"]
    assert alert.principals == ("emp-1",)
    assert alert.subjects == ("jour-1",)
    assert alert.events == (evidence,)
    assert alert.severity == "critical"
    assert "journalist" in alert.explanation


def test_protected_subject_under_a_self_opened_ticket_still_alerts(
    system: Custos, office: Office
) -> None:
    ticket = office.ticket("emp-1", "act-1", opened=at(3, 9), opened_by="emp-1")
    office.access("emp-1", "act-1", at(3, 11), "contact", ticket=ticket)
    assert "protected_subject_access" in rules_for(office.detect(system), "emp-1")


def test_a_two_person_grant_explains_protected_access(system: Custos, office: Office) -> None:
    office.access("emp-1", "jour-1", at(3, 11), "ip_history", grant="G-1")
    assert office.detect(system) == []


@pytest.mark.parametrize("explained", [False, True])
def test_colleague_account_access(system: Custos, office: Office, explained: bool) -> None:
    ticket = office.ticket("emp-3", "acct-2", opened=at(2, 9)) if explained else None
    office.access("emp-3", "acct-2", at(2, 12), "contact", ticket=ticket)
    rules = rules_for(office.detect(system), "emp-3")
    assert ("colleague_account_access" in rules) is not explained
    if explained:
        assert office.detect(system) == []


@pytest.mark.parametrize("explained", [False, True])
def test_leak_hunt_the_2022_pattern(system: Custos, office: Office, explained: bool) -> None:
    office.principals.append(
        {
            "id": "emp-21",
            "name": "Auditor 2",
            "role": "internal_audit",
            "team": "internal-audit",
            "country": "US",
        }
    )
    kind = "internal_investigation"
    t1 = office.ticket("emp-20", "jour-1", kind, at(8, 8)) if explained else None
    t2 = office.ticket("emp-21", "acct-2", kind, at(8, 8)) if explained else None
    office.access("emp-20", "jour-1", at(8, 10), "location", kind, ticket=t1)
    office.access("emp-21", "acct-2", at(9, 10), "ip_history", kind, ticket=t2)
    alerts = office.detect(system)
    if explained:
        assert alerts == []
        return
    (hunt,) = [a for a in alerts if a.rule == "leak_hunt"]
    assert set(hunt.principals) == {"emp-20", "emp-21"}
    assert set(hunt.subjects) == {"jour-1", "acct-2"}
    assert hunt.severity == "critical"


@pytest.mark.parametrize("explained", [False, True])
def test_repeated_subject_stalking(system: Custos, office: Office, explained: bool) -> None:
    ticket = (
        office.ticket("emp-4", "user-7", opened=at(0, 8), closed=at(12, 0)) if explained else None
    )
    for day in (1, 4, 9):
        office.access("emp-4", "user-7", at(day, 15), "contact", ticket=ticket)
    alerts = office.detect(system)
    if explained:
        assert alerts == []
    else:
        (alert,) = [a for a in alerts if a.rule == "repeated_subject"]
        assert alert.subjects == ("user-7",)
        assert "3 separate occasions" in alert.explanation


@pytest.mark.parametrize("explained", [False, True])
def test_unexplained_volume_beyond_peers(system: Custos, office: Office, explained: bool) -> None:
    for n in range(1, 21):
        subject = f"user-{n}"
        ticket = office.ticket("emp-5", subject, opened=at(8, 8)) if explained else None
        office.access("emp-5", subject, at(8, 10 + n / 10), ticket=ticket)
    rules = rules_for(office.detect(system), "emp-5")
    assert ("unexplained_volume" in rules) is not explained
    assert explained is (rules == set())


@pytest.mark.parametrize("explained", [False, True])
def test_convergence_on_one_subject(system: Custos, office: Office, explained: bool) -> None:
    for n in (1, 2, 3, 6):
        ticket = office.ticket(f"emp-{n}", "user-50", opened=at(9, 8)) if explained else None
        office.access(f"emp-{n}", "user-50", at(9, 10 + n), ticket=ticket)
    alerts = office.detect(system)
    if explained:
        assert alerts == []
    else:
        (alert,) = [a for a in alerts if a.rule == "convergence"]
        assert set(alert.principals) == {"emp-1", "emp-2", "emp-3", "emp-6"}


@pytest.mark.parametrize("explained", [False, True])
def test_credentials_and_messages(system: Custos, office: Office, explained: bool) -> None:
    ticket = office.ticket("emp-6", "user-30", opened=at(2, 9)) if explained else None
    office.access("emp-6", "user-30", at(2, 11), "credentials", ticket=ticket)
    assert ("sensitive_category_access" in rules_for(office.detect(system), "emp-6")) is not (
        explained
    )


@pytest.mark.parametrize("explained", [False, True])
def test_new_role(system: Custos, office: Office, explained: bool) -> None:
    office.person("emp-7")["role_since"] = "2026-01-12T00:00:00Z"
    for n in range(40, 46):
        ticket = office.ticket("emp-7", f"user-{n}", opened=at(8, 8)) if explained else None
        office.access("emp-7", f"user-{n}", at(8, 9 + (n - 40) / 2), ticket=ticket)
    rules = rules_for(office.detect(system), "emp-7")
    assert ("new_role_access" in rules) is not explained
    assert explained is (rules == set())


@pytest.mark.parametrize("explained", [False, True])
def test_leaving_staff_export(system: Custos, office: Office, explained: bool) -> None:
    office.person("emp-8")["status"] = "leaving"
    ticket = office.ticket("emp-8", "user-60", "legal_process", at(10, 8)) if explained else None
    office.access(
        "emp-8",
        "user-60",
        at(10, 11),
        "contact",
        "legal_process",
        ticket=ticket,
        action="export",
        records=400,
    )
    rules = rules_for(office.detect(system), "emp-8")
    assert ("leaving_staff_access" in rules) is not explained
    assert explained is (rules == set())


@pytest.mark.parametrize("explained", [False, True])
def test_bulk_export(system: Custos, office: Office, explained: bool) -> None:
    ticket = office.ticket("emp-2", "user-61", opened=at(10, 8)) if explained else None
    office.access(
        "emp-2", "user-61", at(10, 11), "contact", ticket=ticket, action="export", records=5000
    )
    rules = rules_for(office.detect(system), "emp-2")
    assert ("bulk_export" in rules) is not explained
    assert explained is (rules == set())


@pytest.mark.parametrize("explained", [False, True])
def test_off_hours(system: Custos, office: Office, explained: bool) -> None:
    for n in (70, 71, 72):
        ticket = office.ticket("emp-1", f"user-{n}", opened=at(9, 1)) if explained else None
        office.access("emp-1", f"user-{n}", at(9, 3 + (n - 70) / 10), ticket=ticket)
    rules = rules_for(office.detect(system), "emp-1")
    assert ("off_hours_access" in rules) is not explained
    assert explained is (rules == set())


@pytest.mark.parametrize("shopping", [True, False])
def test_deny_then_retry(system: Custos, office: Office, shopping: bool) -> None:
    moment = at(3, 14)
    if shopping:
        for purpose, decision in (
            ("support", "deny"),
            ("fraud", "deny"),
            ("trust_safety", "allow"),
        ):
            moment += timedelta(minutes=3)
            office.access("emp-3", "user-33", moment, "location", purpose, decision=decision)
    else:
        # Refused before the ticket reached them, then allowed under it: ordinary.
        office.access("emp-3", "user-33", moment, "contact", decision="deny", precision=None)
        ticket = office.ticket("emp-3", "user-33", opened=moment + timedelta(minutes=5))
        office.access("emp-3", "user-33", moment + timedelta(minutes=10), "contact", ticket=ticket)
    rules = rules_for(office.detect(system), "emp-3")
    assert ("deny_retry" in rules) is shopping
    if not shopping:
        assert rules == set()


@pytest.mark.parametrize("justified", [False, True])
def test_break_glass(system: Custos, office: Office, justified: bool) -> None:
    moment = at(4, 15)
    ticket = (
        office.ticket(
            "emp-4",
            "user-44",
            "security_incident",
            moment + timedelta(minutes=30),
            opened_by="system",
        )
        if justified
        else None
    )
    office.access(
        "emp-4",
        "user-44",
        moment,
        "credentials",
        "security_incident",
        ticket=ticket,
        break_glass=True,
    )
    rules = rules_for(office.detect(system), "emp-4")
    assert ("break_glass_use" in rules) is not justified
    if justified:
        assert rules == set()


@pytest.mark.parametrize("self_opened", [True, False])
def test_pretext_tickets(system: Custos, office: Office, self_opened: bool) -> None:
    opener = "emp-6" if self_opened else "subject"
    for n in range(10, 18):
        ticket = office.ticket("emp-6", f"user-{n}", opened=at(9, 9), opened_by=opener)
        office.access("emp-6", f"user-{n}", at(9, 10 + (n - 10) / 4), "profile", ticket=ticket)
    rules = rules_for(office.detect(system), "emp-6")
    assert ("pretext_tickets" in rules) is self_opened
    if not self_opened:
        assert rules == set()


@pytest.mark.parametrize("explained", [False, True])
def test_rare_category_for_the_role(system: Custos, office: Office, explained: bool) -> None:
    opener = "subject" if explained else "emp-5"
    for n in (20, 21, 22):
        ticket = office.ticket("emp-5", f"user-{n}", opened=at(3, 9), opened_by=opener)
        office.access("emp-5", f"user-{n}", at(3, 10 + (n - 20) / 4), "location", ticket=ticket)
    rules = rules_for(office.detect(system), "emp-5")
    assert ("rare_category_access" in rules) is not explained
    if explained:
        assert rules == set()


def test_thresholds_come_from_the_detect_section(system: Custos, office: Office) -> None:
    for day in (1, 4, 9):
        office.access("emp-4", "user-7", at(day, 15))
    alerts = office.detect(system, {"repeat_min_days": 4})
    assert "repeated_subject" not in rules_for(alerts, "emp-4")
