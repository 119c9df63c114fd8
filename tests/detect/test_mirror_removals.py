"""The home's mirror follows removals from the directory: a ticket deleted by the ticket
system (through the REST feed) or left out of a full ``org import --prune`` stops explaining
accesses on the next run, and a removed protected subject's flag goes with it, exactly as in
a fresh copy of the database. Otherwise an insider whose ticket was deleted would stay
explained in detection's eyes until the mirror happened to be rebuilt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from custos.access import Custos
from custos.detect import connect
from custos.directory import import_lines, write_lines
from tests.api.conftest import run_service
from tests.detect.office import Office, at, iso
from tests.detect.test_mirror import Found, afresh, through_mirror


def mirrored(system: Custos, table: str) -> set[str]:
    """The ids of ``table`` (principals, subjects, tickets) in the home's mirror."""
    con = connect(1)
    try:
        path = system.settings.home / "detect" / "mirror.duckdb"
        con.execute(f"ATTACH '{path}' AS m (READ_ONLY)")
        return {str(row[0]) for row in con.execute(f"SELECT id FROM m.{table}").fetchall()}
    finally:
        con.close()


def rules_for(found: Found, principal: str) -> set[str]:
    return {str(f["rule"]) for _, f in found if principal in f["principals"]}  # type: ignore[operator]


def office_with_a_ticket(system: Custos) -> tuple[Office, str]:
    """The office, with emp-3's access to a colleague's account explained by ticket T, and
    emp-1's unexplained access to a protected subject; detection has run through the mirror,
    which holds them both."""
    office = Office()
    ticket = office.ticket("emp-3", "acct-2", opened=at(2, 9))
    office.access("emp-3", "acct-2", at(2, 12), "contact", ticket=ticket)
    office.access("emp-1", "act-1", at(3, 11), "contact")
    office.detect(system)
    found, update = through_mirror(system)
    assert update.rebuilt
    assert "colleague_account_access" not in rules_for(found, "emp-3")
    assert "protected_subject_access" in rules_for(found, "emp-1")
    assert ticket in mirrored(system, "tickets")
    assert "act-1" in mirrored(system, "subjects")
    return office, ticket


def test_a_ticket_deleted_through_the_feed_no_longer_explains_an_access(
    system: Custos,
) -> None:
    office, ticket = office_with_a_ticket(system)
    _, secret = system.accounts.create_token("ticket-feed", ["provisioner"])
    for url, _app in run_service(system):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as feed:
            assert feed.delete(f"/v1/tickets/{ticket}").status_code == 204
            assert feed.delete("/v1/subjects/act-1").status_code == 204
            found, update = through_mirror(system)
            # The access is unexplained now; the subject is no longer known as protected.
            assert "colleague_account_access" in rules_for(found, "emp-3")
            assert "protected_subject_access" not in rules_for(found, "emp-1")
            assert found == afresh(system)
            assert ticket not in mirrored(system, "tickets")
            assert "act-1" not in mirrored(system, "subjects")
            assert (update.rebuilt, update.removed_directory) == (False, 2)
            # Made again with the same id, the ticket explains the access again.
            stated = next(t for t in office.tickets if t["id"] == ticket)
            body = {k: stated[k] for k in ("kind", "subject", "assignee", "status", "opened_by")}
            reply = feed.put(f"/v1/tickets/{ticket}", json={**body, "opened": iso(at(2, 9))})
            assert reply.status_code == 200, reply.text
            found, update = through_mirror(system)
            assert (update.copied_directory, update.removed_directory) == (1, 0)
            assert found == afresh(system)
            assert "colleague_account_access" not in rules_for(found, "emp-3")
    # The service's own detection reads the same mirror: its alerts say the same.
    system.directory.remove_ticket(ticket, "test: deleted again")
    alerts = system.detect().alerts
    assert "colleague_account_access" in {a.rule for a in alerts if "emp-3" in a.principals}
    assert ticket not in mirrored(system, "tickets")


def test_what_org_import_prune_removes_leaves_the_mirror(system: Custos, tmp_path: Path) -> None:
    office, ticket = office_with_a_ticket(system)
    assert "emp-20" in mirrored(system, "principals")
    whole: dict[str, list[dict[str, Any]]] = {
        "principals": [p for p in office.principals if p["id"] != "emp-20"],
        "subjects": [s for s in office.subjects if s["id"] != "act-1"],
        "tickets": [t for t in office.tickets if t["id"] != ticket],
    }
    write_lines(tmp_path / "org.jsonl", whole)
    report = import_lines(system.directory, tmp_path / "org.jsonl", prune=True)
    assert report.removed == {"principals": 1, "subjects": 1, "tickets": 1}
    found, update = through_mirror(system)
    assert "colleague_account_access" in rules_for(found, "emp-3")
    assert "protected_subject_access" not in rules_for(found, "emp-1")
    assert found == afresh(system)
    assert "emp-20" not in mirrored(system, "principals")
    assert "act-1" not in mirrored(system, "subjects")
    assert ticket not in mirrored(system, "tickets")
    assert (update.rebuilt, update.removed_directory) == (False, 3)
    # Nothing removed since: the next run reads no ids and drops nothing.
    again, update = through_mirror(system)
    assert again == found
    assert (update.copied_directory, update.removed_directory) == (0, 0)
