"""The front's lexer, splitter, parameter binding, SET/SHOW parsing and PGOPTIONS parsing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as s

from custos.errors import InvalidInput
from custos.wire import statements as st

PLAIN = s.text(alphabet="abcxyz019 _=,().*<>\n", min_size=1, max_size=30).filter(
    lambda t: t.strip() != ""
)
VALUES = s.text(
    alphabet=s.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\\"),
    max_size=40,
)


@given(s.text(max_size=200))
def test_tokens_cover_the_text_exactly(text: str) -> None:
    assert "".join(t.text for t in st.tokens(text)) == text


@given(s.lists(PLAIN, min_size=1, max_size=5))
def test_split_cuts_at_top_level_semicolons(pieces: list[str]) -> None:
    assert st.split(";".join(pieces)) == [p.strip() for p in pieces]


@given(s.lists(VALUES, min_size=1, max_size=4))
def test_semicolons_inside_literals_never_split(values: list[str]) -> None:
    query = "SELECT " + ", ".join(st.literal(v) for v in values) + " FROM t"
    assert st.split(query + ";") == [query]


@given(VALUES)
def test_a_literal_is_one_string_token_that_reads_back(value: str) -> None:
    quoted = st.literal(value)
    (token,) = list(st.tokens(quoted))
    assert token.kind == "string"
    assert token.text[1:-1].replace("''", "'") == value


def test_quoting_kinds_are_each_one_token() -> None:
    text = 'E\'a\\\'b;\' "x""y;" $t$ ; $t$ /* a /* b; */ c; */ -- d;\n$$;$$'
    kinds = [t.kind for t in st.tokens(text) if t.kind != "space"]
    assert kinds == ["string", "ident", "string", "comment", "comment", "string"]


@pytest.mark.parametrize("value", ["a\\b", "nul\x00"])
def test_a_literal_with_a_backslash_or_nul_is_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="NUL or a backslash"):
        st.literal(value)


@given(s.lists(VALUES, min_size=1, max_size=5))
def test_bind_replaces_parameters_outside_quotes_only(values: list[str]) -> None:
    marks = ", ".join(f"${i + 1}" for i in range(len(values)))
    query = f"SELECT {marks}, '$1' /* $1 */ FROM t"
    bound = st.bind(query, [st.literal(v) for v in values])
    strings = [t.text for t in st.tokens(bound) if t.kind == "string"]
    assert strings[:-1] == [st.literal(v) for v in values]
    assert strings[-1] == "'$1'"
    assert "/* $1 */" in bound


def test_bind_refuses_a_missing_parameter() -> None:
    with pytest.raises(InvalidInput, match=r"uses \$2 but 1 parameters"):
        st.bind("SELECT $1, $2", ["1"])


@given(s.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_binary_bigints_become_numbers(number: int) -> None:
    assert st.parameter_sql(struct.pack("!q", number), 20, binary=True) == str(number)


def test_parameters_by_type() -> None:
    assert st.parameter_sql(None, 25, binary=False) == "NULL"
    assert st.parameter_sql(b"o'k", 0, binary=False) == "'o''k'"
    assert st.parameter_sql(b"42", 23, binary=False) == "42"
    assert st.parameter_sql(b"\x01", 16, binary=True) == "TRUE"
    with pytest.raises(InvalidInput, match="does not hold a number"):
        st.parameter_sql(b"1; DROP TABLE t", 23, binary=False)
    with pytest.raises(InvalidInput, match="send it as text"):
        st.parameter_sql(b"\x00\x01", 1700, binary=True)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        st.parameter_sql(b"\xff", 25, binary=False)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SET custos.purpose = 'support'", st.SetParameter("custos.purpose", "support")),
        ("set CUSTOS.TICKET to 'T-9'", st.SetParameter("custos.ticket", "T-9")),
        ("SET SESSION custos.reason = 'it''s R-7'", st.SetParameter("custos.reason", "it's R-7")),
        ("SET extra_float_digits = 3", st.SetParameter("extra_float_digits", "3")),
        ("SET search_path = a, b", st.SetParameter("search_path", "a, b")),
        ("SET TIME ZONE 'UTC'", st.SetParameter("timezone", "UTC")),
        ("SET application_name TO DEFAULT", st.SetParameter("application_name", None)),
        ("RESET custos.ticket", st.SetParameter("custos.ticket", None)),
        ("RESET ALL", st.SetParameter("all", None)),
        ("SHOW server_version", st.Show("server_version")),
        ("show TIME ZONE", st.Show("timezone")),
        ("SHOW ALL", st.Show("all")),
        ("BEGIN", st.Transaction("BEGIN")),
        ("START TRANSACTION READ ONLY", st.Transaction("BEGIN")),
        ("commit", st.Transaction("COMMIT")),
        ("ROLLBACK", st.Transaction("ROLLBACK")),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", st.Transaction("SET")),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", st.Transaction("SET")),
        ("select version()", st.Version()),
        ("SELECT pg_catalog.version()", st.Version()),
        ("DEALLOCATE _pg3_1", st.Deallocate("_pg3_1")),
        ("DEALLOCATE ALL", st.Deallocate(None)),
        ("  -- nothing\n", st.Empty()),
        ("SELECT relname FROM pg_catalog.pg_class", st.Catalog("pg_catalog")),
        ("SELECT * FROM information_schema.tables", st.Catalog("information_schema")),
        ('SELECT * FROM "pg_class"', st.Catalog("pg_class")),
        ("SELECT current_database()", st.Catalog("current_database")),
        (
            "SELECT ip FROM logins WHERE user_id = 'u'",
            st.Guarded("SELECT ip FROM logins WHERE user_id = 'u'"),
        ),
        ("SELECT 'pg_class' FROM t", st.Guarded("SELECT 'pg_class' FROM t")),
        ("BEGIN; DROP TABLE t", st.Guarded("BEGIN; DROP TABLE t")),
    ],
)
def test_classify(sql: str, expected: st.Statement) -> None:
    assert st.classify(sql) == expected


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SET custos.purpose 'x'", "expected = or TO"),
        ("SET custos.purpose =", "expected a value"),
        ("SET custos.purpose = E'x'", "plain 'quoted' string"),
        ("SHOW a b", "unexpected text"),
        ("SET = 'x'", "expected a parameter name"),
    ],
)
def test_malformed_session_statements_say_what(sql: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        st.classify(sql)


def test_settings_custos_cannot_honour_are_refused() -> None:
    assert st.check_setting("client_encoding", "utf-8") == "UTF8"
    with pytest.raises(InvalidInput, match="UTF8 only"):
        st.check_setting("client_encoding", "LATIN1")
    with pytest.raises(InvalidInput, match='unrecognized configuration parameter "work_mem"'):
        st.check_setting("work_mem", "4MB")
    with pytest.raises(InvalidInput, match="cannot be changed"):
        st.check_setting("server_version", "16")


NAMES = s.sampled_from(["custos.purpose", "custos.ticket", "custos.reason", "application_name"])
OPTION_VALUES = s.text(
    alphabet=s.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    min_size=0,
    max_size=20,
)


def _escape(value: str) -> str:
    return "".join("\\" + ch if ch.isspace() or ch == "\\" else ch for ch in value)


@given(s.dictionaries(NAMES, OPTION_VALUES, min_size=1), s.booleans())
def test_options_round_trip(pairs: dict[str, str], long_form: bool) -> None:
    parts = [
        f"--{name}={_escape(value)}" if long_form else f"-c {name}={_escape(value)}"
        for name, value in pairs.items()
    ]
    assert st.parse_options(" ".join(parts)) == pairs


def test_options_refuse_other_switches() -> None:
    with pytest.raises(InvalidInput, match="only -c name=value"):
        st.parse_options("-B 1000")
    with pytest.raises(InvalidInput, match="expected name=value"):
        st.parse_options("-c custos.purpose")
    with pytest.raises(InvalidInput, match="-c needs name=value"):
        st.parse_options("-c")
    with pytest.raises(InvalidInput, match="backslash ends"):
        st.parse_options("-c a=b\\")


@given(s.text(max_size=120))
def test_classify_answers_or_says_what_is_wrong(text: str) -> None:
    """Any text is a statement kind or an InvalidInput naming the part: never a crash."""
    for piece in st.split(text) or [text]:
        problem = ""
        try:
            kind: object = st.classify(piece)
        except InvalidInput as exc:
            kind, problem = None, exc.message
        assert problem or isinstance(
            kind,
            st.Empty
            | st.Transaction
            | st.SetParameter
            | st.Show
            | st.Version
            | st.Deallocate
            | st.Catalog
            | st.Guarded,
        )


@given(s.sampled_from(["SET", "set", "SeT"]), VALUES)
def test_set_reads_back_any_quoted_value(verb: str, value: str) -> None:
    quoted = "'" + value.replace("'", "''") + "'"
    assert st.classify(f"{verb} custos.ticket = {quoted}") == st.SetParameter(
        "custos.ticket", value
    )
