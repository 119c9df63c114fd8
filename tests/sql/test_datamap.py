"""The data map: sources.yaml parsed into the model, every problem reported as file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.errors import DataMapError, InvalidInput
from custos.sql import BUILTIN_COARSE, load_data_map, parse_data_map, to_json
from custos.vocabulary import CATEGORIES

EXAMPLE = """\
sources:
  app:
    url: postgresql://reader@127.0.0.1:5432/app
    password_env: APP_DB_PASSWORD
    tables:
      public.logins:
        subject: user_id
        columns:
          user_id: subject
          at: plain
          ip: ip_history
          city: {category: location, coarse: none}
          lat: {category: location, coarse: grid}
          email: {category: contact, coarse: email_mask}
          note: {category: content, coarse: {duckdb: "NULL", postgres: "NULL"}}
  lake:
    url: "duckdb:"
    tables:
      logins:
        subject: user_id
        file: data/logins/*.parquet
        columns:
          ip: ip_history
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(DataMapError) as caught:
        parse_data_map(text, "sources.yaml")
    return caught.value.problems


def test_the_example_parses_into_the_model() -> None:
    data_map = parse_data_map(EXAMPLE)
    app = data_map.source("app")
    assert app.dialect == "postgres"
    assert app.password_env == "APP_DB_PASSWORD"
    logins = app.tables["public.logins"]
    assert logins.subject == "user_id"
    assert logins.columns["user_id"].is_subject
    assert logins.columns["user_id"].category is None
    assert logins.columns["at"].category is None
    assert not logins.columns["at"].is_subject
    assert logins.columns["ip"].category == "ip_history"
    assert logins.columns["ip"].coarse == BUILTIN_COARSE["ip_prefix"]
    assert logins.columns["city"].coarse == BUILTIN_COARSE["none"]
    assert logins.columns["lat"].coarse == BUILTIN_COARSE["grid"]
    note = logins.columns["note"].coarse
    assert note is not None
    assert note.name == "custom"
    assert note.sql["postgres"] == "NULL"
    lake = data_map.source("lake")
    assert lake.dialect == "duckdb"
    # The subject column is implied when the map does not list it.
    assert lake.tables["logins"].columns["user_id"].is_subject
    assert lake.tables["logins"].file == "data/logins/*.parquet"
    assert re.fullmatch(r"[0-9a-f]{64}", data_map.digest)


def test_the_digest_is_of_the_content_not_its_layout() -> None:
    reordered = yaml.safe_dump(yaml.safe_load(EXAMPLE), sort_keys=True, default_flow_style=True)
    assert parse_data_map(reordered).digest == parse_data_map(EXAMPLE).digest
    changed = EXAMPLE.replace("ip: ip_history\n  lake", "ip: location\n  lake")
    changed = EXAMPLE.replace(
        "          ip: ip_history\n          city", "          ip: device\n          city"
    )
    assert parse_data_map(changed).digest != parse_data_map(EXAMPLE).digest
    assert (
        to_json(parse_data_map(EXAMPLE))["sources"]["app"]["tables"]["public.logins"]["columns"][
            "ip"
        ]["category"]
        == "ip_history"
    )


def test_an_unknown_source_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidInput, match=r"unknown source 'nope' \(valid: app, lake\)"):
        parse_data_map(EXAMPLE).source("nope")


def test_an_absent_or_empty_file_is_an_empty_map(tmp_path: Path) -> None:
    assert load_data_map(tmp_path / "sources.yaml").sources == {}
    (tmp_path / "sources.yaml").write_text("", encoding="utf-8")
    assert load_data_map(tmp_path / "sources.yaml").sources == {}


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
sources:
  app:
    url: postgresql://reader@h/db
    tables:
      logins:
        subject: user_id
        columns:
          ip: ip_histry
          user_id: plain
          when: {category: location, coarse: blur}
          other: subject
          extra: {category: plain, coarse: none}
        flavour: x
"""
    problems = problems_of(text)
    assert problems == [
        "sources.yaml:8: source app table logins column ip: unknown category 'ip_histry'"
        " (did you mean 'ip_history'? valid: profile, contact, ip_history, location, device,"
        " messages, content, social_graph, payment, credentials)",
        "sources.yaml:9: source app table logins column user_id: the subject column must be"
        " mapped as subject",
        "sources.yaml:10: source app table logins column when: unknown coarse form 'blur'"
        " (valid: ip_prefix, grid, email_mask, day, none, or a mapping of dialect to SQL)",
        "sources.yaml:11: source app table logins column other: only the table's subject"
        " column is subject",
        "sources.yaml:12: source app table logins column extra: a plain column has no coarse form",
        "sources.yaml:13: source app table logins: unknown field 'flavour' (valid: subject,"
        " file, columns)",
    ]


def test_a_password_in_the_url_is_refused_and_never_repeated() -> None:
    text = "sources:\n  app:\n    url: postgresql://reader:s3cret-pw@h/db\n    tables: {}\n"
    with pytest.raises(DataMapError) as caught:
        parse_data_map(text)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.problems == [
        "sources.yaml:3: source app url holds a password: remove it and name password_env instead"
    ]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("url: mysql://h/db", "url: postgresql://… or duckdb:PATH"),
        ('url: "duckdb:"\n    tables:\n      t: {subject: u, columns: {}}', "names its Parquet"),
        ("url: duckdb:x.db\n    password_env: X", "a DuckDB source has no password"),
        ("url: duckdb:x.db\n    tables:\n      T: {subject: u, columns: {}}", "lower-case"),
        ("url: duckdb:x.db\n    tables:\n      a.b.c: {subject: u, columns: {}}", "schema.table"),
        ("url: duckdb:x.db\n    tables:\n      t: {columns: {}}", "subject is missing"),
        (
            "url: duckdb:x.db\n    tables:\n      t: {subject: u, columns: {x: {category:"
            " content, coarse: {postgres: 'NULL'}}}}",
            "no SQL for this source's dialect duckdb",
        ),
        (
            "url: duckdb:x.db\n    tables:\n      t: {subject: u, columns: {x: {category:"
            " content, coarse: {duckdb: '(SELECT ip FROM t)'}}}}",
            "not a query or a table",
        ),
        (
            "url: duckdb:x.db\n    tables:\n      t: {subject: u, columns: {x: {category:"
            " content, coarse: {duckdb: 'other_col'}}}}",
            "may name no column but {col}",
        ),
    ],
)
def test_each_rule_is_enforced(snippet: str, expected: str) -> None:
    text = f"sources:\n  s:\n    {snippet}\n"
    if "tables" not in snippet:
        text += "    tables: {}\n"
    problems = problems_of(text)
    assert any(expected in p for p in problems), problems
    assert all(re.match(r"sources\.yaml:\d+: ", p) for p in problems)


def test_duplicate_keys_and_bad_yaml_name_their_line() -> None:
    assert problems_of("sources:\n  a: {}\n  a: {}\n") == [
        "sources.yaml:3: the key 'a' is given twice"
    ]
    assert problems_of("sources: [\n")[0].startswith("sources.yaml:2: ")


# --- properties ------------------------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@st.composite
def maps(draw: st.DrawFn) -> dict[str, object]:
    sources: dict[str, object] = {}
    for name in draw(st.lists(_names, min_size=1, max_size=3, unique=True)):
        dialect = draw(st.sampled_from(["postgres", "duckdb"]))
        tables: dict[str, object] = {}
        for table in draw(st.lists(_names, min_size=1, max_size=3, unique=True)):
            subject = draw(_names)
            columns: dict[str, object] = {}
            for column in draw(st.lists(_names, max_size=5, unique=True)):
                if column == subject:
                    columns[column] = "subject"
                    continue
                columns[column] = draw(
                    st.one_of(
                        st.just("plain"),
                        st.sampled_from(sorted(CATEGORIES)),
                        st.builds(
                            lambda c, f: {"category": c, "coarse": f},
                            st.sampled_from(sorted(CATEGORIES)),
                            st.sampled_from(sorted(BUILTIN_COARSE)),
                        ),
                    )
                )
            tables[table] = {"subject": subject, "columns": columns}
        url = "postgresql://r@127.0.0.1/db" if dialect == "postgres" else "duckdb:data.db"
        sources[name] = {"url": url, "tables": tables}
    return {"sources": sources}


@settings(max_examples=60, deadline=None)
@given(maps())
def test_every_valid_map_parses_and_its_digest_ignores_layout(raw: dict[str, object]) -> None:
    text = yaml.safe_dump(raw, sort_keys=False)
    parsed = parse_data_map(text)
    again = parse_data_map(yaml.safe_dump(raw, sort_keys=True, default_flow_style=True))
    assert parsed.digest == again.digest
    assert set(parsed.sources) == set(raw["sources"])  # type: ignore[call-overload]
    for source in parsed.sources.values():
        for table in source.tables.values():
            assert table.columns[table.subject].is_subject
            for column in table.columns.values():
                assert (column.category is None) == (column.coarse is None)
                if column.coarse is not None:
                    assert source.dialect in column.coarse.sql


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_map_or_a_located_error(text: str) -> None:
    problems: list[str] = []
    try:
        parse_data_map(text)
    except DataMapError as exc:
        problems = exc.problems or ["(none)"]
    assert all(p.startswith("sources.yaml:") for p in problems)


@settings(max_examples=100, deadline=None)
@given(maps(), st.data())
def test_a_wrong_category_is_reported_on_its_own_line(
    raw: dict[str, object], data: st.DataObject
) -> None:
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=False)
    lines = text.split("\n")
    candidates = [
        i
        for i, line in enumerate(lines)
        if re.fullmatch(r"\s+[a-z0-9_]+: [a-z_]+", line) and line.split(": ")[1] in CATEGORIES
    ]
    if not candidates:
        return
    index = data.draw(st.sampled_from(candidates))
    lines[index] = lines[index].split(": ")[0] + ": not_a_category"
    problems = problems_of("\n".join(lines))
    assert any(p.startswith(f"sources.yaml:{index + 1}: ") for p in problems), problems
