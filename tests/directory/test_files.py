"""Directory files: the DESIGN.md format, YAML and JSON, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.directory import parse_text, read_directory_file
from custos.errors import InvalidInput, ValidationFailed

DESIGN_EXAMPLE = """
principals:
  - {id: emp-1001, name: Dana Reyes, kind: employee, role: support_agent, team: support,
     manager: emp-1000, country: US, status: active}      # status: active|leaving|terminated
subjects:
  - {id: user-42, handle: "@jane_reports", jurisdiction: US, protected: [journalist]}
  - {id: user-77, handle: "@dana_r", jurisdiction: US, protected: [employee_account],
     employee: emp-1001}
tickets:
  - {id: T-9001, kind: support, subject: user-42, assignee: emp-1001, status: open,
     opened: "2026-01-05T10:00:00Z", opened_by: subject}
"""


def test_design_example_parses_with_every_field() -> None:
    doc = parse_text(DESIGN_EXAMPLE, "design.yaml")
    (dana,) = doc.principals
    assert (dana.role, dana.manager, dana.status) == ("support_agent", "emp-1000", "active")
    assert [s.protected for s in doc.subjects] == [("journalist",), ("employee_account",)]
    assert doc.subjects[1].employee == "emp-1001"
    (ticket,) = doc.tickets
    assert ticket.opened is not None
    assert ticket.opened.isoformat() == "2026-01-05T10:00:00+00:00"
    assert ticket.opened_by == "subject"


def test_json_and_yaml_give_the_same_document(tmp_path: Path) -> None:
    data = yaml.safe_load(DESIGN_EXAMPLE)
    (tmp_path / "org.json").write_text(json.dumps(data))
    (tmp_path / "org.yaml").write_text(DESIGN_EXAMPLE)
    assert read_directory_file(tmp_path / "org.json") == read_directory_file(tmp_path / "org.yaml")


def test_unknown_entry_fields_are_kept() -> None:
    doc = parse_text("subjects: [{id: u-1, jurisdiction: US, signup_source: ios}]", "extra.yaml")
    assert doc.subjects[0].extra == {"signup_source": "ios"}


def test_every_problem_is_reported_with_file_entry_and_field() -> None:
    text = """
principals:
  - {id: emp-1, name: A, role: support_agent, team: s, country: US, status: fired}
  - {id: emp-2, name: B, role: support_agent, team: s, country: US}
  - {id: emp-2, name: C, role: support_agent, team: s, country: US}
subjects:
  - {id: user-1, jurisdiction: US, protected: [journalst]}
tickets:
  - {id: T-1, kind: gossip, subject: user-1, assignee: emp-1, status: open}
"""
    with pytest.raises(ValidationFailed) as caught:
        parse_text(text, "org.yaml")
    problems = caught.value.problems
    assert "org.yaml: principals[0] (id 'emp-1'): field 'status'" in problems[0]
    assert any(
        "principals[2] (id 'emp-2'): duplicate id (first at principals[1])" in p for p in problems
    )
    assert any("subjects[0] (id 'user-1'): field 'protected.0'" in p for p in problems)
    assert any("tickets[0] (id 'T-1'): field 'kind'" in p for p in problems)
    assert len(problems) == 4


def test_a_misspelt_section_is_an_error_not_silence() -> None:
    with pytest.raises(ValidationFailed, match="unknown section 'principles'"):
        parse_text("principles: []", "org.yaml")


def test_a_ticket_cannot_close_before_it_opens() -> None:
    with pytest.raises(ValidationFailed, match="closed is before opened"):
        parse_text(
            "tickets: [{id: T-1, kind: support, subject: u, assignee: e, status: closed,"
            " opened: '2026-01-05T10:00:00Z', closed: '2026-01-04T10:00:00Z'}]",
            "org.yaml",
        )


def test_times_need_a_zone() -> None:
    with pytest.raises(ValidationFailed, match="time zone"):
        parse_text(
            "tickets: [{id: T-1, kind: support, subject: u, assignee: e, status: open,"
            " opened: '2026-01-05T10:00:00'}]",
            "org.yaml",
        )


def test_a_key_given_twice_is_an_error_not_the_last_one_silently() -> None:
    for text, line in (
        ("principals: []\nsubjects: []\nprincipals: []\n", 3),
        (
            "principals:\n  - {id: e-1, name: E, role: support_agent, team: t, country: US,\n"
            "     role: internal_audit}\n",
            3,
        ),
    ):
        with pytest.raises(InvalidInput, match=f"at line {line}, .*is given twice"):
            parse_text(text, "org.yaml")


def test_unquoted_yaml_dates_and_json_nan_are_refused_without_echoing_values() -> None:
    # YAML reads an unquoted 2026-01-05 as a date: a bare date is no instant, and as an
    # extra field it could not be stored; the refusal must not quote the entry's values.
    for text in (
        "tickets: [{id: T-1, kind: support, subject: u, assignee: e, status: open,"
        " opened: 2026-01-05}]",
        "subjects: [{id: s-1, jurisdiction: US, last_ip: 203.0.113.99, seen: 2026-01-05}]",
    ):
        with pytest.raises(ValidationFailed) as caught:
            parse_text(text, "org.yaml")
        assert "bare date" in str(caught.value) or "plain JSON" in str(caught.value)
        assert "203.0.113.99" not in str(caught.value)
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_text('{"subjects": [{"id": "s-1", "score": NaN}]}', "org.json", as_json=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("principals: [\n", "not valid YAML at line"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("principals: {id: x}", "'principals' must be a list"),
    ],
)
def test_malformed_files_say_what_and_where(content: str, message: str) -> None:
    with pytest.raises((InvalidInput, ValidationFailed)) as caught:
        parse_text(content, "bad.yaml")
    assert message in str(caught.value)
    assert "bad.yaml" in str(caught.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        read_directory_file(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInput, match="not UTF-8"):
        read_directory_file(tmp_path / "bin.yaml")
    (tmp_path / "bad.json").write_text("{,}")
    with pytest.raises(InvalidInput, match="not valid JSON at line 1"):
        read_directory_file(tmp_path / "bad.json")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_either_parses_or_fails_with_a_custos_error(text: str) -> None:
    try:
        parse_text(text, "fuzz.yaml")
    except (InvalidInput, ValidationFailed) as exc:
        message = str(exc)
    else:
        message = "fuzz.yaml parsed"
    assert "fuzz.yaml" in message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["principals", "subjects", "tickets", "other"]),
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "name",
                        "role",
                        "team",
                        "country",
                        "status",
                        "kind",
                        "subject",
                        "assignee",
                        "jurisdiction",
                        "protected",
                        "x",
                    ]
                ),
                json_values,
                max_size=8,
            ),
            max_size=3,
        )
        | json_values,
        max_size=4,
    )
)
def test_structured_garbage_never_escapes_as_anything_but_a_custos_error(data: object) -> None:
    try:
        parse_text(json.dumps(data), "fuzz.json", as_json=True)
    except (InvalidInput, ValidationFailed) as exc:
        message = str(exc)
    else:
        message = "fuzz.json parsed"
    assert "fuzz.json" in message
