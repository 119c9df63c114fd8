"""An open vocabulary: a pack declares its purposes, categories, protected flags and roles.

A custom pack in a temporary folder adds the purpose ``hr_investigation``, the category
``health`` and the protected flag ``whistleblower``; a real home takes it, a directory using
the new words loads, decisions are made with them, and an unknown word is still refused with
the list of valid ones — with no change to custos's code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from custos.access import Custos
from custos.cli import app
from custos.detect.events import EventStore
from custos.directory import read_directory_file
from custos.errors import InvalidInput, PolicyError, ValidationFailed
from custos.ledger.entries import PolicyVersionEntry, parse_bytes
from custos.policy import AccessRequest, PolicyEngine, load_pack
from custos.policy.pack import DEFAULT_PACK, VOCABULARY_FILE, parse_vocabulary
from custos.vocabulary import (
    CATEGORIES,
    DEFAULT_VOCABULARY,
    KNOWN_ROLES,
    PROTECTED_FLAGS,
    PURPOSES,
)
from tests.factories import hr_source, write_org

HR_POLICY = """
@id("role-hr")
@explanation("an HR investigator may read profile and health data for an HR investigation")
permit (principal, action == Custos::Action::"read", resource)
when {
  principal.role == "hr_investigator" &&
  context.purpose == "hr_investigation" &&
  ["profile", "health"].contains(resource.category)
};

