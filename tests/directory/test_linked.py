"""Linked accounts in the directory (DESIGN.md principle 11): links in files, symmetric once
stored, grouped by connected component, ledgered on both sides, unknown ids refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.directory import parse_text
from custos.errors import ValidationFailed
from tests.factories import org

USERS = [f"user-{n}" for n in range(1, 7)]


def _load(system: Custos, subjects: list[dict[str, Any]], source: str = "links.yaml") -> Any:
    doc = parse_text(yaml.safe_dump(org(subjects=subjects)), source)
    return system.directory.merge(doc, source=source)


def _links(system: Custos) -> dict[str, tuple[tuple[str, ...], str | None]]:
    return {s.id: (s.linked, s.link_group) for s in system.directory.subjects()}


def _entry_facts(system: Custos, subject: str) -> dict[str, Any]:
    found = system.directory.subject(subject)
    entry = json.loads(system.ledger.entry(found.authority or 0))
    (facts,) = [f for f in entry["set"] if f["id"] == subject]
    return dict(facts)


def test_the_file_format_takes_linked_and_refuses_a_self_link() -> None:
    text = """
subjects:
  - {id: user-42, jurisdiction: US, protected: [journalist]}
  - {id: user-43, handle: "@jane_alt", jurisdiction: US, protected: [], linked: [user-42, user-42]}
"""
    doc = parse_text(text, "design.yaml")
    assert [s.linked for s in doc.subjects] == [(), ("user-42",)]
    with pytest.raises(ValidationFailed) as caught:
        parse_text(
            "subjects:\n  - {id: user-43, jurisdiction: US, linked: [user-43]}\n", "self.yaml"
        )
    assert caught.value.problems == [
        "self.yaml: subjects[0] (id 'user-43'): field 'linked': a subject cannot be linked to "
        "itself"
    ]


def test_a_link_stated_on_one_side_links_both_and_groups_the_component(system: Custos) -> None:
    report = _load(
        system,
        [
            {"id": "user-3", "jurisdiction": "US", "linked": ["user-2"]},
            {"id": "user-2", "jurisdiction": "US"},
            {"id": "user-1", "jurisdiction": "DE", "linked": ["user-3"]},
            {"id": "user-9", "jurisdiction": "US"},
        ],
    )
    assert report.added["subjects"] == 4
    assert _links(system) == {
        "user-1": (("user-3",), "user-1"),
        "user-2": (("user-3",), "user-1"),
        "user-3": (("user-1", "user-2"), "user-1"),
        "user-9": ((), None),
    }
    # Links are authority: each row's entry states them, and loading the same file again
    # changes nothing (a link stated on one side is not a change on the other).
    assert _entry_facts(system, "user-2")["linked"] == ["user-3"]
    assert _entry_facts(system, "user-2")["link_group"] == "user-1"
    again = _load(
        system,
        [
            {"id": "user-3", "jurisdiction": "US", "linked": ["user-2"]},
            {"id": "user-2", "jurisdiction": "US"},
            {"id": "user-1", "jurisdiction": "DE", "linked": ["user-3"]},
            {"id": "user-9", "jurisdiction": "US"},
        ],
    )
    assert again.total_changes == 0


def test_a_link_to_a_stored_subject_relinks_and_reledgers_both_rows(system: Custos) -> None:
    _load(system, [{"id": "user-42", "jurisdiction": "US", "protected": ["journalist"]}])
    before = system.directory.subject("user-42").authority
    report = _load(system, [{"id": "user-43", "jurisdiction": "US", "linked": ["user-42"]}])
    assert (report.added["subjects"], report.changed["subjects"]) == (1, 1)
    journalist = system.directory.subject("user-42")
    assert (journalist.linked, journalist.link_group) == (("user-43",), "user-42")
    assert journalist.authority != before
    assert _entry_facts(system, "user-42")["linked"] == ["user-43"]
    # Restating user-43 without the link removes it from both rows.
    report = _load(system, [{"id": "user-43", "jurisdiction": "US"}])
    assert report.changed["subjects"] == 2
    assert _links(system) == {"user-42": ((), None), "user-43": ((), None)}


def test_an_unknown_linked_id_refuses_the_file_naming_subject_and_id(system: Custos) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _load(
            system,
            [{"id": "user-43", "jurisdiction": "US", "linked": ["user-42", "user-404"]}],
            "bad.yaml",
        )
    assert caught.value.problems == [
        "bad.yaml: subjects[0] (id 'user-43'): field 'linked': unknown subject 'user-404'",
        "bad.yaml: subjects[0] (id 'user-43'): field 'linked': unknown subject 'user-42'",
    ]
    assert system.directory.subjects() == []


def test_merging_two_groups_moves_every_member_to_the_smaller_id(system: Custos) -> None:
    _load(
        system,
        [
            {"id": "user-1", "jurisdiction": "US", "linked": ["user-2"]},
            {"id": "user-2", "jurisdiction": "US"},
            {"id": "user-5", "jurisdiction": "US", "linked": ["user-6"]},
            {"id": "user-6", "jurisdiction": "US"},
        ],
    )
    report = _load(system, [{"id": "user-6", "jurisdiction": "US", "linked": ["user-5", "user-2"]}])
    # user-6 itself, user-2 (a new link) and user-5 (a new group) change; user-1 only moves
    # group... and it does not: user-1 was already the smallest.
    assert report.changed["subjects"] == 3
    assert {k: g for k, (_, g) in _links(system).items()} == dict.fromkeys(
        USERS[:2] + USERS[4:6], "user-1"
    )


@st.composite
def _graphs(draw: st.DrawFn) -> list[tuple[str, str]]:
    pairs = st.tuples(st.sampled_from(USERS), st.sampled_from(USERS)).filter(lambda p: p[0] != p[1])
    return draw(st.lists(pairs, max_size=8))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=_graphs(), second=_graphs())
def test_any_links_load_symmetric_with_the_components_smallest_id(
    system: Custos, first: list[tuple[str, str]], second: list[tuple[str, str]]
) -> None:
    # Whatever was stored before, a file stating every subject's links leaves exactly its
    # links, both ways, and each account's group is the smallest id it is connected to.
    for pairs in (first, second):
        stated: dict[str, set[str]] = {u: set() for u in USERS}
        for a, b in pairs:
            stated[a].add(b)
        _load(system, [{"id": u, "jurisdiction": "US", "linked": sorted(stated[u])} for u in USERS])
        both = {u: {b for a, b in pairs if a == u} | {a for a, b in pairs if b == u} for u in USERS}
        found = _links(system)
        for user in USERS:
            reach, waiting = {user}, [user]
            while waiting:
                for other in both[waiting.pop()] - reach:
                    reach.add(other)
                    waiting.append(other)
            group = min(reach) if len(reach) > 1 else None
            assert found[user] == (tuple(sorted(both[user])), group)
