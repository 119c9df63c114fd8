"""Policy replay (:mod:`custos.detect.replay`): imported accesses decided by the policies with
the directory as the ledger says it stood at their time, through a real home on both
databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from custos.access import Custos
from custos.detect import DetectConfig, connect
from custos.detect.replay import RULE, PolicyReplay, ReplayPolicy
from custos.policy import PolicyEngine
from custos.policy.pack import DEFAULT_PACK, load_pack
from tests.factories import load_org, org


def _world(roles: dict[str, str]) -> dict[str, Any]:
    return org(
        principals=[{"id": pid, "role": role} for pid, role in roles.items()],
        subjects=[
            {"id": "user-1", "jurisdiction": "US"},
            {"id": "user-2", "jurisdiction": "US", "protected": ["journalist"]},
        ],
        tickets=[
            {
                "id": f"T-{pid}",
                "kind": "trust_safety",
                "subject": "user-1",
                "assignee": pid,
                "status": "open",
                "opened_by": "subject",
            }
            for pid in roles
        ],
    )


def _event(eid: str, who: str, when: datetime, **kw: Any) -> str:
    event = {
        "id": eid,
        "time": when.isoformat().replace("+00:00", "Z"),
        "principal": who,
        "action": "read",
        "subject": "user-1",
        "category": "location",
        "purpose": "trust_safety",
        "ticket": f"T-{who}",
        "decision": "allow",
        "precision": "coarse",
        "source": "admin-console",
        **kw,
    }
    return json.dumps(event)


def _replay_alerts(system: Custos) -> list[Any]:
    return [a for a in system.casebook.alerts() if a.rule == RULE]


def test_imported_access_is_judged_by_the_directory_as_it_stood(system: Custos) -> None:
    # emp-1 was a support agent, then became an investigator; emp-2 the other way round.
    load_org(
        system,
        _world({"emp-1": "support_agent", "emp-2": "trust_safety_investigator"}),
    )
    between = datetime.now(UTC)
    load_org(
        system,
        _world({"emp-1": "trust_safety_investigator", "emp-2": "support_agent"}),
    )
    later = datetime.now(UTC) + timedelta(seconds=1)
    system.events.import_lines(
        [
            # Before the change: emp-1 could not use locations; emp-2 could.
            _event("ev-1", "emp-1", between),
            _event("ev-2", "emp-2", between),
            # After it: the reverse.
            _event("ev-3", "emp-1", later),
            _event("ev-4", "emp-2", later + timedelta(days=1)),
        ],
        "admin-console.jsonl",
    )
    run = system.detect()
    assert run.replay is not None
    assert run.replay.events == 4
    alerts = _replay_alerts(system)
    named = {event: alert for alert in alerts for event in alert.events}
    assert set(named) == {"ev-1", "ev-4"}
    first = named["ev-1"]
    assert first.principals == ("emp-1",)
    assert first.severity == "medium"
    assert "policy default-deny" in first.explanation
    assert "no policy lets a support agent read location for trust safety" in first.explanation
    assert named["ev-4"].principals == ("emp-2",)
    # One alert per principal per day, filed in a case like any other.
    assert len(alerts) == 2
    assert all(a.case is not None for a in alerts)


def test_second_run_replays_only_what_arrived(system: Custos) -> None:
    load_org(system, _world({"emp-1": "support_agent"}))
    now = datetime.now(UTC) + timedelta(seconds=1)
    system.events.import_lines(
        [_event(f"ev-{n}", "emp-1", now + timedelta(minutes=n)) for n in range(3)],
        "a.jsonl",
    )
    first = system.detect().replay
    assert first is not None
    assert (first.events, first.found) == (3, 3)
    assert first.decided == 1  # three events, one shape: Cedar asked once
    again = system.detect().replay
    assert again is not None
    assert (again.events, again.decided) == (0, 0)
    system.events.import_lines(
        [
            _event("ev-9", "emp-1", now + timedelta(hours=1)),
            # A journalist's IP history with a ticket about someone else: refused, and high.
            _event("ev-10", "emp-1", now + timedelta(hours=2), subject="user-2"),
        ],
        "b.jsonl",
    )
    third = system.detect().replay
    assert third is not None
    assert third.events == 2
    assert third.decided == 1  # ev-9 has the shape already decided
    alerts = _replay_alerts(system)
    assert len(alerts) == 1  # one principal, one day
    alert = alerts[0]
    assert set(alert.events) == {"ev-0", "ev-1", "ev-2", "ev-9", "ev-10"}
    assert alert.severity == "high"


def test_custos_own_decisions_and_what_the_policies_allow_are_not_findings(
    system: Custos,
) -> None:
    load_org(system, _world({"emp-1": "trust_safety_investigator"}))
    later = datetime.now(UTC) + timedelta(seconds=1)
    system.events.import_lines(
        [
            _event("ev-1", "emp-1", later),  # allowed at coarse, read coarse
            _event("ev-2", "emp-1", later, decision="deny", precision=None),  # not released
        ],
        "a.jsonl",
    )
    run = system.detect()
    assert run.replay is not None
    assert run.replay.events == 1
    assert _replay_alerts(system) == []
    # Read precise where custos would release only coarse: a finding of its own kind.
    system.events.import_lines([_event("ev-3", "emp-1", later, precision="precise")], "b.jsonl")
    system.detect()
    (alert,) = _replay_alerts(system)
    assert alert.events == ("ev-3",)
    assert "released only coarse" in alert.explanation


def test_an_event_before_any_entry_is_judged_on_the_earliest_state(system: Custos) -> None:
    load_org(system, _world({"emp-1": "support_agent"}))
    system.events.import_lines(
        [_event("ev-1", "emp-1", datetime(2020, 1, 6, 10, tzinfo=UTC))], "old.jsonl"
    )
    system.detect()
    (alert,) = _replay_alerts(system)
    assert "earliest state" in alert.explanation


def test_replay_can_be_turned_off(system: Custos) -> None:
    load_org(system, _world({"emp-1": "support_agent"}))
    system.events.import_lines([_event("ev-1", "emp-1", datetime.now(UTC))], "a.jsonl")
    (system.settings.home / "config.toml").write_text("[detect]\nreplay = false\n")
    reopened = Custos.open(system.settings.home)
    assert reopened.detect().replay is None
    assert _replay_alerts(reopened) == []


def test_keys_do_not_merge_two_shapes_in_one_batch(system: Custos) -> None:
    """Canonical keys share placeholder ids; one Cedar batch must still keep them apart."""
    engine = PolicyEngine(system.policy_pack)
    con = connect(1)
    try:
        replay = PolicyReplay(con, ReplayPolicy(engine, lambda j: (j,)), DetectConfig())
        assert replay.canonical
        facts = {"kind": "employee", "team": "t", "country": "US", "groups": []}
        replay.follow(
            enumerate(
                [
                    {
                        "type": "authority",
                        "kind": "principal",
                        "time": None,
                        "set": [
                            {"id": "emp-1", "role": "fraud_analyst", "status": "leaving", **facts},
                            {"id": "emp-2", "role": "fraud_analyst", "status": "active", **facts},
                        ],
                    },
                    {
                        "type": "authority",
                        "kind": "subject",
                        "time": None,
                        "set": [{"id": "user-1", "jurisdiction": "US", "protected": []}],
                    },
                ]
            )
        )
        con.execute(
            """CREATE TABLE events AS SELECT * FROM (VALUES
               ('a', TIMESTAMP '2026-01-05 10:00', 'emp-1', 'read', 'user-1', 'location',
                'fraud', NULL, 'allow', 'coarse', NULL, 'x', false),
               ('b', TIMESTAMP '2026-01-05 10:00', 'emp-2', 'read', 'user-1', 'location',
                'fraud', NULL, 'allow', 'coarse', NULL, 'x', false))
               t(id, time, principal, action, subject, category, purpose, ticket, decision,
                 precision, records, source, break_glass)"""
        )
        run = replay.replay("SELECT * FROM events")
        assert run.decided == 2
        found = dict(
            con.execute(
                "SELECT f.id, k.policy FROM rp_found f JOIN rp_keys k USING (kid)"
            ).fetchall()
        )
        # Neither has a ticket (need-to-know), but the leaving one is refused first for that.
        assert found == {"a": "inactive-staff", "b": "need-to-know"}
    finally:
        con.close()


def test_residency_is_judged_by_the_settings_in_force_at_the_time(system: Custos) -> None:
    world = _world({"emp-1": "trust_safety_investigator"})
    world["principals"][0]["country"] = "DE"
    load_org(system, world)
    before = datetime.now(UTC)
    # Later, German staff may see US users' data beyond coarse: a new `settings` entry.
    (system.settings.home / "config.toml").write_text('[residency]\nUS = ["US", "DE"]\n')
    reopened = Custos.open(system.settings.home)
    assert reopened.record_settings()
    after = datetime.now(UTC) + timedelta(seconds=1)
    reopened.events.import_lines(
        [
            _event("ev-1", "emp-1", before, category="contact", precision="precise"),
            _event("ev-2", "emp-1", after, category="contact", precision="precise"),
        ],
        "a.jsonl",
    )
    run = reopened.detect()
    assert run.replay is not None
    assert run.replay.events == 2
    (alert,) = _replay_alerts(reopened)
    # Only the read made while residency kept German staff to coarse is a finding.
    assert alert.events == ("ev-1",)
    assert "released only coarse" in alert.explanation


def test_a_run_returns_only_the_alerts_it_changed(system: Custos) -> None:
    load_org(system, _world({"emp-1": "support_agent", "emp-2": "support_agent"}))
    now = datetime.now(UTC) + timedelta(seconds=1)
    system.events.import_lines(
        [_event("ev-1", "emp-1", now), _event("ev-2", "emp-2", now)], "a.jsonl"
    )
    first = system.detect()
    assert {a.principals for a in first.alerts if a.rule == RULE} == {("emp-1",), ("emp-2",)}
    # Nothing new: replay's alerts stand in the casebook and are not recorded again.
    again = system.detect()
    assert [a for a in again.alerts if a.rule == RULE] == []
    assert len(_replay_alerts(system)) == 2
    # A new refusal on emp-2's day: only that alert is rebuilt, with both events.
    system.events.import_lines([_event("ev-3", "emp-2", now + timedelta(minutes=1))], "b.jsonl")
    third = system.detect()
    (changed,) = [a for a in third.alerts if a.rule == RULE]
    assert changed.principals == ("emp-2",)
    assert set(changed.events) == {"ev-2", "ev-3"}
    assert len(_replay_alerts(system)) == 2


def test_a_fixed_directory_and_its_grants_without_a_ledger() -> None:
    """What an evaluation replays with: the loaded tables as the only state, grants (which
    carry no ledger time) counting from their start."""
    engine = PolicyEngine(load_pack(Path(str(DEFAULT_PACK))))
    con = connect(1)
    try:
        con.execute(
            """CREATE TABLE principals AS SELECT * FROM (VALUES
               ('emp-1', 'employee', 'trust_safety_investigator', 'ts', NULL, 'US', 'active',
                NULL::TIMESTAMP))
               t(id, kind, role, team, manager, country, status, role_since)"""
        )
        con.execute(
            """CREATE TABLE subjects AS SELECT * FROM (VALUES ('user-1', 'minor', NULL))
               t(id, protected, employee)"""
        )
        con.execute(
            """CREATE TABLE tickets AS SELECT * FROM (VALUES
               ('T-1', 'trust_safety', 'user-1', 'emp-1', 'open', NULL::TIMESTAMP,
                NULL::TIMESTAMP, 'system'))
               t(id, kind, subject, assignee, status, opened, closed, opened_by)"""
        )
        con.execute(
            """CREATE TABLE grants AS SELECT * FROM (VALUES
               ('G-1', 'emp-1', 'user-1', 'trust_safety', 'coarse', 'emp-7|emp-8',
                'privacy_office|approvers', TIMESTAMP '2026-01-05 09:00',
                TIMESTAMP '2026-01-05 17:00', false))
               t(id, principal, subject, purpose, precision, approvers, approver_groups,
                 starts, ends, break_glass)"""
        )
        con.execute(
            """CREATE TABLE events AS SELECT * FROM (VALUES
               ('in', TIMESTAMP '2026-01-05 10:00', 'emp-1', 'read', 'user-1', 'content',
                'trust_safety', 'T-1', 'allow', 'coarse', NULL, 'x', false),
               ('after', TIMESTAMP '2026-01-05 18:00', 'emp-1', 'read', 'user-1', 'content',
                'trust_safety', 'T-1', 'allow', 'coarse', NULL, 'x', false))
               t(id, time, principal, action, subject, category, purpose, ticket, decision,
                 precision, records, source, break_glass)"""
        )
        replay = PolicyReplay(con, ReplayPolicy(engine, lambda j: (j,)), DetectConfig())
        replay.history_from_directory()
        run = replay.replay("SELECT * FROM events")
        assert run.events == 2
        found = dict(
            con.execute(
                "SELECT f.id, k.policy FROM rp_found f JOIN rp_keys k USING (kid)"
            ).fetchall()
        )
        # Within the two-person grant: allowed. After it ended: held for approval.
        assert found == {"after": "protected-two-person"}
    finally:
        con.close()


def test_an_event_with_a_word_the_pack_dropped_is_a_finding_not_a_failure() -> None:
    """An access imported under a pack that knew ``health``, replayed under one that does
    not: refused by name (policy ``vocabulary``), and the rest of its batch decided."""
    engine = PolicyEngine(load_pack(Path(str(DEFAULT_PACK))))
    con = connect(1)
    try:
        con.execute(
            """CREATE TABLE principals AS SELECT * FROM (VALUES
               ('emp-1', 'employee', 'trust_safety_investigator', 'ts', NULL, 'US', 'active',
                NULL::TIMESTAMP))
               t(id, kind, role, team, manager, country, status, role_since)"""
        )
        con.execute(
            """CREATE TABLE subjects AS SELECT * FROM (VALUES ('user-1', '', NULL))
               t(id, protected, employee)"""
        )
        con.execute(
            """CREATE TABLE tickets AS SELECT * FROM (VALUES
               ('T-1', 'trust_safety', 'user-1', 'emp-1', 'open', NULL::TIMESTAMP,
                NULL::TIMESTAMP, 'system'))
               t(id, kind, subject, assignee, status, opened, closed, opened_by)"""
        )
        con.execute(
            """CREATE TABLE grants (id VARCHAR, principal VARCHAR, subject VARCHAR,
               purpose VARCHAR, precision VARCHAR, approvers VARCHAR, approver_groups VARCHAR,
               starts TIMESTAMP, ends TIMESTAMP, break_glass BOOLEAN)"""
        )
        con.execute(
            """CREATE TABLE events AS SELECT * FROM (VALUES
               ('known', TIMESTAMP '2026-01-05 10:00', 'emp-1', 'read', 'user-1', 'content',
                'trust_safety', 'T-1', 'allow', 'coarse', NULL, 'x', false),
               ('dropped', TIMESTAMP '2026-01-05 11:00', 'emp-1', 'read', 'user-1', 'health',
                'trust_safety', 'T-1', 'allow', 'coarse', NULL, 'x', false))
               t(id, time, principal, action, subject, category, purpose, ticket, decision,
                 precision, records, source, break_glass)"""
        )
        replay = PolicyReplay(con, ReplayPolicy(engine, lambda j: (j,)), DetectConfig())
        replay.history_from_directory()
        run = replay.replay("SELECT * FROM events")
        assert run.events == 2
        found = dict(
            con.execute(
                "SELECT f.id, k.policy FROM rp_found f JOIN rp_keys k USING (kid)"
            ).fetchall()
        )
        assert found == {"dropped": "vocabulary"}
    finally:
        con.close()
