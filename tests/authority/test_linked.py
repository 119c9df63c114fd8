"""Links are authority: a DBA who deletes the link between a journalist and her second account
is refused on use, or named by ``custos log verify`` once the rows are restored."""

from __future__ import annotations

import copy

import pytest

from custos.access import Custos
from tests.access.test_linked import HUNT_ALT, linked_world, rules
from tests.authority.test_authority import findings, reload, sql
from tests.factories import load_org


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, linked_world())
    return system


@pytest.mark.parametrize("rows", [["user-42"], ["user-43"], ["user-42", "user-43"]])
def test_a_link_deleted_with_sql_is_refused_on_use(world: Custos, rows: list[str]) -> None:
    for row in rows:
        sql(world, "UPDATE subjects SET linked = '[]', link_group = NULL WHERE id = :id", id=row)
    reload(world)
    decision = world.decide(HUNT_ALT)
    assert decision.outcome == "deny"
    assert rules(decision) == ["authority-mismatch"]
    assert {(table, key) for table, key, _ in findings(world)} == {("subjects", r) for r in rows}


def test_links_rolled_back_to_older_genuine_entries_are_named(system: Custos) -> None:
    unlinked = copy.deepcopy(linked_world())
    unlinked["subjects"][-1] = {"id": "user-43", "jurisdiction": "US"}
    load_org(system, unlinked)
    old = {s: system.directory.subject(s).authority for s in ("user-42", "user-43")}
    load_org(system, linked_world())
    new = {s: system.directory.subject(s).authority for s in ("user-42", "user-43")}
    assert all(new[s] != old[s] for s in new)
    # One row put back alone: each row equals an entry custos wrote, but the group's rows
    # disagree (user-43 links to user-42, which does not link back). Refused on use.
    sql(
        system,
        "UPDATE subjects SET linked = NULL, link_group = NULL, auth_idx = :old WHERE id = :id",
        old=old["user-42"],
        id="user-42",
    )
    reload(system)
    refused = system.decide(HUNT_ALT)
    assert rules(refused) == ["authority-mismatch"]
    assert "disagrees with its linked accounts" in refused.explanation
    # Both put back: the group is consistent, the hunt gets through...
    sql(
        system,
        "UPDATE subjects SET linked = NULL, link_group = NULL, auth_idx = :old WHERE id = :id",
        old=old["user-43"],
        id="user-43",
    )
    reload(system)
    hunt = system.decide(HUNT_ALT)
    assert hunt.outcome == "allow"
    # ...and once the DBA restores both rows, verify names the decision by its index.
    for subject in ("user-42", "user-43"):
        sql(
            system,
            "UPDATE subjects SET linked = :linked, link_group = 'user-42', auth_idx = :new "
            "WHERE id = :id",
            linked='["user-43"]' if subject == "user-42" else '["user-42"]',
            new=new[subject],
            id=subject,
        )
    reload(system)
    assert ("subjects", "user-43", hunt.ledger_index) in findings(system)
    again = system.replay(hunt.ledger_index or 0)
    assert not again.same
    assert again.replayed is not None
    assert again.replayed["reasons"][0] == "source-protection"
