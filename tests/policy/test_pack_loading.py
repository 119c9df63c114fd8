"""Loading packs: invalid packs name the file and policy; evaluation errors fail closed."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.directory import Principal, Subject
from custos.errors import PolicyError
from custos.policy import AccessRequest, Facts, PolicyEngine, install_default_pack, load_pack
from custos.policy.pack import DEFAULT_PACK, build_pack

SCHEMA = (DEFAULT_PACK / "schema.cedarschema").read_text()
ALLOW_ALL = """
@id("allow-all")
@explanation("everything is allowed")
permit (principal, action, resource);
"""


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "pack"
    install_default_pack(folder)
    return folder


def test_install_copies_the_pack_once_and_never_overwrites(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    assert install_default_pack(folder)
    (folder / "10-roles.cedar").write_text(ALLOW_ALL)
    assert not install_default_pack(folder)
    assert (folder / "10-roles.cedar").read_text() == ALLOW_ALL
    assert (folder / "cases.yaml").exists()


def test_digest_changes_with_any_policy_text(pack_dir: Path) -> None:
    before = load_pack(pack_dir).digest
    path = pack_dir / "50-staff.cedar"
    path.write_text(path.read_text() + "\n// a comment\n")
    assert load_pack(pack_dir).digest != before


def test_a_policy_that_does_not_match_the_schema_is_named(pack_dir: Path) -> None:
    (pack_dir / "60-bad.cedar").write_text(
        '@id("typo")\n@explanation("x")\n'
        'forbid (principal, action, resource) when { principal.rank == "x" };\n'
    )
    with pytest.raises(PolicyError) as caught:
        load_pack(pack_dir)
    assert "60-bad.cedar" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("permit (principal, action, resource) when {", "line 1, column 43"),
        ("// first\npermit (principal, action, resource)\nwhen { principal.x == };",
         "line 3, column 23"),
        ("permit (principal, action, resource);\n\nforbid (principal, action, resource)"
         " unless {\n  1 + };", "line 4, column 7"),
        ('permit (principal, action, resource) when { "open string\n', "line 1, column 45"),
    ],
)  # fmt: skip
def test_syntax_errors_name_the_file_line_and_column(pack_dir: Path, text: str, place: str) -> None:
    (pack_dir / "60-bad.cedar").write_text(text)
    with pytest.raises(PolicyError, match=rf"60-bad\.cedar: {place}: does not parse"):
        load_pack(pack_dir)


@settings(max_examples=40, deadline=None)
@given(
    comments=st.lists(st.text(alphabet="abc ;{}()", max_size=30), min_size=1, max_size=6),
    at=st.integers(min_value=0, max_value=5),
    indent=st.integers(min_value=0, max_value=6),
)
def test_a_stray_brace_is_placed_on_its_line_and_column(
    comments: list[str], at: int, indent: int
) -> None:
    # Valid policies, each after a comment that may hold brackets; a stray "}" on its own
    # line among them is named by the line and column it is on.
    lines: list[str] = []
    for comment in comments:
        lines += [f"// {comment}", "permit (principal, action, resource);"]
    at = min(at, len(comments)) * 2
    lines.insert(at, " " * indent + "}")
    with pytest.raises(PolicyError, match=rf"x\.cedar: line {at + 1}, column {indent + 1}: "):
        build_pack("pack", "s.cedarschema", SCHEMA, {"x.cedar": "\n".join(lines)})


def test_brackets_nested_too_deep_are_refused_before_cedar_sees_them(pack_dir: Path) -> None:
    # Cedar's parser overflows its stack on these (the process dies with no error): this
    # test would crash pytest itself if the check let the file through.
    deep = "(" * 1000 + "true" + ")" * 1000
    (pack_dir / "60-deep.cedar").write_text(
        '@id("deep")\n@explanation("x")\n'
        f"forbid (principal, action, resource)\nwhen {{ {deep} }};\n"
    )
    with pytest.raises(PolicyError, match=r"60-deep\.cedar: line 4: brackets nested more than"):
        load_pack(pack_dir)
    # Brackets in comments and strings are not nesting.
    (pack_dir / "60-deep.cedar").write_text(
        "// " + "(" * 200 + "\n"
        '@id("deep")\n@explanation("' + "[" * 200 + '")\n'
        "forbid (principal, action, resource) when { false };\n"
    )
    assert "deep" in load_pack(pack_dir).policies


def test_missing_and_duplicate_annotations(pack_dir: Path) -> None:
    (pack_dir / "60-bad.cedar").write_text(
        "permit (principal, action, resource);\n"
        '@id("inactive-staff")\n@explanation("dup")\nforbid (principal, action, resource);\n'
    )
    with pytest.raises(PolicyError) as caught:
        load_pack(pack_dir)
    text = str(caught.value)
    assert "60-bad.cedar: policy #1: missing annotation(s) @id, @explanation" in text
    assert "duplicate @id 'inactive-staff' (also in 50-staff.cedar)" in text


def test_misspelt_obligations_are_errors_not_silence(pack_dir: Path) -> None:
    (pack_dir / "60-bad.cedar").write_text(
        '@id("a")\n@explanation("x")\n@review("sometimes")\n@priority("high")\n'
        "permit (principal, action, resource) when { false };\n"
        '@id("b")\n@explanation("x")\n@reveiw("mandatory")\n@coarse_by_default("ip_hist")\n'
        "forbid (principal, action, resource) when { false };\n"
    )
    with pytest.raises(PolicyError) as caught:
        load_pack(pack_dir)
    text = str(caught.value)
    assert '(a): @review must be "mandatory"' in text
    assert "(a): @priority must be a whole number" in text
    assert "(b): unknown annotation(s) @reveiw" in text
    assert "(b): @coarse_by_default names unknown categories ip_hist" in text


@pytest.mark.parametrize(
    "template",
    ["{0} is leaving", "{principal is {status}", "{} asked", "{principal.id}", "{status:d}"],
)
def test_an_explanation_that_could_fail_at_decision_time_refuses_the_pack(
    pack_dir: Path, template: str
) -> None:
    (pack_dir / "60-bad.cedar").write_text(
        f'@id("bad-words")\n@explanation("{template}")\n'
        "forbid (principal, action, resource) when { false };\n"
    )
    with pytest.raises(PolicyError, match=r"\(bad-words\): @explanation"):
        load_pack(pack_dir)


def test_plain_placeholders_are_filled_and_unknown_ones_left_as_written(pack_dir: Path) -> None:
    (pack_dir / "60-fine.cedar").write_text(
        '@id("fine-words")\n@explanation("{principal} and {no_such_field}")\n'
        "forbid (principal, action, resource) when { false };\n"
    )
    assert "fine-words" in load_pack(pack_dir).policies


def test_a_pack_needs_one_schema(tmp_path: Path, pack_dir: Path) -> None:
    (pack_dir / "schema.cedarschema").unlink()
    with pytest.raises(PolicyError, match=r"exactly one \.cedarschema"):
        load_pack(pack_dir)
    with pytest.raises(PolicyError, match="no policy pack folder"):
        load_pack(tmp_path / "nowhere")


def test_a_policy_that_errors_at_evaluation_fails_closed(tmp_path: Path) -> None:
    folder = tmp_path / "pack"
    folder.mkdir()
    with resources.as_file(resources.files("custos.policy") / "pack") as src:
        shutil.copyfile(Path(src) / "schema.cedarschema", folder / "schema.cedarschema")
    # Validates (types are right) but overflows at run time: Cedar then skips the forbid,
    # which without fail-closed handling would let the permit through.
    (folder / "p.cedar").write_text(
        ALLOW_ALL + '@id("overflow")\n@explanation("x")\n'
        "forbid (principal, action, resource) when { context.now * 9223372036854775807 > 0 };\n"
    )
    engine = PolicyEngine(load_pack(folder))
    facts = Facts(
        principal=Principal("e", "E", "employee", "support_agent", "t", "US", "active"),
        subject=Subject("u", "US"),
        allowed_countries=("US",),
    )
    decision = engine.decide(
        AccessRequest("e", "u", "profile", "support", time=datetime(2026, 1, 1, tzinfo=UTC)),
        facts,
    )
    assert decision.outcome == "deny"
    assert decision.reasons[0].policy == "evaluation-error"
    assert decision.errors
