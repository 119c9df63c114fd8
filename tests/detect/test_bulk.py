"""What a bulk access keeps of a statement: its scope, the columns it read, and its shape
with no literal left (custos.detect.importers.common), checked on real sqlglot parses."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.detect.importers.common import (
    BulkScope,
    TableTarget,
    bulk_scope,
    parse_statements,
    statement_shape,
)

LOGINS = TableTarget("public", "logins")


def _scope(sql: str) -> BulkScope:
    trees = parse_statements(sql, "postgres")
    assert trees
    return bulk_scope(trees, LOGINS)


@pytest.mark.parametrize(
    ("sql", "scope", "columns", "export"),
    [
        ("SELECT ip FROM logins", "table", ("ip",), False),
        ("SELECT * FROM public.logins", "table", ("*",), False),
        # Grouping by a value reads the values: not an aggregate.
        ("SELECT ip, count(*) FROM logins GROUP BY ip", "table", ("ip",), False),
        ("SELECT max(ip) FROM logins", "table", ("ip",), False),  # a row's value
        ("SELECT count(*) FROM logins", "aggregate", (), False),
        ("SELECT count(*) AS n, sum(1) FROM logins WHERE at > $1", "aggregate", ("at",), False),
        ("SELECT user_id FROM logins WHERE ip << '10.0.0.0/8'", "range", ("ip", "user_id"), False),
        ("SELECT l.ip FROM logins l JOIN users u ON u.id = l.user_id", "range", ("ip", "user_id"),
         False),
        ("SELECT ip FROM logins LIMIT 10", "range", ("ip",), False),
        ("COPY logins TO STDOUT", "table", ("*",), True),
        ("COPY public.logins (user_id, ip) TO '/tmp/x'", "table", ("ip", "user_id"), True),
        ("COPY (SELECT ip FROM logins) TO STDOUT", "table", ("ip",), True),
        # The widest statement of several wins.
        ("SELECT count(*) FROM logins; SELECT ip FROM logins", "table", ("ip",), False),
    ],
)  # fmt: skip
def test_the_scope_and_columns_of_a_bulk_statement(
    sql: str, scope: str, columns: tuple[str, ...], export: bool
) -> None:
    assert _scope(sql) == BulkScope(scope, columns, export)


def test_a_shape_keeps_names_and_parameter_numbers_but_no_value() -> None:
    trees = parse_statements(
        "SELECT ip /* looking for jane */ FROM logins WHERE ip LIKE '203.0.113.%' "
        "AND at > now() - interval '3 days' AND user_id = $2 AND n IN (1, 2.5, E'x\\'y')",
        "postgres",
    )
    assert trees
    shape, digest = statement_shape(trees, "postgres")
    assert shape == (
        "SELECT ip FROM logins WHERE ip LIKE ? AND at > CURRENT_TIMESTAMP - INTERVAL '? DAYS'"
        " AND user_id = $2 AND n IN (?, ?, ?)"
    )
    assert digest.startswith("sha256:")
    assert len(digest) == 71
    # An opaque command keeps its first word only.
    opaque = parse_statements("CREATE EXTENSION secret_1234", "postgres")
    assert opaque
    assert statement_shape(opaque, "postgres")[0] == "CREATE …"


# Values made only of characters no template below has: if any survives, a digit shows.
VALUE = st.text(alphabet="0123456789.%:-/", min_size=1, max_size=24)
TEMPLATES = (
    "SELECT ip FROM logins WHERE at > '{v}'",
    "SELECT user_id FROM logins WHERE ip LIKE '{v}' OR ip LIKE '{w}'",
    "SELECT count(*) FROM logins WHERE city IN ('{v}', '{w}')",
    "SELECT ip FROM logins WHERE user_id = E'{v}' AND x = $${w}$$",
    "SELECT ip FROM logins WHERE at > now() - interval '{v}'",
    "COPY (SELECT ip FROM logins WHERE ip = '{v}') TO STDOUT",
    "SELECT ip FROM logins WHERE x = X'{h}' AND y = B'{b}'",
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(TEMPLATES),
    VALUE,
    VALUE,
    st.text(alphabet="0123456789abcdef", min_size=2, max_size=8).filter(lambda h: len(h) % 2 == 0),
    st.text(alphabet="01", min_size=1, max_size=8),
)
def test_no_literal_survives_in_a_shape(template: str, v: str, w: str, h: str, b: str) -> None:
    sql = template.format(v=v, w=w, h=h, b=b)
    trees = parse_statements(sql, "postgres")
    if not trees:
        return
    shape, _ = statement_shape(trees, "postgres")
    assert not any(c.isdigit() for c in shape), shape
