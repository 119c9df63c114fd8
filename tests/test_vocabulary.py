"""Unknown words are named with the nearest known one and every valid one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from custos.cli import app
from custos.errors import InvalidInput
from custos.policy import AccessRequest, PolicyEngine, load_pack
from custos.vocabulary import CATEGORIES, PURPOSES, unknown_word
from tests.factories import SUPPORT_WORLD, write_org


def test_a_near_miss_is_named_and_every_valid_word_listed() -> None:
    message = unknown_word("category", "ip_histroy")
    assert message.startswith("unknown category 'ip_histroy' (did you mean 'ip_history'? valid: ")
    assert all(c in message for c in CATEGORIES)
    far = unknown_word("purpose", "curiosity")
    assert "did you mean" not in far
    assert all(p in far for p in PURPOSES)
    # A value that may be personal data is not repeated.
    assert "203.0.113.7" not in unknown_word("category", "203.0.113.7")


def test_an_access_request_and_an_approval_request_list_the_valid_words() -> None:
    engine = PolicyEngine(load_pack())
    with pytest.raises(InvalidInput, match=r"did you mean 'support'\? valid: support, trust_"):
        # Refused before its facts are read: the words are the pack's.
        engine.decide(AccessRequest("emp-1", "user-1", "profile", "suport"), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"unknown precision 'exact' \(valid: coarse, precise"):
        AccessRequest("emp-1", "user-1", "profile", "support", precision="exact")


def test_org_load_notes_a_role_the_default_pack_does_not_know(home: Path, tmp_path: Path) -> None:
    world = {**SUPPORT_WORLD, "principals": [
        *SUPPORT_WORLD["principals"],
        {"id": "emp-9", "name": "X", "role": "suport_agent", "team": "t", "country": "US"},
    ]}  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    loaded = runner.invoke(app, ["org", "load", str(write_org(tmp_path / "o.yaml", world))])
    assert loaded.exit_code == 0, loaded.output
    assert "note: unknown role 'suport_agent' (did you mean 'support_agent'?" in loaded.output
    assert "emp-9 get nothing from the policy pack" in loaded.output
