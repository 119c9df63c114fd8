"""PostgreSQL's own parser (pglast, libpg_query) as a second opinion on guarded SQL.

sqlglot is not PostgreSQL: where the two read a text differently (``U&"\\0069p"`` is the
column ``ip`` to PostgreSQL and a bitwise AND to sqlglot), a check done on sqlglot's tree alone
could pass a query PostgreSQL runs otherwise. So the user's text must also be exactly one plain
SELECT to PostgreSQL, and the SQL custos generates is parsed again: every relation it names is
mapped (or a CTE of its own), every function, operator and type on the allow-list.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Final, cast

import sqlglot
from pglast import parser

from custos.errors import SqlRejected, shown_id
from custos.sql.datamap import COLUMN_PLACEHOLDER, SourceMap
from custos.sql.functions import PG_FUNCTIONS, PG_OPERATORS, PG_TYPES

# Node types the generated SQL may contain: anything else (RangeFunction, a sublink kind we
# never generate, XML or JSON expressions…) is refused.
_PG_NODES: Final = frozenset(
    {
        "SelectStmt",
        "ResTarget",
        "ColumnRef",
        "A_Const",
        "A_Expr",
        "A_Star",
        "BoolExpr",
        "NullTest",
        "BooleanTest",
        "CaseExpr",
        "CaseWhen",
        "CoalesceExpr",
        "MinMaxExpr",
        "NullIfExpr",
        "TypeCast",
        "TypeName",
        "FuncCall",
        "RangeVar",
        "RangeSubselect",
        "JoinExpr",
        "Alias",
        "SortBy",
        "WindowDef",
        "WithClause",
        "CommonTableExpr",
        "SubLink",
        "String",
        "Integer",
        "Float",
        "Boolean",
        "A_ArrayExpr",
        "SQLValueFunction",
        "RawStmt",
        "List",
    }
)


def _parse_json(sql: str) -> dict[str, Any]:
    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError as exc:
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        where = " at the end of the query" if "end of input" in str(exc.args[0]) else ""
        if index is not None:
            before = sql[: max(0, index - 1)]
            where = (
                f" at line {before.count(chr(10)) + 1}, column {len(before.split(chr(10))[-1]) + 1}"
            )
        # PostgreSQL's message may quote the query ("near 'x'"): not repeated.
        raise SqlRejected(f"PostgreSQL cannot parse the query{where}") from None
    if not isinstance(tree, dict):
        raise SqlRejected("PostgreSQL cannot parse the query")
    return cast(dict[str, Any], tree)


def _walk(value: Any) -> list[tuple[str, Any]]:
    """Every (key, value) pair of the JSON tree (iteratively: generated SQL can be deep)."""
    pairs: list[tuple[str, Any]] = []
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for name, child in current.items():
                pairs.append((name, child))
                if isinstance(child, (dict, list)):
                    stack.append(child)
        elif isinstance(current, list):
            stack.extend(child for child in current if isinstance(child, (dict, list)))
    return pairs


def _statement(sql: str) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    tree = _parse_json(sql)
    statements = tree.get("stmts", [])
    if len(statements) != 1:
        raise SqlRejected(f"{len(statements)} statements for PostgreSQL: send exactly one SELECT")
    statement: dict[str, Any] = statements[0].get("stmt", {})
    if set(statement) != {"SelectStmt"}:
        raise SqlRejected("only one read-only SELECT is allowed (PostgreSQL reads another kind)")
    pairs = _walk(statement)
    for name, _ in pairs:
        if name == "intoClause":
            raise SqlRejected("SELECT INTO is not allowed")
        if name == "lockingClause":
            raise SqlRejected("FOR UPDATE/SHARE is not allowed")
    return statement, pairs


def check_user_text(sql: str) -> None:
    """The user's text is exactly one SELECT to PostgreSQL, without INTO or a locking clause.
    Raises :class:`SqlRejected` (never repeating the text)."""
    _statement(sql)


def _names(node: dict[str, Any], key: str) -> list[str]:
    return [part["String"]["sval"] for part in node.get(key, []) if "String" in part]


@lru_cache(maxsize=64)
def _template_words(template: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    # As the rewrite will write it: sqlglot regenerates the template.
    expression = template.replace(COLUMN_PLACEHOLDER, "custos_col")
    generated = sqlglot.parse_one(expression, read="postgres").sql(
        dialect="postgres", identify=True
    )
    _, pairs = _statement("SELECT " + generated)
    functions, operators, types = set(), set(), set()
    for name, value in pairs:
        if name == "FuncCall":
            functions.add(_names(value, "funcname")[-1])
        elif name == "A_Expr":
            operators.update(_names(value, "name"))
        elif name in ("TypeName", "typeName"):
            types.add(_names(value, "names")[-1])
    return frozenset(functions), frozenset(operators), frozenset(types)


def _allowed(source: SourceMap) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    functions, operators, types = set(PG_FUNCTIONS), set(PG_OPERATORS), set(PG_TYPES)
    for table in source.tables.values():
        for column in table.columns.values():
            if column.coarse is not None and "postgres" in column.coarse.sql:
                more = _template_words(column.coarse.sql["postgres"])
                functions |= more[0]
                operators |= more[1]
                types |= more[2]
    return frozenset(functions), frozenset(operators), frozenset(types)


def check_generated(sql: str, source: SourceMap) -> None:
    """The SQL custos generated for ``source`` names only mapped relations (or its own CTEs)
    and only allowed functions, operators, types and node kinds, as PostgreSQL reads it.
    Raises :class:`SqlRejected`: a parser differential, to be reported, never run."""
    _, pairs = _statement(sql)
    functions, operators, types = _allowed(source)
    ctes = {value["ctename"] for name, value in pairs if name == "CommonTableExpr"}
    mapped = set(source.tables)
    for name, value in pairs:
        if name == "typeName":  # a TypeName stored without its tag
            name = "TypeName"
        if not isinstance(value, dict) or not name[:1].isupper():
            continue
        if name not in _PG_NODES:
            raise SqlRejected(f"PostgreSQL reads the generated SQL with a {name}: refused")
        if name == "RangeVar":
            relation = value["relname"]
            full = f"{value['schemaname']}.{relation}" if value.get("schemaname") else relation
            if value.get("catalogname") or not (
                full in mapped or (not value.get("schemaname") and relation in ctes)
            ):
                raise SqlRejected(f"PostgreSQL reads an unmapped table {shown_id(full)}")
        elif name == "FuncCall":
            function = _names(value, "funcname")
            if function[-1] not in functions or function[:-1] not in ([], ["pg_catalog"]):
                raise SqlRejected(f"PostgreSQL reads a function {shown_id('.'.join(function))}")
        elif name == "A_Expr":
            for operator in _names(value, "name"):
                if operator not in operators:
                    raise SqlRejected(f"PostgreSQL reads an operator {shown_id(operator)}")
        elif name == "TypeName":
            type_name = _names(value, "names")
            if type_name[-1] not in types or type_name[:-1] not in ([], ["pg_catalog"]):
                raise SqlRejected(f"PostgreSQL reads a type {shown_id('.'.join(type_name))}")
