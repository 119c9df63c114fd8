"""The engine's classification beyond the cited ticket, and running its queries side by side.

The rules read one classified residue; most of it is classified by the ticket each event
cites, and the rest by tickets found in the directory (the principal's own uncited tickets,
tickets of another kind, teammates' tickets). These tests pin that second step down through
the rules that read it, and check that running queries side by side changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from custos.access import Custos
from custos.detect import DetectConfig, Detector, EventStore, connect, load_store
from tests.detect.office import Office, at, rules_for


def test_an_uncited_ticket_of_ones_own_explains_the_access(system: Custos) -> None:
    office = Office()
    office.ticket("emp-3", "acct-2", opened=at(2, 9))
    office.access("emp-3", "acct-2", at(2, 12), "contact")  # cites nothing
    assert "colleague_account_access" not in rules_for(office.detect(system), "emp-3")


def test_a_teammates_open_ticket_partly_explains_the_access(system: Custos) -> None:
    office = Office()
    office.ticket("emp-4", "acct-2", opened=at(2, 9))
    office.access("emp-3", "acct-2", at(2, 12), "contact")
    assert "colleague_account_access" not in rules_for(office.detect(system), "emp-3")


def test_a_teammates_ticket_closed_long_before_explains_nothing(system: Custos) -> None:
    office = Office()
    office.ticket("emp-4", "acct-2", opened=at(0, 9), closed=at(0, 10))
    office.access("emp-3", "acct-2", at(2, 12), "contact")
    assert "colleague_account_access" in rules_for(office.detect(system), "emp-3")


def test_ones_own_ticket_of_another_kind_nearby_partly_explains(system: Custos) -> None:
    office = Office()
    # A fraud ticket about the journalist, used under the support purpose two days later:
    # a wrong purpose, not an unexplained access; it is independent (opened by the subject).
    office.ticket("emp-1", "jour-1", kind="fraud", opened=at(1, 9), closed=at(1, 17))
    office.access("emp-1", "jour-1", at(3, 11), "ip_history")
    assert rules_for(office.detect(system), "emp-1") == set()


def test_a_self_opened_uncited_ticket_leaves_protected_access_alerting(system: Custos) -> None:
    office = Office()
    office.ticket("emp-1", "act-1", opened=at(3, 9), opened_by="emp-1")
    office.access("emp-1", "act-1", at(3, 11), "contact")
    assert "protected_subject_access" in rules_for(office.detect(system), "emp-1")


def _findings(system: Custos, threads: int) -> list[tuple[str, dict[str, object]]]:
    con = connect(threads)
    try:
        load_store(con, EventStore(system.db), system.directory)
        found = Detector(con, DetectConfig()).run()
    finally:
        con.close()
    return sorted(((f.fingerprint, f.to_dict()) for f in found), key=lambda x: x[0])


def test_side_by_side_queries_find_what_one_thread_finds(system: Custos) -> None:
    office = Office()
    for n in range(1, 6):  # a convergence, a stalking, colleague lookups, a refusal and retries
        office.access(f"emp-{n}", "user-7", at(4, 10 + n), "location")
    for day in (1, 4, 8):
        office.access("emp-2", "user-9", at(day, 15), "messages")
    office.access("emp-5", "acct-2", at(2, 12), "contact", action="export", records=400)
    office.access("emp-6", "user-11", at(5, 10), decision="deny")
    for k, purpose in enumerate(["fraud", "trust_safety", "support"]):
        later = at(5, 10) + timedelta(minutes=5 * (k + 1))
        office.access("emp-6", "user-11", later, purpose=purpose)
    assert office.detect(system)
    assert _findings(system, 1) == _findings(system, 2)