@id("whistleblower-shield")
@priority("10")
@explanation("a whistleblower's data may never serve an HR investigation")
forbid (principal, action, resource is Custos::Data)
when {
  resource.subject.protected.contains("whistleblower") &&
  context.purpose == "hr_investigation"
};
"""


def custom_pack(folder: Path) -> Path:
    """The shipped pack plus HR words and policies."""
    with_default = Path(str(DEFAULT_PACK))
    folder.mkdir(parents=True, exist_ok=True)
    for path in with_default.iterdir():
        if path.suffix in (".cedar", ".cedarschema", ".yaml") and path.name != "cases.yaml":
            shutil.copyfile(path, folder / path.name)
    words = yaml.safe_load((folder / VOCABULARY_FILE).read_text(encoding="utf-8"))
    words["purposes"].append("hr_investigation")
    words["categories"].append("health")
    words["protected_flags"].append("whistleblower")
    words["roles"].append("hr_investigator")
    (folder / VOCABULARY_FILE).write_text(yaml.safe_dump(words), encoding="utf-8")
    (folder / "60-hr.cedar").write_text(HR_POLICY, encoding="utf-8")
    return folder


HR_WORLD = {
    "principals": [
        {"id": "emp-7001", "name": "H", "role": "hr_investigator", "team": "hr", "country": "US"}
    ],
    "subjects": [
        {"id": "user-5", "jurisdiction": "US"},
        {"id": "user-6", "jurisdiction": "US", "protected": ["whistleblower"]},
    ],
    "tickets": [
        {"id": "HR-1", "kind": "hr_investigation", "subject": "user-5", "assignee": "emp-7001",
         "status": "open"},
        {"id": "HR-2", "kind": "hr_investigation", "subject": "user-6", "assignee": "emp-7001",
         "status": "open"},
    ],
}  # fmt: skip


def test_the_shipped_pack_declares_todays_words() -> None:
    words = load_pack().vocabulary
    assert words == DEFAULT_VOCABULARY
    assert set(words.purposes) == PURPOSES
    assert set(words.categories) == CATEGORIES
    assert set(words.protected_flags) == PROTECTED_FLAGS
    assert set(words.roles) == KNOWN_ROLES


def test_a_custom_pack_works_end_to_end_without_code_changes(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    shutil.rmtree(home / "policies")
    custom_pack(home / "policies")
    loaded = runner.invoke(app, ["org", "load", str(write_org(tmp_path / "hr.yaml", HR_WORLD))])
    assert loaded.exit_code == 0, loaded.output
    assert "note:" not in loaded.output  # hr_investigator is a role the pack declares
    with Custos.open(home) as system:
        allowed = system.decide(
            AccessRequest("emp-7001", "user-5", "health", "hr_investigation", ticket="HR-1")
        )
        assert allowed.outcome == "allow", allowed.explanation
        shielded = system.decide(
            AccessRequest("emp-7001", "user-6", "health", "hr_investigation", ticket="HR-2")
        )
        assert shielded.outcome == "deny"
        assert shielded.reasons[0].policy == "whistleblower-shield"
        # The vocabulary is part of the ledgered pack version.
        versions = [
            entry
            for i in range(system.ledger.size())
            if isinstance(entry := parse_bytes(system.ledger.entry(i)), PolicyVersionEntry)
        ]
        assert "hr_investigation" in versions[-1].files[VOCABULARY_FILE]
        assert versions[-1].digest == system.policy_pack.digest == allowed.policy_version
        # An unknown word is still refused, naming every valid one, and nothing is decided.
        size = system.ledger.size()
        with pytest.raises(InvalidInput, match=r"did you mean 'health'\?.*valid: profile,.*health"):
            system.decide(
                AccessRequest("emp-7001", "user-5", "helth", "hr_investigation", ticket="HR-1")
            )
        assert system.ledger.size() == size
        # Imported access events use the pack's words too.
        events = EventStore(system.db, vocabulary=lambda: system.policy_pack.vocabulary)
        line = (
            '{"id": "ev-h1", "time": "2026-01-05T10:03:00Z", "principal": "emp-7001", '
            '"action": "read", "subject": "user-5", "category": "health", '
            '"purpose": "hr_investigation", "decision": "allow", "precision": "coarse"}'
        )
        assert events.import_lines([line], "hr.jsonl").added == 1
        with pytest.raises(ValidationFailed) as refused:
            system.events.import_lines(
                [line.replace("ev-h1", "ev-h2").replace("health", "helth")], "hr.jsonl"
            )
        assert "unknown category 'helth'" in refused.value.problems[0]
    # The shipped pack refuses the new words with the list of valid ones.
    with pytest.raises(ValidationFailed) as bad:
        read_directory_file(write_org(tmp_path / "hr2.yaml", HR_WORLD), load_pack().vocabulary)
    problems = "\n".join(bad.value.problems)
    assert "field 'protected.0': unknown protected flag 'whistleblower'" in problems
    assert "field 'kind': unknown ticket kind 'hr_investigation'" in problems
    assert "valid: support, trust_safety" in problems


def test_a_policy_comparing_a_word_the_pack_does_not_know_is_refused(tmp_path: Path) -> None:
    pack = custom_pack(tmp_path / "pack")
    text = (pack / "60-hr.cedar").read_text(encoding="utf-8")
    (pack / "60-hr.cedar").write_text(text.replace('"health"]', '"helth"]'), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"role-hr\): compares unknown category 'helth'"):
        load_pack(pack)
    (pack / "60-hr.cedar").write_text(
        text.replace('contains("whistleblower")', 'contains("whistle_blower")'),
        encoding="utf-8",
    )
    with pytest.raises(PolicyError, match="compares unknown protected flag 'whistle_blower'"):
        load_pack(pack)


HEAD = "purposes: [support]\ncategories: [profile]\nprotected_flags: []\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD, "line 1: field 'roles': Field required"),
        (HEAD.replace("[support]", "[support, Support]") + "roles: []\n",
         "line 1: field 'purposes.1': a word is a lowercase letter"),
        (HEAD.replace("[profile]", "\n  - profile\n  - profile") + "roles: []\n",
         "line 4: field 'categories.1': 'profile' twice"),
        (HEAD.replace("[support]", "[]") + "roles: []\n",
         "field 'purposes': List should have at least 1 item"),
        (HEAD + "roles: []\ncolours: [red]\n", "line 5: field 'colours': unknown field"),
        ("purposes: [support\n", "not valid YAML"),
        ("- support\n", "must be a mapping"),
    ],
)  # fmt: skip
def test_a_bad_vocabulary_is_refused_naming_line_and_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_vocabulary(text, "pack/vocabulary.yaml")
    assert message in refused.value.message
    assert refused.value.message.startswith("pack/vocabulary.yaml: ")


def test_a_pack_without_a_vocabulary_keeps_the_default_words_and_digest(tmp_path: Path) -> None:
    pack = tmp_path / "old"
    shutil.copytree(Path(str(DEFAULT_PACK)), pack)
    (pack / VOCABULARY_FILE).unlink()
    loaded = load_pack(pack)
    assert loaded.vocabulary == DEFAULT_VOCABULARY
    assert VOCABULARY_FILE not in loaded.files
    assert loaded.digest != load_pack().digest


def test_the_engine_refuses_a_word_its_pack_lacks_before_reading_facts() -> None:
    with pytest.raises(InvalidInput, match="unknown purpose 'hr_investigation'"):
        PolicyEngine(load_pack()).decide(
            AccessRequest("emp-1", "user-1", "health", "hr_investigation"),
            None,  # type: ignore[arg-type]  # refused before the facts are read
        )


WORD = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_either_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        words = parse_vocabulary(text, "v.yaml")
    except PolicyError as exc:
        refused = exc.message
    else:
        refused = None
        assert words.purposes
        assert words.categories
    assert refused is None or refused.startswith("v.yaml: ")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(WORD, min_size=1, max_size=8, unique=True),
    st.lists(WORD, min_size=1, max_size=8, unique=True),
    st.lists(WORD, max_size=8, unique=True),
    st.lists(WORD, max_size=8, unique=True),
)
def test_declared_words_round_trip_in_order(
    purposes: list[str], categories: list[str], flags: list[str], roles: list[str]
) -> None:
    text = yaml.safe_dump(
        {"purposes": purposes, "categories": categories, "protected_flags": flags, "roles": roles}
    )
    words = parse_vocabulary(text, "v.yaml")
    assert words.to_dict() == {
        "purposes": purposes,
        "categories": categories,
        "protected_flags": flags,
        "roles": roles,
    }
    for word in purposes:
        assert words.knows("purpose", word)


def test_the_api_takes_the_packs_words(home: Path, tmp_path: Path) -> None:
    from tests.api.conftest import run_service

    with Custos.init(home) as system:
        shutil.rmtree(home / "policies")
        custom_pack(home / "policies")
        system.activate_policies()
        system.directory.merge(
            read_directory_file(
                write_org(tmp_path / "hr.yaml", HR_WORLD), system.policy_pack.vocabulary
            ),
            source="hr",
        )
        _, secret = system.accounts.create_token("hr-tool", ["tool"], "emp-7001")
        for url, _app in run_service(system):
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}) as api:
                body = {"subject": "user-5", "category": "health",
                        "purpose": "hr_investigation", "ticket": "HR-1"}  # fmt: skip
                allowed = api.post("/v1/check", json=body)
                assert allowed.status_code == 200, allowed.text
                assert allowed.json()["decision"] == "allow"
                size = system.ledger.size()
                refused = api.post("/v1/check", json={**body, "category": "helth"})
                assert refused.status_code == 422
                message = refused.json()["error"]["message"]
                assert "unknown category 'helth' (did you mean 'health'?" in message
                assert system.ledger.size() == size


def test_guarded_sql_takes_the_packs_categories(home: Path, tmp_path: Path) -> None:
    import dataclasses

    from custos.access import QueryRequest
    from custos.errors import DataMapError

    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    hr_source(home)
    sql = "SELECT seen, diagnosis FROM notes WHERE user_id = 'user-5'"
    asked = QueryRequest("emp-7001", "hr", sql, "hr_investigation", ticket="HR-1")
    # The shipped words have no `health`: the map is refused where it names it.
    with Custos.open(home) as system:
        # Nor has it the purpose, which is checked first.
        with pytest.raises(InvalidInput, match="unknown purpose 'hr_investigation'"):
            system.query(asked)
        with pytest.raises(DataMapError) as refused:
            system.query(dataclasses.replace(asked, purpose="support"))
    assert "sources.yaml:9: " in refused.value.problems[0]
    assert "unknown category 'health'" in refused.value.problems[0]
    # With the custom pack the same map and query work, precise as the HR policy allows.
    shutil.rmtree(home / "policies")
    custom_pack(home / "policies")
    loaded = runner.invoke(app, ["org", "load", str(write_org(tmp_path / "hr.yaml", HR_WORLD))])
    assert loaded.exit_code == 0, loaded.output
    with Custos.open(home) as system:
        result = system.query(asked)
        assert [(c.category, c.precision) for c in result.columns] == [
            (None, None),
            ("health", "precise"),
        ]
        assert result.rows[0][1] == "flu"


# Values a vocabulary file's lists may hold: good words, near misses and other YAML values.
_ITEMS = st.one_of(
    st.sampled_from(["support", "health", "a", "x_1", "a" * 32]),
    st.sampled_from(["", "A", "1a", "a-b", "a" * 33, "support\n", " support", "é"]),
    st.integers(),
    st.none(),
    st.booleans(),
)
_LISTS: st.SearchStrategy[object] = st.one_of(
    st.lists(_ITEMS, max_size=4), st.sampled_from(["support", 3, None, {}])
)
_FILES = st.dictionaries(
    st.sampled_from(["purposes", "categories", "protected_flags", "roles", "extra"]), _LISTS
)


@settings(max_examples=400, deadline=None)
@given(_FILES)
def test_the_plain_check_is_never_looser_than_the_schema(data: dict[str, object]) -> None:
    """A valid file is read without pydantic (:func:`_plainly_valid`); the schema names the
    problems of any other. The plain check must pass nothing the schema refuses, and read
    what it passes as the schema does."""
    from pydantic import ValidationError

    from custos.policy.pack import _plainly_valid, _vocabulary_schema

    if not _plainly_valid(dict(data)):
        return
    try:
        model = _vocabulary_schema().model_validate(data)
    except ValidationError as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"the plain check passed what the schema refuses: {exc}")
    for key in ("purposes", "categories", "protected_flags", "roles"):
        words = getattr(model, key)
        assert words == data[key]
        assert len(set(words)) == len(words)
    read = parse_vocabulary(yaml.safe_dump(data), "v.yaml")
    assert [list(read.purposes), list(read.categories)] == [data["purposes"], data["categories"]]
