"""DuckDB's own parser as a second opinion on guarded SQL (what pglast is for PostgreSQL).

``json_serialize_sql`` returns DuckDB's parse tree of a SELECT (and an error for any other
statement). The user's text must be exactly one SELECT to DuckDB too, and the SQL custos
generates must name only mapped tables (or its own CTEs), only allowed functions and
operators, and no table function: a place where sqlglot and DuckDB read a text differently
is refused rather than run.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any, Final, cast

import duckdb
import sqlglot

from custos.errors import SqlRejected, shown_id
from custos.sql.datamap import COLUMN_PLACEHOLDER, SourceMap

#: DuckDB's names (functions and operators, as its parser names them) the generated SQL may
#: use: those the sqlglot allow-list generates. Coarse forms of the map add their own.
DUCKDB_FUNCTIONS: Final = frozenset(
    {
        "count_star",
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "lower",
        "upper",
        "length",
        "substring",
        "left",
        "right",
        "strpos",
        "trim",
        "ltrim",
        "rtrim",
        "concat",
        "replace",
        "split_part",
        "abs",
        "round",
        "floor",
        "ceil",
        "date_trunc",
        "extract",
        "date_part",
        "greatest",
        "least",
        "row_number",
        "rank",
        "dense_rank",
        "lag",
        "lead",
        "current_date",
        "current_timestamp",
        "get_current_timestamp",
        "now",
        "nullif",
        "coalesce",
        "+",
        "-",
        "*",
        "/",
        "%",
        "||",
        "~~",
        "!~~",
        "~~*",
        "!~~*",
    }
)

#: Types a generated cast may name (DuckDB's spelling, upper case).
DUCKDB_TYPES: Final = frozenset(
    {"VARCHAR", "TEXT", "CHAR", "BPCHAR", "STRING", "INTEGER", "INT", "INT4", "BIGINT", "INT8"}
    | {"SMALLINT", "INT2", "DOUBLE", "FLOAT", "FLOAT8", "REAL", "FLOAT4", "DECIMAL", "NUMERIC"}
    | {"BOOLEAN", "BOOL", "DATE", "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"}
)

#: Expression classes of DuckDB's tree the generated SQL may hold.
_CLASSES: Final = frozenset(
    {
        "COLUMN_REF",
        "CONSTANT",
        "FUNCTION",
        "COMPARISON",
        "CONJUNCTION",
        "OPERATOR",
        "CASE",
        "CAST",
        "SUBQUERY",
        "STAR",
        "WINDOW",
        "BETWEEN",
        "TYPE",
    }
)
#: Table references it may hold.
_TABLE_REFS: Final = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY"})

_lock = threading.Lock()
_connection: duckdb.DuckDBPyConnection | None = None


def _serialize(sql: str) -> dict[str, Any]:
    global _connection
    with _lock:
        if _connection is None:
            # In memory, nothing attached: it only parses.
            _connection = duckdb.connect(":memory:")
        row = _connection.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else None
    if not isinstance(tree, dict) or tree.get("error"):
        # DuckDB's message may quote the query: not repeated.
        if isinstance(tree, dict) and tree.get("error_type") == "parser":
            position = str(tree.get("position", ""))
            where = ""
            if position.isdigit():
                before = sql[: int(position)]
                line = before.count("\n") + 1
                where = f" at line {line}, column {len(before.rsplit(chr(10), 1)[-1]) + 1}"
            raise SqlRejected(f"DuckDB cannot parse the query{where}")
        raise SqlRejected("only one read-only SELECT is allowed (DuckDB reads another kind)")
    statements = tree.get("statements", [])
    if len(statements) != 1:
        raise SqlRejected(f"{len(statements)} statements for DuckDB: send exactly one SELECT")
    return cast(dict[str, Any], statements[0])


def _dicts(value: Any) -> list[dict[str, Any]]:
    """Every object of the JSON tree (iteratively)."""
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found.append(current)
            stack.extend(v for v in current.values() if isinstance(v, (dict, list)))
        elif isinstance(current, list):
            stack.extend(v for v in current if isinstance(v, (dict, list)))
    return found


def check_user_text(sql: str) -> None:
    """The user's text is exactly one SELECT to DuckDB. Raises :class:`SqlRejected`."""
    _serialize(sql)


@lru_cache(maxsize=64)
def _template_words(template: str) -> tuple[frozenset[str], frozenset[str]]:
    # As the rewrite will write it: sqlglot regenerates the template (string_split becomes
    # str_split), and that is what DuckDB will read.
    expression = template.replace(COLUMN_PLACEHOLDER, "custos_col")
    generated = sqlglot.parse_one(expression, read="duckdb").sql(dialect="duckdb", identify=True)
    nodes = _dicts(_serialize("SELECT " + generated))
    functions = {str(n["function_name"]) for n in nodes if n.get("class") == "FUNCTION"}
    types = {str(n["type_name"]).upper() for n in nodes if n.get("class") == "TYPE"}
    return frozenset(functions), frozenset(types)


def _allowed(source: SourceMap) -> tuple[frozenset[str], frozenset[str]]:
    functions, types = set(DUCKDB_FUNCTIONS), set(DUCKDB_TYPES)
    for table in source.tables.values():
        for column in table.columns.values():
            if column.coarse is not None and "duckdb" in column.coarse.sql:
                more = _template_words(column.coarse.sql["duckdb"])
                functions |= more[0]
                types |= more[1]
    return frozenset(functions), frozenset(types)


def check_generated(sql: str, source: SourceMap) -> None:
    """The SQL custos generated for ``source`` names only mapped tables (or its own CTEs),
    allowed functions and no table function, as DuckDB reads it. Raises :class:`SqlRejected`:
    a parser differential, to be reported, never run."""
    nodes = _dicts(_serialize(sql))
    functions, types = _allowed(source)
    ctes = {
        str(entry["key"])
        for node in nodes
        if isinstance(node.get("cte_map"), dict)
        for entry in node["cte_map"].get("map", [])
    }
    mapped = set(source.tables)
    for node in nodes:
        kind = node.get("class")
        if kind is not None:
            if kind not in _CLASSES:
                raise SqlRejected(f"DuckDB reads the generated SQL with a {kind}: refused")
            if kind == "TYPE":
                type_name = str(node.get("type_name")).upper()
                if type_name not in types or node.get("schema") or node.get("catalog"):
                    raise SqlRejected(f"DuckDB reads a type {shown_id(type_name)}")
            if kind == "FUNCTION":
                name = str(node.get("function_name"))
                if name not in functions or node.get("schema") or node.get("catalog"):
                    raise SqlRejected(f"DuckDB reads a function {shown_id(name)}")
            continue
        if "query_location" in node and "type" in node:
            if node["type"] not in _TABLE_REFS:
                raise SqlRejected(f"DuckDB reads the generated SQL with a {node['type']}")
            if node["type"] == "BASE_TABLE":
                schema, table = node.get("schema_name") or "", str(node.get("table_name"))
                full = f"{schema}.{table}" if schema else table
                if node.get("catalog_name") or not (
                    full in mapped or (not schema and table in ctes)
                ):
                    raise SqlRejected(f"DuckDB reads an unmapped table {shown_id(full)}")
