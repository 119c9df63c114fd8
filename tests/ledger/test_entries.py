"""The entry vocabulary: every type the real code paths write round-trips to the same dict
and the same bytes, and the parser takes any JSON without crashing."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Union

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from custos.access import Custos, QueryRequest, Viewer, acts
from custos.accounts import Operator
from custos.config import load_settings
from custos.errors import ApprovalRefused, SqlRejected
from custos.export import Exporter
from custos.ledger import entries
from custos.ledger.entries import REGISTRY, Entry, MalformedEntry, UnknownEntry, parse
from custos.ledger.hashing import canonical_json
from custos.policy import AccessRequest
from tests.factories import APPROVALS_WORLD, ask, load_org, logins, take_break_glass
from tests.sql.world import sql_source


def _sql(system: Custos, statement: str) -> None:
    with system.db.engine.begin() as conn:
        conn.execute(sa.text(statement))


def _every_kind_of_entry(world: Custos) -> None:
    """Drive the real code paths that write each entry type once or more."""
    load_org(world, APPROVALS_WORLD)
    world.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    approvals = world.approvals
    precise = AccessRequest(
        "emp-3001", "user-42", "ip_history", "trust_safety", ticket="T-10", precision="precise"
    )
    # Steps run through the API or CLI name their operator (an optional member).
    who = Operator.claimed("tester", "emp-4001")
    granted = ask(world)
    with pytest.raises(ApprovalRefused):
        approvals.approve(granted, "emp-3001", "ok")
    with pytest.raises(ApprovalRefused):
        approvals.approve(granted, "emp-3001", "ok", operator=who)
    approvals.approve(granted, "emp-3002", "checked the abuse report")
    grant_id = approvals.approve(granted, "emp-4001", "proportionate", operator=who).grant_id
    assert grant_id is not None
    assert world.read(precise).records
    # Guarded SQL: the map, an individual query's decisions and release, an aggregate's.
    sql_source(world)
    world.query(
        QueryRequest(
            "emp-3001",
            "app",
            "SELECT ip FROM logins WHERE user_id = 'user-1'",
            "trust_safety",
            "T-11",
        )
    )
    world.query(
        QueryRequest(
            "emp-5001",
            "app",
            "SELECT city, count(*) FROM logins GROUP BY city",
            "security_incident",
        )
    )
    with pytest.raises(SqlRejected):
        world.query(QueryRequest("emp-5001", "app", "DELETE FROM logins", "security_incident"))
    approvals.revoke(grant_id, "emp-4002", "investigation closed", operator=who)
    approvals.deny(ask(world), "emp-4001", "not proportionate", operator=who)
    approvals.withdraw(ask(world), "emp-3001", "asked by mistake")
    approvals.withdraw(ask(world), "emp-3001", "asked twice", operator=who)
    ended = ask(world)
    approvals.approve(ended, "emp-3002", "ok")
    approvals.approve(ended, "emp-4001", "ok")
    ask(world, categories=["location"])
    approvals.sweep(datetime.now(UTC) + timedelta(days=30))

    first = take_break_glass(world, "credential stuffing")
    with pytest.raises(ApprovalRefused):  # the holder may not review their own grant
        approvals.review(first.id, "emp-5001", "fine by me", operator=who)
    approvals.review(first.id, "emp-4001", "incident INC-4 confirms", operator=who)
    approvals.review(first.id, "emp-4002", "agree")
    for n in range(3):
        take_break_glass(world, f"incident step {n}")
    with pytest.raises(ApprovalRefused):
        take_break_glass(world)

    viewer = Viewer("test", "emp-4001", ("privacy_officer",))
    world.subject_report("user-42", viewer=viewer)
    world.record_view(viewer, "access_log", subject="user-42", about="emp-3001")
    world.record_view(viewer, "access_log", subject="someone typed this", about="nobody")
    account = acts.add_account(world, who, "priya", "a long enough password", ["auditor"])
    world.record_sign_in(account, "password")
    token, _ = acts.create_token(world, who, "a tool", ["auditor"])
    acts.revoke_token(world, who, token.id)
    acts.disable_account(world, who, "priya")

    # A case, as a DBA's edit makes one: a decision on a stripped flag is alerted.
    _sql(world, "UPDATE subjects SET protected = '[]' WHERE id = 'user-42'")
    world.directory.invalidate()
    world.decide(
        AccessRequest("emp-2001", "user-42", "ip_history", "internal_investigation", ticket="T-7")
    )
    (case,) = world.casebook.cases()
    acts.assign_case(world, who, case.id, "emp-4001", acting_as="emp-4001")
    acts.comment_case(world, who, case.id, "emp-4001", "looked at it")
    acts.close_case(
        world, who, case.id, "legitimate", author="emp-4001", acting_as="emp-4001", comment="ok"
    )
    world.shred(datetime.now(UTC) + timedelta(days=3650))

    # An operator sends an export destination everything again (a reset is ledgered).
    world.settings.config_path.write_text(
        '[[export]]\nname = "siem"\nkind = "file"\npath = "out.jsonl"\n', encoding="utf-8"
    )
    exporter = Exporter(load_settings(world.settings.home), world.db, world.ledger)
    exporter.reset("siem", ledger=0, by="cli")
    exporter.close()


def test_every_type_written_round_trips_to_the_same_dict_and_bytes(system: Custos) -> None:
    _every_kind_of_entry(system)
    seen: set[str] = set()
    for _, raw in system.ledger.entries(0, system.ledger.size()):
        stored = json.loads(raw)
        entry = parse(stored)
        assert not isinstance(entry, UnknownEntry), stored["type"]
        assert entry.extra == {}, (entry.type, entry.extra)
        assert entry.to_json() == stored
        assert canonical_json(entry.to_json()) == raw
        assert parse(entry.to_json()) == entry
        # As the writer built it (before the ledger's salt and links): the same entry.
        fresh = dataclasses.replace(entry, salt=None, prev=None)
        assert parse(fresh.to_json()) == fresh
        seen.add(entry.type)
    assert seen == set(REGISTRY), f"never written: {sorted(set(REGISTRY) - seen)}"


def test_unknown_types_and_members_are_kept_as_read() -> None:
    newer = {"type": "from_the_future", "x": [1, {"y": None}], "salt": "c2FsdA=="}
    assert parse(newer) == UnknownEntry(raw=newer)
    assert parse(newer).to_json() == newer
    assert parse({"no": "type"}).type == ""
    shred = {"type": "shred", "time": "2026-01-05T10:00:00Z", "keys": 2, "categories": {}}
    grown = {**shred, "by_region": {"EU": 2}}
    assert parse(grown).extra == {"by_region": {"EU": 2}}
    assert parse(grown).to_json() == grown


def test_a_malformed_entry_names_its_type_and_member() -> None:
    with pytest.raises(MalformedEntry, match="shred entry lacks its 'keys' member"):
        parse({"type": "shred", "time": "2026-01-05T10:00:00Z"})
    with pytest.raises(MalformedEntry, match="shred entry: 'keys' must be an integer"):
        parse({"type": "shred", "time": "t", "keys": True})
    with pytest.raises(MalformedEntry, match="'set' must be a list of objects"):
        parse({"type": "authority", "kind": "subject", "time": "t", "set": ["user-42"]})
    with pytest.raises(MalformedEntry, match="JSON object"):
        parse(["decision"])
    broken = entries.read(b'{"type": "release"}')
    assert isinstance(broken, entries.BrokenEntry)
    assert broken.type == "release"
    assert "lacks" in broken.problem
    assert entries.read(b"not json").raw is None


# -- Hypothesis ---------------------------------------------------------------------------

_TEXT = st.text(max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _value(hint: Any) -> st.SearchStrategy[Any]:
    """A JSON value of the member type ``hint`` (as the stored dict holds it)."""
    if hint is Any:
        return _JSON
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | _value(args[0])
    if hint is str:
        return _TEXT
    if hint is int:
        return st.integers(0, 10**6)
    if hint is bool:
        return st.booleans()
    if origin is tuple:
        return st.lists(_value(typing.get_args(hint)[0]), max_size=3)
    if origin in (Mapping, dict):
        return st.dictionaries(_TEXT, _value(typing.get_args(hint)[1]), max_size=3)
    raise AssertionError(hint)


@st.composite
def _stored(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed stored entry of any registered type: required members always, the
    others sometimes, optional ones only when they differ from their default."""
    name = draw(st.sampled_from(sorted(REGISTRY)))
    cls = REGISTRY[name]
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {"type": name}
    for member in entries.members_of(cls):
        if not member.required and not draw(st.booleans()):
            continue
        value = draw(_value(hints[member.attr]))
        if member.omit and member.check(value) == member.default:
            continue
        out[member.json] = value
    if draw(st.booleans()):
        out["salt"] = draw(_TEXT)
    return out


