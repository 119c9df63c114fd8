"""Authority you can prove, tried as a database administrator without custos's keys would:
every edit of a row a decision rests on is refused on use, or named by ``custos log verify``
(table and id) once restored. Real homes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from custos.access import Custos, acts
from custos.access.system import SETTINGS_MARKER
from custos.accounts import Operator
from custos.authority import BATCH, AuthorityWriter, EncodedFacts
from custos.config import decision_settings_digest, load_settings
from custos.directory import DirectoryStore
from custos.errors import AuthorityMismatch
from custos.ledger import canonical_json
from custos.policy import AccessRequest, Decision
from tests.factories import APPROVALS_WORLD, SUPPORT_WORLD, ask, load_org, org

HUNT = AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    return system


def sql(system: Custos, statement: str, **params: Any) -> None:
    """What a DBA types: a write straight to the table, no custos code, no key."""
    with system.db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def reload(system: Custos) -> None:
    """What the next process (or this one, once the directory version moves) sees."""
    system.directory.invalidate()
    system.approvals._invalidate()


def rules(decision: Decision) -> list[str]:
    return [r.policy for r in decision.reasons]


def findings(system: Custos) -> list[tuple[str, str, int | None]]:
    return [(f.table, f.key, f.index) for f in system.verify_authority().projection.findings]


def test_an_untouched_world_verifies_and_decisions_name_their_authority(world: Custos) -> None:
    decision = world.decide(AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"))
    assert decision.allowed
    assert decision.authority is not None
    assert set(decision.authority) == {"principal", "subject", "ticket"}
    entry = json.loads(world.ledger.entry(decision.ledger_index or 0))
    assert entry["authority"] == dict(decision.authority)
    set_by = json.loads(world.ledger.entry(decision.authority["subject"]))
    assert set_by["type"] == "authority"
    assert set_by["kind"] == "subject"
    assert findings(world) == []


def test_a_protected_flag_stripped_with_sql_is_refused_on_use(world: Custos) -> None:
    sql(world, "UPDATE subjects SET protected = '[]' WHERE id = 'user-42'")
    reload(world)
    # Without the check the stripped flag would have counted: the hunt gets through.
    unchecked = DirectoryStore(world.db).subject("user-42")
    assert unchecked.protected == ()
    decision = world.decide(HUNT)
    assert decision.outcome == "deny"
    assert rules(decision) == ["authority-mismatch"]
    assert "subject 'user-42'" in decision.explanation
    with pytest.raises(AuthorityMismatch, match="subject 'user-42'"):
        world.directory.subject("user-42")
    assert ("subjects", "user-42", None) in findings(world)
    (alert,) = world.casebook.alerts()
    assert (alert.rule, alert.severity, alert.subjects) == (
        "authority_mismatch",
        "critical",
        ("user-42",),
    )
    assert decision.event_id in alert.events
    # Restored: nothing was ever decided on the edit, and the tables verify again.
    sql(world, """UPDATE subjects SET protected = '["journalist"]' WHERE id = 'user-42'""")
    reload(world)
    assert findings(world) == []
    assert rules(world.decide(HUNT))[0] == "source-protection"


def test_an_older_genuine_row_put_back_is_named_after_it_was_restored(system: Custos) -> None:
    unflagged = org(
        principals=[{"id": "emp-2001", "role": "internal_audit", "team": "internal-audit"}],
        subjects=[{"id": "user-42", "jurisdiction": "US"}],
        tickets=[
            {
                "id": "T-7",
                "kind": "internal_investigation",
                "subject": "user-42",
                "assignee": "emp-2001",
                "status": "open",
            }
        ],
    )
    load_org(system, unflagged)
    old = system.directory.subject("user-42").authority
    flagged = {
        **unflagged,
        "subjects": [{"id": "user-42", "jurisdiction": "US", "protected": ["journalist"]}],
    }
    load_org(system, flagged)
    new = system.directory.subject("user-42").authority
    assert old is not None
    assert new is not None
    assert new > old
    assert rules(system.decide(HUNT))[0] == "source-protection"
    # The DBA puts back the row as it was before the flag, entry and all: the check on use
    # cannot tell a genuine old entry from the latest, and the hunt goes through...
    sql(
        system,
        "UPDATE subjects SET protected = '[]', auth_idx = :old WHERE id = 'user-42'",
        old=old,
    )
    reload(system)
    hunt = system.decide(HUNT)
    assert "source-protection" not in rules(hunt)
    # ...then restores the row. The decision names the superseded entry it used.
    sql(
        system,
        "UPDATE subjects SET protected = '[\"journalist\"]', auth_idx = :new WHERE id = 'user-42'",
        new=new,
    )
    reload(system)
    assert findings(system) == [("subjects", "user-42", hunt.ledger_index)]
    # Replayed on what the ledger says the subject was, the hunt is refused.
    again = system.replay(hunt.ledger_index or 0)
    assert not again.same
    assert again.replayed is not None
    assert again.replayed["reasons"][0] == "source-protection"


def test_an_inserted_ticket_is_refused_and_named(world: Custos) -> None:
    sql(
        world,
        "INSERT INTO tickets (id, kind, subject, assignee, status, opened_by, extra, seq) "
        "VALUES ('T-99', 'internal_investigation', 'user-2', 'emp-2001', 'open', 'system', "
        "'{}', 0)",
    )
    reload(world)
    request = AccessRequest(
        "emp-2001", "user-2", "ip_history", "internal_investigation", ticket="T-99"
    )
    decision = world.decide(request)
    assert (decision.outcome, rules(decision)) == ("deny", ["authority-mismatch"])
    assert ("tickets", "T-99", None) in findings(world)


def test_a_row_moved_onto_another_entry_is_refused(world: Custos) -> None:
    # emp-1001 made an internal auditor by borrowing emp-2001's genuine entry.
    auditor = world.directory.principal("emp-2001").authority
    sql(
        world,
        "UPDATE principals SET role = 'internal_audit', team = 'internal-audit', "
        "manager = NULL, auth_idx = :idx WHERE id = 'emp-1001'",
        idx=auditor,
    )
    reload(world)
    with pytest.raises(AuthorityMismatch, match="principal 'emp-1001'"):
        world.directory.principal("emp-1001")
    assert ("principals", "emp-1001", None) in findings(world)


def test_a_status_change_through_custos_is_ledgered_first(world: Custos) -> None:
    before = world.ledger.size()
    world.directory.set_principal_status("emp-1001", "terminated", by={"principal": "emp-4001"})
    entry = json.loads(world.ledger.entry(before))
    assert (entry["type"], entry["kind"], entry["set"][0]["status"]) == (
        "authority",
        "principal",
        "terminated",
    )
    assert entry["by"] == {"principal": "emp-4001"}
    assert world.directory.principal("emp-1001").authority == before
    assert findings(world) == []


def test_a_group_added_with_sql_cannot_approve(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    request_id = ask(system)
    sql(system, """UPDATE principals SET groups = '["privacy_office"]' WHERE id = 'emp-6001'""")
    reload(system)
    with pytest.raises(AuthorityMismatch, match="principal 'emp-6001'"):
        system.approvals.approve(request_id, "emp-6001", "looks fine to me")
    assert ("principals", "emp-6001", None) in findings(system)


def _granted(system: Custos) -> tuple[str, AccessRequest]:
    load_org(system, APPROVALS_WORLD)
    request_id = ask(system)
    system.approvals.approve(request_id, "emp-3002", "checked the abuse report")
    done = system.approvals.approve(request_id, "emp-4001", "proportionate")
    assert done.grant_id is not None
    read = AccessRequest(
        "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
    )
    assert system.decide(read).grant == done.grant_id
    return done.grant_id, read


def test_a_rewritten_grant_is_refused_on_use(system: Custos) -> None:
    grant_id, _ = _granted(system)
    # The DBA points the grant at another subject, with every approval still on it.
    sql(system, "UPDATE grants SET subject = 'user-1', ticket = 'T-11' WHERE id = :g", g=grant_id)
    reload(system)
    read = AccessRequest(
        "emp-3001", "user-1", "ip_history", "trust_safety", ticket="T-11", precision="precise"
    )
    decision = system.decide(read)
    assert (decision.outcome, rules(decision)) == ("deny", ["authority-mismatch"])
    assert decision.grant is None
    assert ("grants", grant_id, None) in findings(system)


def test_a_revocation_undone_with_sql_is_named_after_it_was_restored(system: Custos) -> None:
    grant_id, read = _granted(system)
    system.approvals.revoke(grant_id, "emp-3001", "no longer needed")
    assert system.decide(read).grant is None
    sql(system, "UPDATE grants SET revoked = NULL WHERE id = :g", g=grant_id)
    reload(system)
    used = system.decide(read)
    assert used.grant == grant_id  # the row matches its genuine grant entry...
    assert ("grants", grant_id, None) in findings(system)
    sql(system, "UPDATE grants SET revoked = CURRENT_TIMESTAMP WHERE id = :g", g=grant_id)
    reload(system)
    # ...and once restored, the decision that used it is still named.
    assert findings(system) == [("grants", grant_id, used.ledger_index)]


def test_every_decision_replays_to_its_logged_outcome(system: Custos) -> None:
    _granted(system)
    requests = [
        AccessRequest(p, s, c, purpose, ticket=t, precision=precision)
        for p, s, purpose, t in [
            ("emp-3001", "user-42", "trust_safety", "T-10"),
            ("emp-3001", "user-1", "trust_safety", "T-11"),
            ("emp-2001", "user-42", "internal_investigation", "T-7"),
            ("emp-5001", "user-1", "security_incident", "T-12"),
            ("emp-6001", "user-77", "support", None),
        ]
        for c in ("profile", "ip_history", "location")
        for precision in (None, "precise")
    ]
    decided = system.decide_many(requests)
    assert {d.outcome for d in decided} >= {"allow", "deny"}
    result = system.verify_authority()
    assert result.projection.findings == []
    assert {d.ledger_index for d in decided} <= {r.index for r in result.results}
    assert [r.problem for r in result.results if not r.same] == []
    sampled = system.verify_authority(sample=5)
    assert 3 <= len(sampled.results) <= 8


def _alerted_case(world: Custos) -> str:
    """A real case: the authority-mismatch alert of a decision on a stripped flag."""
    sql(world, "UPDATE subjects SET protected = '[]' WHERE id = 'user-42'")
    reload(world)
    world.decide(HUNT)
    sql(world, """UPDATE subjects SET protected = '["journalist"]' WHERE id = 'user-42'""")
    reload(world)
    (case,) = world.casebook.cases()
    assert findings(world) == []
    return case.id


def test_a_case_closed_with_sql_is_named(world: Custos) -> None:
    case_id = _alerted_case(world)
    number = int(case_id.removeprefix("case-"))
    sql(
        world,
        "UPDATE cases SET status = 'closed', disposition = 'legitimate' WHERE id = :n",
        n=number,
    )
    sql(
        world,
        "INSERT INTO suppressions (rule, principal, subject, until, case_id, created) "
        "VALUES ('authority_mismatch', 'emp-2001', NULL, :u, :n, :u)",
        u=datetime.now(UTC) + timedelta(days=30),
        n=number,
    )
    named = findings(world)
    assert ("cases", case_id, None) in named
    assert any(table == "suppressions" for table, _, _ in named)


def test_a_case_closed_through_custos_verifies(world: Custos) -> None:
    case_id = _alerted_case(world)
    who = Operator.claimed("tester", "emp-4001")
    acts.assign_case(world, who, case_id, "emp-4001", acting_as="emp-4001")
    acts.close_case(
        world, who, case_id, "legitimate", author="emp-4001", acting_as="emp-4001", comment="ok"
    )
    assert findings(world) == []
    # Reassigned by hand afterwards: named.
    sql(world, "UPDATE cases SET assignee = 'emp-1001' WHERE id = :n", n=int(case_id[5:]))
    assert findings(world) == [("cases", case_id, None)]


def test_decisions_name_the_settings_the_ledger_holds(world: Custos) -> None:
    decision = world.decide(HUNT)
    entry = json.loads(world.ledger.entry(decision.ledger_index or 0))
    assert entry["settings"] == decision_settings_digest(world.settings)
    assert [r.problem for r in world.verify_authority().results if not r.same] == []


def test_settings_changed_by_hand_with_the_marker_are_named(world: Custos) -> None:
    """A holder of the home folder widens residency in ``config.toml`` and writes the marker
    that says those settings were ledgered: decisions still name the settings they were made
    under, and ``log verify`` finds no such settings entry as the latest."""
    home = world.settings.home
    (home / "config.toml").write_text('[residency]\nUS = ["US", "IN"]\n', encoding="utf-8")
    edited = load_settings(home)
    digest = decision_settings_digest(edited)
    assert digest != decision_settings_digest(world.settings)
    (home / SETTINGS_MARKER).write_text(digest + "\n", encoding="ascii")
    with Custos.open(home) as reopened:
        decision = reopened.decide(
            AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")
        )
        problems = [r.problem for r in reopened.verify_authority().results if not r.same]
    assert len(problems) == 1
    assert f"index {decision.ledger_index}" in (problems[0] or "")
    assert f"settings {digest[:12]}" in (problems[0] or "")


def test_facts_given_encoded_are_ledgered_as_the_same_entries(system: Custos) -> None:
    """AuthorityWriter.record takes rows already encoded (org import's): the entries are
    those the same facts as mappings give, but for salt and time, in batches alike."""
    facts = [
        {"id": f"user-{i}", "jurisdiction": "US", "protected": [], "employee": None,
         "linked": [], "link_group": None}
        for i in range(BATCH + 3)
    ]  # fmt: skip
    writer = AuthorityWriter(system.ledger)
    by = {"principal": "emp-1"}
    plain = writer.record("subject", facts, "test", by)
    encoded = EncodedFacts([canonical_json(f).decode() for f in facts])
    spliced = writer.record("subject", encoded, "test", by)
    assert [i - plain[0] for i in plain] == [i - spliced[0] for i in spliced]
    assert len(set(spliced)) == 2

    def without_salt(index: int) -> dict[str, Any]:
        entry = json.loads(system.ledger.entry(index))
        return {k: v for k, v in entry.items() if k not in ("salt", "time")}

    assert without_salt(plain[0]) == without_salt(spliced[0])
    assert without_salt(plain[-1]) == without_salt(spliced[-1])
    # The check on use reads them back alike.
    voucher = system.voucher
    voucher.check("subject", "user-7", spliced[7], facts[7])
    with pytest.raises(AuthorityMismatch):
        voucher.check("subject", "user-7", spliced[7], {**facts[7], "protected": ["minor"]})
