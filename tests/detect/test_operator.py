"""Case triage from the command line: who acts is known (operator_auth) or recorded as a
claim, rule own-case holds for --by as it does over HTTP, and every assignment, comment and
closing is in the ledger before it counts."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos, acts
from custos.accounts import Operator
from custos.errors import LedgerUnavailable
from tests.detect.office import Office, at
from tests.operators import Cli, cli, of_type, require_operators

__all__ = ["cli"]


@pytest.fixture
def case_id(system: Custos) -> str:
    office = Office()
    office.access("emp-1", "jour-1", at(1, 11), "ip_history")
    office.detect(system)
    (case,) = system.casebook.cases("open")
    return case.id


def test_the_cli_refuses_to_close_ones_own_case_and_logs_triage_first(
    system: Custos, case_id: str, cli: Cli
) -> None:
    before = system.ledger.size()
    close = ("cases", "close", case_id, "--disposition", "legitimate")
    own = cli(*close, "--by", "emp-1", "--json")
    assert own.code == 7
    assert own.json()["error"]["rule"] == "own-case"
    assert cli("cases", "assign", case_id, "emp-1", "--by", "emp-1").code == 7
    assert system.ledger.size() == before
    assert system.casebook.case(case_id).status == "open"

    cli.ok("cases", "assign", case_id, "emp-20", "--by", "emp-20")
    cli.ok("cases", "comment", case_id, "asked emp-1's manager", "--by", "emp-20")
    closed = cli.ok(*close, "--by", "emp-20", "--comment", "a real story")
    assert closed["status"] == "closed"
    entries = of_type(system, before, "case_assigned")
    entries += of_type(system, before, "case_comment") + of_type(system, before, "case_closed")
    assert [e["type"] for e in entries] == ["case_assigned", "case_comment", "case_closed"]
    assert all(e["case"] == case_id and e["about"] == "emp-1" for e in entries)
    assert entries[2]["disposition"] == "legitimate"
    assert entries[2]["suppress_days"] == 30
    assert entries[0]["operator"] == {
        "account": getpass.getuser(),
        "principal": "emp-20",
        "authenticated": False,
    }
    # The comment is evidence by its digest; its words stay out of the ledger for good.
    assert "asked" not in str(entries[1])
    assert "story" not in str(entries[2])


def test_with_operator_auth_triage_needs_an_investigators_token(
    system: Custos, case_id: str, home: Path, cli: Cli
) -> None:
    require_operators(home)
    system.accounts.add("inv", None, ["investigator"], "emp-20", oidc_subject="i|inv")
    system.accounts.add("suspect", None, ["investigator"], "emp-1", oidc_subject="i|sus")
    system.accounts.add("audit", None, ["auditor"], oidc_subject="i|aud")
    inv, suspect, audit = (
        system.accounts.create_token("t", [], account=name)[1]
        for name in ("inv", "suspect", "audit")
    )
    before = system.ledger.size()
    close = ("cases", "close", case_id, "--disposition", "false_positive")
    assert cli(*close).code == 9  # no token
    assert cli(*close, token=audit).code == 9  # not a triage role
    assert cli(*close, "--by", "emp-1", token=inv).code == 9  # someone else
    assert cli(*close, token=suspect).code == 7  # their own case
    assert system.ledger.size() == before
    assert system.casebook.case(case_id).status == "open"

    cli.ok(*close, token=inv)
    (entry,) = of_type(system, before, "case_closed")
    assert entry["operator"]["account"] == "inv"
    assert entry["operator"]["authenticated"] is True
    assert entry["author"] == "inv"


class BrokenLedger:
    def append(self, entry: Any) -> Any:
        raise LedgerUnavailable("the ledger is unavailable: disk gone")


def test_triage_that_cannot_be_logged_does_not_happen(system: Custos, case_id: str) -> None:
    who = Operator.claimed("ops", "emp-20")
    system.__dict__["ledger"] = BrokenLedger()
    with pytest.raises(LedgerUnavailable):
        acts.close_case(system, who, case_id, "legitimate", author="emp-20", acting_as="emp-20")
    with pytest.raises(LedgerUnavailable):
        acts.assign_case(system, who, case_id, "emp-20", acting_as="emp-20")
    with pytest.raises(LedgerUnavailable):
        acts.comment_case(system, who, case_id, "emp-20", "note")
    case = system.casebook.case(case_id)
    assert (case.status, case.assignee, case.comments) == ("open", None, ())