@given(_stored())
def test_well_formed_entries_round_trip(stored: dict[str, Any]) -> None:
    entry = parse(stored)
    assert type(entry) is REGISTRY[stored["type"]]
    again = entry.to_json()
    # Members with a default that were absent come back with it; all else is as stored.
    assert {k: v for k, v in again.items() if k in stored} == stored
    assert parse(again) == entry


@given(st.dictionaries(_TEXT | st.sampled_from(["type", "time", "kind", "set"]), _JSON))
def test_any_json_object_parses_or_is_refused_by_name(raw: dict[str, Any]) -> None:
    if "type" in raw and raw["type"] is None:
        raw["type"] = "decision"
    refusal: str | None = None
    try:
        entry: Entry | None = parse(raw)
    except MalformedEntry as exc:
        entry, refusal = None, exc.message
    if refusal is not None:
        assert str(raw.get("type")) in refusal
    else:
        assert isinstance(entry, Entry)


@given(_stored())
def test_a_typed_entry_keeps_the_ledgers_links(stored: dict[str, Any]) -> None:
    stored = {**stored, "prev": {"user-42": None, "user-1": 12}}
    assert parse(stored).to_json()["prev"] == {"user-42": None, "user-1": 12}


def test_the_design_note_lists_every_type_as_the_registry_declares_it() -> None:
    note = Path(__file__).parents[2] / "docs" / "design" / "ledger.md"
    text = note.read_text(encoding="utf-8")
    section = text.split("## The entry vocabulary", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2].strip("`"))
    assert set(rows) == set(REGISTRY)
    for name, cls in REGISTRY.items():
        members = ", ".join(m.json + ("?" if m.omit else "") for m in entries.members_of(cls))
        assert rows[name] == (members, entries.WRITERS[name]), name
