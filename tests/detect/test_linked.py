"""Detection sees a person, not an account (DESIGN.md principle 11): reads of a journalist's
linked account alert as reads of hers do, a grant on the linked account is no excuse, and a
hunt or a burst spread over one person's accounts is one person."""

from __future__ import annotations

import pytest

from custos.access import Custos
from tests.detect.office import Office, at


@pytest.fixture
def office() -> Office:
    office = Office()
    office.subjects += [
        {"id": "jour-alt", "jurisdiction": "US", "linked": ["jour-1"]},
        {"id": "user-150", "jurisdiction": "US", "linked": ["user-50"]},
    ]
    return office


def test_reading_a_journalists_linked_account_alerts_as_hers_does(
    system: Custos, office: Office
) -> None:
    evidence = office.access("emp-1", "jour-alt", at(3, 11), "ip_history")
    (alert,) = office.detect(system)
    assert alert.rule == "protected_subject_access"
    assert (alert.subjects, alert.events, alert.severity) == (
        ("jour-alt",),
        (evidence,),
        "critical",
    )
    assert "journalist" in alert.explanation
    assert "jour-alt is linked to a protected person's account" in alert.explanation


def test_a_grant_on_the_linked_account_is_no_excuse(system: Custos, office: Office) -> None:
    office.access("emp-1", "jour-1", at(3, 11), "ip_history", grant="G-1")
    office.access("emp-2", "jour-alt", at(3, 11), "ip_history", grant="G-2")
    (alert,) = office.detect(system)
    # Her own account under a two-person grant is explained; her second account is not.
    assert (alert.rule, alert.principals) == ("protected_subject_access", ("emp-2",))
    assert "A grant on such an account does not explain it" in alert.explanation


def test_a_hunt_over_her_accounts_is_one_protected_person(system: Custos, office: Office) -> None:
    office.access("emp-1", "jour-1", at(3, 11), "ip_history")
    office.access("emp-1", "jour-alt", at(3, 12), "ip_history")
    (alert,) = office.detect(system)
    assert alert.subjects == ("jour-1", "jour-alt")
    assert "1 protected person (2 linked accounts)" in alert.explanation


@pytest.mark.parametrize("linked", [True, False])
def test_convergence_over_one_persons_accounts(
    system: Custos, office: Office, linked: bool
) -> None:
    if not linked:
        office.subjects[-1] = {"id": "user-150", "jurisdiction": "US"}
    for n, subject in ((1, "user-50"), (2, "user-50"), (3, "user-150"), (6, "user-150")):
        office.access(f"emp-{n}", subject, at(9, 10 + n))
    found = [a for a in office.detect(system) if a.rule == "convergence"]
    if not linked:
        # Two people on each of two unrelated accounts: below the bar.
        assert found == []
        return
    (alert,) = found
    assert set(alert.principals) == {"emp-1", "emp-2", "emp-3", "emp-6"}
    assert alert.subjects == ("user-150", "user-50")
    assert "same person" in alert.explanation
