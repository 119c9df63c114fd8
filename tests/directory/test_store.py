"""The stored directory: idempotent, all-or-nothing merges on a real SQLite file."""

from __future__ import annotations

import pytest

from custos.access import Custos
from custos.directory import parse_text
from custos.errors import UnknownPrincipal, UnknownSubject, UnknownTicket, ValidationFailed
from tests.factories import SUPPORT_WORLD, load_org, org


def test_merging_twice_changes_nothing(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    version = system.directory.version()
    report = system.directory.merge(parse_text(_yaml(SUPPORT_WORLD), "again"))
    assert report.total_changes == 0
    assert report.unchanged == {"principals": 5, "subjects": 4, "tickets": 7}
    assert system.directory.version() == version


def test_a_changed_entry_is_updated_and_seen_at_once(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    assert system.directory.ticket("T-1").status == "open"
    changed = org(
        principals=[{"id": "emp-1001", "role": "support_agent", "manager": "emp-1000"}],
        tickets=[
            {
                "id": "T-1",
                "kind": "support",
                "subject": "user-1",
                "assignee": "emp-1001",
                "status": "closed",
            }
        ],
    )
    report = system.directory.merge(parse_text(_yaml(changed), "update"))
    assert report.changed["tickets"] == 1
    assert system.directory.ticket("T-1").status == "closed"


def test_dangling_ticket_references_load_nothing(system: Custos) -> None:
    bad = org(
        principals=[{"id": "emp-9", "role": "support_agent"}],
        tickets=[
            {
                "id": "T-9",
                "kind": "support",
                "subject": "user-404",
                "assignee": "emp-404",
                "status": "open",
            }
        ],
    )
    with pytest.raises(ValidationFailed) as caught:
        system.directory.merge(parse_text(_yaml(bad), "bad.yaml"), source="bad.yaml")
    assert caught.value.problems == [
        "bad.yaml: tickets[0] (id 'T-9'): field 'assignee': unknown principal 'emp-404'",
        "bad.yaml: tickets[0] (id 'T-9'): field 'subject': unknown subject 'user-404'",
    ]
    with pytest.raises(UnknownPrincipal):
        system.directory.principal("emp-9")
    assert system.directory.version() == 0


def test_a_manager_or_employee_who_is_nobody_loads_nothing(system: Custos) -> None:
    # A case variant of a real id would cut the management chain short (the real manager
    # then approves as "independent") or switch rule own-account off.
    load_org(system, SUPPORT_WORLD)
    bad = org(
        principals=[{"id": "emp-9", "role": "support_agent", "manager": "EMP-1000"}],
        subjects=[{"id": "user-9", "jurisdiction": "US", "employee": "EMP-1001"}],
    )
    with pytest.raises(ValidationFailed) as caught:
        system.directory.merge(parse_text(_yaml(bad), "hr.yaml"), source="hr.yaml")
    assert caught.value.problems == [
        "hr.yaml: principals[0] (id 'emp-9'): field 'manager': unknown principal 'EMP-1000'",
        "hr.yaml: subjects[0] (id 'user-9'): field 'employee': unknown principal 'EMP-1001'",
    ]
    with pytest.raises(UnknownPrincipal):
        system.directory.principal("emp-9")
    good = org(
        principals=[{"id": "emp-9", "role": "support_agent", "manager": "emp-1000"}],
        subjects=[{"id": "user-9", "jurisdiction": "US", "employee": "emp-9"}],
    )
    system.directory.merge(parse_text(_yaml(good), "hr.yaml"), source="hr.yaml")
    assert system.directory.management_chain("emp-9") == ["emp-1000"]


def test_references_may_point_at_entries_already_stored(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    later = org(
        tickets=[
            {
                "id": "T-99",
                "kind": "support",
                "subject": "user-2",
                "assignee": "emp-1002",
                "status": "open",
            }
        ]
    )
    system.directory.merge(parse_text(_yaml(later), "later"))
    assert system.directory.ticket("T-99").assignee == "emp-1002"


def test_unknown_ids_name_the_id(system: Custos) -> None:
    with pytest.raises(UnknownPrincipal, match="'emp-x'"):
        system.directory.principal("emp-x")
    with pytest.raises(UnknownSubject, match="'user-x'"):
        system.directory.subject("user-x")
    with pytest.raises(UnknownTicket, match="'T-x'"):
        system.directory.ticket("T-x")


def test_management_chain_and_reports(system: Custos) -> None:
    load_org(
        system,
        org(
            principals=[
                {"id": "ceo", "role": "engineer"},
                {"id": "vp", "role": "engineer", "manager": "ceo"},
                {"id": "lead", "role": "engineer", "manager": "vp"},
                {"id": "dev", "role": "engineer", "manager": "lead"},
                {"id": "loop", "role": "engineer", "manager": "loop"},
            ]
        ),
    )
    assert system.directory.management_chain("dev") == ["lead", "vp", "ceo"]
    assert system.directory.reports("vp") == {"lead", "dev"}
    assert system.directory.management_chain("loop") == []


def test_changes_from_another_process_are_seen_after_the_staleness_window(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    other = Custos.open(system.settings.home)
    try:
        assert other.directory.ticket("T-1").status == "open"
        system.directory.set_ticket_status("T-1", "closed")
        other.directory.max_staleness = 0.0
        assert other.directory.ticket("T-1").status == "closed"
    finally:
        other.close()


def _yaml(data: object) -> str:
    import yaml

    return yaml.safe_dump(data)
