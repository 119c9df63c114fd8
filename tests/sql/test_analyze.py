"""The analysis of one SELECT: what it reads, whom it pins, what it searches, what runs."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.errors import QueryRefused, SqlRejected
from custos.sql import SourceMap, duckcheck, parse_data_map
from custos.sql.analyze import K_COLUMN, analyze
from custos.sql.pgcheck import check_generated

MAP = """\
sources:
  app:
    url: postgresql://reader@127.0.0.1:5432/app
    tables:
      public.logins:
        subject: user_id
        columns: {seen: plain, ip: ip_history, lat: location, email: contact, device_id: plain}
      devices:
        subject: user_id
        columns: {device_id: plain, model: device}
  lake:
    url: duckdb:lake.duckdb
    tables:
      logins:
        subject: user_id
        columns: {seen: plain, ip: ip_history, lat: location, email: contact, device_id: plain}
      devices:
        subject: user_id
        columns: {device_id: plain, model: device}
"""
DATA_MAP = parse_data_map(MAP)
PG = DATA_MAP.source("app")
DUCK = DATA_MAP.source("lake")
BOTH = pytest.mark.parametrize("source", [PG, DUCK], ids=["postgres", "duckdb"])


@BOTH
def test_a_pinned_read_names_its_subjects_and_categories(source: SourceMap) -> None:
    analysis = analyze(
        "SELECT l.seen, l.ip, d.model FROM logins l JOIN devices d ON d.user_id = l.user_id"
        " WHERE l.user_id IN ('u-1', 'u-2') ORDER BY l.seen",
        source,
    )
    assert not analysis.aggregate
    assert analysis.subjects == {"u-1", "u-2"}
    assert analysis.reads == {"ip_history", "device"}
    assert analysis.searches == frozenset()
    assert [(o.name, set(o.categories), o.subject) for o in analysis.outputs] == [
        ("seen", set(), False),
        ("ip", {"ip_history"}, False),
        ("model", {"device"}, False),
    ]


@BOTH
def test_category_columns_outside_the_output_are_searches(source: SourceMap) -> None:
    analysis = analyze(
        "SELECT seen FROM logins WHERE user_id = 'u-1' AND email LIKE 'a%' ORDER BY lat",
        source,
    )
    assert analysis.reads == frozenset()
    assert analysis.searches == {"contact", "location"}
    assert analysis.categories == {"contact", "location"}


@BOTH
def test_outputs_are_traced_through_ctes_subqueries_and_set_operations(
    source: SourceMap,
) -> None:
    analysis = analyze(
        "WITH c AS (SELECT ip AS a, user_id FROM logins WHERE user_id = 'u-1')"
        " SELECT x.a FROM (SELECT c.a FROM c) x"
        " UNION SELECT email FROM logins WHERE user_id = 'u-2'",
        source,
    )
    assert analysis.subjects == {"u-1", "u-2"}
    assert [(o.name, set(o.categories)) for o in analysis.outputs] == [
        ("a", {"ip_history", "contact"})
    ]
    assert analysis.searches == frozenset()


@BOTH
def test_a_subquery_predicate_is_a_search_not_a_read(source: SourceMap) -> None:
    analysis = analyze(
        "SELECT (SELECT count(*) FROM logins b WHERE b.user_id = a.user_id AND b.ip LIKE '1%')"
        " AS n FROM logins a WHERE a.user_id = 'u-1'",
        source,
    )
    assert analysis.outputs[0].categories == frozenset()
    assert analysis.searches == {"ip_history"}
    assert analysis.subjects == {"u-1"}


@BOTH
def test_pins_pass_through_joins_and_correlation(source: SourceMap) -> None:
    analysis = analyze(
        "SELECT a.ip FROM logins a JOIN logins b ON b.user_id = a.user_id"
        " LEFT JOIN devices d ON d.user_id = b.user_id WHERE a.user_id = 'u-1'"
        " AND EXISTS (SELECT 1 FROM devices e WHERE e.user_id = d.user_id)",
        source,
    )
    assert analysis.subjects == {"u-1"}


@BOTH
@pytest.mark.parametrize(
    "sql",
    [
        # an unpinned table beside a pinned one
        "SELECT a.ip FROM logins a JOIN devices d ON d.device_id = a.device_id"
        " WHERE a.user_id = 'u-1'",
        # the pin under OR does not restrict the rows
        "SELECT ip FROM logins WHERE user_id = 'u-1' OR seen > '2024-01-01'",
        # a pin inside a RIGHT JOIN's ON does not restrict the preserved side
        "SELECT d.model FROM logins a RIGHT JOIN devices d ON d.user_id = a.user_id"
        " AND a.user_id = 'u-1'",
        # a search for people by their subject id
        "SELECT ip FROM logins WHERE user_id LIKE 'u-%'",
        "SELECT ip FROM logins WHERE user_id = 'u-1' ORDER BY user_id",
        # an aggregate of a personal value
        "SELECT max(ip) FROM logins",
        "SELECT count(*) FROM logins WHERE email LIKE '%@example.org'",
        "SELECT user_id, count(*) FROM logins GROUP BY user_id",
        "SELECT ip FROM logins",
        "SELECT count(*) FROM (SELECT seen FROM logins) x",
    ],
)
def test_shapes_that_are_refused_say_what_to_change(sql: str, source: SourceMap) -> None:
    with pytest.raises(QueryRefused) as caught:
        analyze(sql, source)
    assert caught.value.reason
    assert caught.value.http_status == 403


@BOTH
def test_an_aggregate_gets_a_subject_count_and_coarse_keys(source: SourceMap) -> None:
    analysis = analyze("SELECT ip, count(*) AS n FROM logins GROUP BY ip", source)
    assert analysis.aggregate
    assert analysis.subjects == frozenset()
    assert analysis.reads == {"ip_history"}
    # Even asked precise, an aggregate's keys run coarse.
    sql = analysis.rewrite({"ip_history": "precise"})
    assert sql.endswith(f"GROUP BY {sql.split('GROUP BY ')[1]}")
    assert f'AS "{K_COLUMN}"' in sql
    assert 'COUNT(DISTINCT "logins"."user_id")' in sql
    assert '"logins"."ip" AS "ip"' not in sql


@BOTH
def test_rewrite_replaces_only_the_categories_asked_coarse(source: SourceMap) -> None:
    analysis = analyze("SELECT ip, email FROM logins WHERE user_id = 'u-1'", source)
    precise = analysis.rewrite({"ip_history": "precise", "contact": "precise"})
    assert '"logins"."ip" AS "ip"' in precise
    assert '"logins"."email" AS "email"' in precise
    coarse = analysis.rewrite({"ip_history": "coarse", "contact": "precise"})
    assert '"logins"."ip" AS "ip"' not in coarse
    assert '"logins"."email" AS "email"' in coarse
    with pytest.raises(KeyError):
        analysis.rewrite({"ip_history": "coarse"})


def test_the_generated_sql_names_the_mapped_table_with_its_schema() -> None:
    analysis = analyze("SELECT ip FROM logins WHERE user_id = 'u-1'", PG)
    sql = analysis.rewrite({"ip_history": "coarse"})
    assert 'FROM "public"."logins" AS "logins"' in sql
    assert "FROM custos_t" not in sql


def test_the_postgres_recheck_refuses_what_the_map_does_not_name() -> None:
    check_generated("SELECT 1 FROM public.logins", PG)
    for sql in (
        "SELECT 1 FROM logins",  # mapped only as public.logins
        "SELECT 1 FROM pg_catalog.pg_authid",
        "SELECT pg_read_file('x') FROM public.logins",
        "SELECT 1 FROM generate_series(1, 2)",
        "SELECT 'public.logins'::regclass FROM public.logins",
        "SELECT 1 FROM public.logins FOR SHARE",
    ):
        with pytest.raises(SqlRejected):
            check_generated(sql, PG)


def test_the_duckdb_recheck_refuses_what_the_map_does_not_name() -> None:
    duckcheck.check_generated("SELECT COUNT(*), lower(seen) FROM logins", DUCK)
    for sql in (
        "SELECT 1 FROM secrets",
        "SELECT 1 FROM other.logins",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM 'data.parquet'",
        "SELECT getenv('HOME') FROM logins",
        "SELECT list_transform([1], x -> x + 1) FROM logins",
        "SELECT CAST(ip AS INET) FROM logins",
        "SELECT 1 FROM logins; SELECT 2",
        "COPY logins TO 'x.csv'",
    ):
        with pytest.raises(SqlRejected):
            duckcheck.check_generated(sql, DUCK)


@BOTH
@pytest.mark.parametrize(
    ("sql", "where"),
    [
        ("SELECT ip FROM logins WHERE user_id = 'u-1'\n  AND pg_sleep(1) IS NULL", "line 2"),
        ("SELECT ip FROM nowhere", "line 1, column 16"),
        ("SELECT ip FROM logins WHERE", "line 1|end of the query"),
    ],
)
def test_rejections_say_where(sql: str, where: str, source: SourceMap) -> None:
    with pytest.raises(SqlRejected, match=where):
        analyze(sql, source)


@BOTH
@pytest.mark.parametrize("depth", [40, 300, 2000])
def test_deep_nesting_is_refused_not_a_crash(depth: int, source: SourceMap) -> None:
    parens = "SELECT " + "(" * depth + "ip" + ")" * depth + " FROM logins WHERE user_id = 'u'"
    nested = (
        "SELECT ip FROM logins WHERE user_id = 'u' AND ip IN "
        + "(SELECT ip FROM logins WHERE user_id = 'u' AND ip IN " * depth
        + "('x')"
        + ")" * depth
    )
    for sql in (parens, nested):
        with contextlib.suppress(SqlRejected, QueryRefused):
            analyze(sql, source)


def test_a_rejection_is_a_400_and_a_refusal_a_403() -> None:
    assert SqlRejected("x").http_status == 400
    assert QueryRefused("x").to_dict() == {
        "code": "query_refused",
        "message": "query refused: x",
        "reason": "x",
    }


_literal = st.from_regex(r"[A-Za-z0-9@.:_ -]{6,30}", fullmatch=True).filter(
    lambda s: s.strip() == s and len(set(s)) > 3
)


@settings(max_examples=60, deadline=None)
@given(
    literal=_literal,
    template=st.sampled_from(
        [
            "SELECT ip FROM logins WHERE ip = '{v}'",
            "SELECT ip FROM logins WHERE user_id LIKE '{v}'",
            "SELECT ip FROM logins WHERE user_id = '{v}' OR 1 = 1",
            "SELECT pg_read_file('{v}')",
            "SELECT ip FROM logins WHERE user_id = '{v}' FOR UPDATE",
            "SELECT ip FROM logins WHERE user_id = '{v}'; DROP TABLE logins",
            "SELECT ip FROM logins WHERE user_id = '{v}' AND",
            "SELECT ip FROM unmapped WHERE user_id = '{v}'",
            "SELECT count(*) FROM logins WHERE email = '{v}'",
            "DELETE FROM logins WHERE user_id = '{v}'",
            "SELECT '{v}'::inet FROM logins WHERE user_id = 'u'",
        ]
    ),
    source=st.sampled_from([PG, DUCK]),
)
def test_no_message_repeats_a_literal(literal: str, template: str, source: SourceMap) -> None:
    with pytest.raises((SqlRejected, QueryRefused)) as caught:
        analyze(template.format(v=literal), source)
    assert literal not in str(caught.value)
    assert literal not in repr(caught.value.to_dict())


_TOKENS = [
    "SELECT", "ip", "email", "user_id", "FROM", "logins", "devices", "l", "d", "WHERE", "=",
    "'u-1'", "AND", "OR", "(", ")", ",", "JOIN", "ON", "l.user_id", "d.user_id", "GROUP BY",
    "ORDER BY", "LIMIT", "1", "*", "count(*)", "UNION", "WITH", "c", "AS", "IN", "LIKE",
    "'%7'", "NOT", "EXISTS", "CASE", "WHEN", "THEN", "END", "::", "text", ";", "--", "/*",
    "*/", '"', "U&", "$$", "E'", "LATERAL", "OVER", "PARTITION BY", "max(ip)", "||",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=30),
       source=st.sampled_from([PG, DUCK]))  # fmt: skip
def test_any_token_soup_is_understood_or_refused_cleanly(
    tokens: list[str], source: SourceMap
) -> None:
    sql = " ".join(tokens)
    try:
        analysis = analyze(sql, source)
    except (SqlRejected, QueryRefused) as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert re.match(r"\S", message)
        return
    # Understood: then it must be rewritable, and the rewrite must pass its own checks.
    precision = dict.fromkeys(analysis.categories, "coarse")
    analysis.rewrite(precision)
