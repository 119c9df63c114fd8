"""Cases: alerts filed per incident, triage, and dispositions feeding suppression."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from custos.access import Custos
from custos.detect import Casebook, EventStore, UnknownAlert, UnknownCase, run_detection
from custos.detect.engine import Finding
from custos.errors import InvalidInput, Refused
from tests.detect.office import Office, at


@pytest.fixture
def office() -> Office:
    office = Office()
    # Two findings about emp-1 in week one: a journalist and a colleague's account.
    office.access("emp-1", "jour-1", at(1, 11), "ip_history")
    office.access("emp-1", "acct-2", at(2, 11), "profile")
    return office


def test_alerts_of_one_principal_share_a_case_and_rerunning_adds_nothing(
    system: Custos, office: Office
) -> None:
    first = office.detect(system)
    assert {a.rule for a in first} == {"protected_subject_access", "colleague_account_access"}
    assert len({a.case for a in first}) == 1
    again = run_detection(system.db, system.directory)
    assert [a.id for a in again.alerts] == [a.id for a in first]
    book = Casebook(system.db)
    (case,) = book.cases()
    assert case.principal == "emp-1"
    assert case.severity == "critical"
    assert len(case.alerts) == 2


def test_assign_comment_close(system: Custos, office: Office) -> None:
    office.detect(system)
    book = Casebook(system.db)
    (case,) = book.cases("open")
    book.assign(case.id, "emp-20")
    book.comment(case.id, "emp-20", "asked the agent's manager")
    closed = book.close(case.id, "confirmed_misuse", author="emp-20", comment="admitted")
    assert closed.status == "closed"
    assert closed.assignee == "emp-20"
    assert closed.disposition == "confirmed_misuse"
    assert [c.text for c in closed.comments] == ["asked the agent's manager", "admitted"]
    assert book.cases("open") == []
    with pytest.raises(InvalidInput, match="already closed"):
        book.close(case.id, "legitimate", author="emp-20")


def test_bad_ids_and_dispositions_are_clear_errors(system: Custos, office: Office) -> None:
    office.detect(system)
    book = Casebook(system.db)
    with pytest.raises(UnknownCase):
        book.case("case-999")
    with pytest.raises(UnknownCase, match=r"unknown case 'nonsense' \(expected case-N"):
        book.assign("nonsense", "emp-20")
    # Found by schemathesis: digits that are not ASCII, and numbers no column can hold.
    for bad in ("al-\u00b3", "\u00b3", "al-" + "9" * 40):
        with pytest.raises(UnknownAlert, match=r"unknown alert .*expected al-N, e\.g\. al-12"):
            book.alert(bad)
    (case,) = book.cases()
    with pytest.raises(InvalidInput, match="disposition 'fine'"):
        book.close(case.id, "fine", author="x")
    with pytest.raises(InvalidInput):
        book.comment(case.id, "x", "   ")


@pytest.mark.parametrize(
    ("disposition", "suppressed"),
    [("legitimate", True), ("false_positive", True), ("confirmed_misuse", False)],
)
def test_dispositions_feed_suppression(
    system: Custos, office: Office, disposition: str, suppressed: bool
) -> None:
    office.detect(system)
    book = Casebook(system.db)
    (case,) = book.cases()
    book.close(case.id, disposition, author="emp-20")
    # The same patterns again, a week later: the same rule, principal and subjects.
    events = EventStore(system.db)
    events.append(
        [
            {
                "id": "late-1",
                "time": "2026-01-13T11:00:00Z",
                "principal": "emp-1",
                "action": "read",
                "subject": "jour-1",
                "category": "ip_history",
                "purpose": "support",
                "decision": "allow",
                "precision": "coarse",
            },
            {
                "id": "late-2",
                "time": "2026-01-13T12:00:00Z",
                "principal": "emp-1",
                "action": "read",
                "subject": "acct-2",
                "category": "profile",
                "purpose": "support",
                "decision": "allow",
                "precision": "coarse",
            },
        ]
    )
    run = run_detection(system.db, system.directory)
    late = [a for a in run.alerts if "late-1" in a.events or "late-2" in a.events]
    if suppressed:
        assert late == []
        assert run.suppressed == 2
        assert book.cases("open") == []
    else:
        assert {a.rule for a in late} == {"protected_subject_access", "colleague_account_access"}
        assert len(book.cases("open")) == 1


def test_suppression_by_subject_does_not_hide_another_subject(
    system: Custos, office: Office
) -> None:
    office.detect(system)
    book = Casebook(system.db)
    (case,) = book.cases()
    book.close(case.id, "legitimate", author="emp-20")
    EventStore(system.db).append(
        [
            {
                "id": "other",
                "time": "2026-01-13T11:00:00Z",
                "principal": "emp-1",
                "action": "read",
                "subject": "act-1",
                "category": "contact",
                "purpose": "support",
                "decision": "allow",
                "precision": "coarse",
            }
        ]
    )
    run = run_detection(system.db, system.directory)
    assert [a.subjects for a in run.alerts if "other" in a.events] == [("act-1",)]


def test_group_moves_alerts_into_one_case(system: Custos, office: Office) -> None:
    office.access("emp-3", "user-9", at(3, 11), "credentials")
    alerts = office.detect(system)
    book = Casebook(system.db)
    mine = [a for a in alerts if a.principals == ("emp-1",)]
    theirs = [a for a in alerts if a.principals == ("emp-3",)]
    merged = book.group([theirs[0].id], into=mine[0].case)
    assert {a.id for a in merged.alerts} == {a.id for a in mine} | {theirs[0].id}


def _finding(rule: str, principals: tuple[str, ...], first: datetime, days: float = 1) -> Finding:
    return Finding(
        rule=rule,
        severity="high",
        principals=principals,
        subjects=("user-1",),
        events=(f"{rule}-{'-'.join(principals)}-{first:%j}",),
        first_seen=first,
        last_seen=first + timedelta(days=days),
        explanation="made by hand",
        key=f"{'-'.join(principals)}-{first:%j}",
    )


def test_one_incident_of_several_people_is_one_case(system: Custos) -> None:
    """The 2022 shape: each colleague's own alerts, and alerts naming them together, over
    two days, land in one case; the case then says it is about several people."""
    team = ("emp-1", "emp-2", "emp-3", "emp-4")
    findings = [_finding("protected_subject_access", (p,), at(1, 9)) for p in team]
    findings += [_finding("repeated_subject", (p,), at(2, 9)) for p in team]
    findings.append(_finding("leak_hunt", team, at(1, 10)))
    book = Casebook(system.db)
    alerts = book.record(findings, now=at(3, 0))
    assert len(alerts) == 9
    (case,) = book.cases()
    assert case.principal == "(several)"
    assert case.title == "4 people: leak hunt"  # the widest alert opened it
    assert len(case.alerts) == 9
    # Triage still works on it, and nobody in it may close it.
    with pytest.raises(Refused, match="the case is about them"):
        book.close(case.id, "legitimate", author="x", acting_as="emp-3")
    book.close(case.id, "false_positive", author="emp-20", acting_as="emp-20", now=at(3, 1))
    again = book.record([_finding("protected_subject_access", ("emp-2",), at(4, 9))], at(5, 0))
    assert again == []


def test_cases_part_by_people_and_by_time(system: Custos) -> None:
    """No principal in common, or the same principal more than a window apart: two cases
    (and alerts of one of them later still find theirs)."""
    book = Casebook(system.db, window_days=7)
    book.record(
        [
            _finding("bulk_export", ("emp-1",), at(0, 9)),
            _finding("bulk_export", ("emp-2",), at(0, 9)),
            # Within the window of the first: into its case, which then spans days 0 to 8.
            _finding("rare_category_access", ("emp-1",), at(7, 9)),
            # Sixteen days after that case's last alert ended: beyond the seven-day window.
            _finding("deny_retry", ("emp-1",), at(24, 10)),
        ],
        now=at(26, 0),
    )
    cases = {tuple(a.rule for a in c.alerts): c for c in book.cases()}
    assert set(cases) == {
        ("bulk_export", "rare_category_access"),
        ("bulk_export",),
        ("deny_retry",),
    }
    assert all(c.principal in ("emp-1", "emp-2") for c in cases.values())
