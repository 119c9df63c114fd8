"""One read-only SELECT, fully understood: what it reads, whom it pins, what it searches.

:func:`analyze` parses a query with sqlglot (after the engine's own parser, pglast for
PostgreSQL and DuckDB's ``json_serialize_sql``, read it as one SELECT), refuses anything but
one SELECT built from an allow-list of node types, resolves every table against the data map,
qualifies every column (stars expanded from the map), traces every output column and every
predicate to the mapped columns it depends on, finds the subjects the query pins and tells an
individual query from an aggregate one.
:meth:`Analysis.rewrite` then generates the SQL that runs, from the tree (never from the
user's text), with each category column replaced by its coarse form where asked.

Conservative by design: whatever the analysis cannot follow is refused with a reason that says
what to change. See ``docs/design/sql.md`` for the threat model and the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify_columns import qualify_columns, validate_qualify_columns
from sqlglot.optimizer.qualify_tables import qualify_tables
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import ensure_schema

from custos.errors import QueryRefused, SqlRejected, shown_id
from custos.sql import duckcheck, pgcheck
from custos.sql.datamap import COLUMN_PLACEHOLDER, ColumnMap, Dialect, SourceMap, TableMap
from custos.sql.functions import ALLOWED_NODES, CAST_TYPES

#: Longer query texts are refused before parsing: a query is written by a person.
MAX_SQL_CHARS: Final = 64 * 1024
#: The output column an aggregate query gets, counting the subjects of each group.
K_COLUMN: Final = "custos_k"
#: The prefix of the synthetic names mapped tables get while a query is analysed (one schema
#: level for sqlglot whatever the map's names). A map table may carry such a name too: each
#: table node is renamed exactly once, after its own name was looked up; a CTE may not.
_TABLE_PREFIX: Final = "custos_t"
_META: Final = "custos"
# Clauses whose columns decide which rows come back or in what order, rather than what a row
# holds: a category column here is searched.
_SEARCH_KEYS: Final = frozenset(
    {"where", "on", "group", "having", "order", "qualify", "partition_by", "limit", "offset"}
)

_UNRESOLVED: Final = re.compile(
    r"Column '(?P<name>.*)' could not be resolved.*?Line: (?P<line>\d+), Col: (?P<col>\d+)",
    re.DOTALL,
)

BaseColumn = tuple[str, str]  # (synthetic table name, column name)


@dataclass(frozen=True)
class OutputColumn:
    """One column of the result: the categories its value depends on and whether it depends
    on a subject column."""

    name: str
    categories: frozenset[str]
    subject: bool


@dataclass(frozen=True)
class Analysis:
    """The understood query. ``subjects`` empty means aggregate (``aggregate`` True)."""

    source: SourceMap
    outputs: tuple[OutputColumn, ...]
    subjects: frozenset[str]
    aggregate: bool
    reads: frozenset[str]
    searches: frozenset[str]
    _tree: exp.Expr = field(repr=False, compare=False)
    _tables: Mapping[str, TableMap] = field(repr=False, compare=False)
    _k_tables: tuple[tuple[str, str], ...] = field(repr=False, compare=False, default=())
    #: Generated SQL by precision: a tool repeating a query pays for generating it once.
    _rewritten: dict[tuple[tuple[str, str], ...], str] = field(
        repr=False, compare=False, default_factory=dict
    )

    @property
    def categories(self) -> frozenset[str]:
        """Every category the query touches (read or searched): the keys ``rewrite`` needs."""
        return self.reads | self.searches

    def rewrite(self, precision: Mapping[str, str]) -> str:
        """The SQL to run, in the source's dialect, generated from the analysed tree.

        Every reference to a column of category C becomes C's coarse form when
        ``precision[C] == "coarse"`` (always, in an aggregate query); an aggregate query gets a
        last output column ``custos_k`` counting the distinct subjects of each group. Raises
        ``KeyError`` when ``precision`` lacks a category the query touches and
        :class:`SqlRejected` when the engine's own parser reads the generated SQL otherwise
        than the analysis did (an unmapped table, a function off the list): never run that.
        """
        for category in self.categories:
            if precision[category] not in ("coarse", "precise"):
                raise KeyError(category)
        key = tuple(sorted((c, precision[c]) for c in self.categories))
        known = self._rewritten.get(key)
        if known is not None:
            return known
        sql = self._generate(precision)
        self._rewritten[key] = sql
        return sql

    def _generate(self, precision: Mapping[str, str]) -> str:
        dialect = self.source.dialect
        tree = self._tree.copy()
        for column in list(tree.find_all(exp.Column)):
            origin = column.meta.get(_META)
            if origin is None:
                continue
            mapped = self._tables[origin[0]].columns[origin[1]]
            if mapped.category is None or mapped.coarse is None:
                continue
            if self.aggregate or precision[mapped.category] == "coarse":
                column.replace(_coarse_expression(mapped, column, dialect))
        for table in list(tree.find_all(exp.Table)):
            key = table.meta.get(_META)
            if key is not None:
                table.set("this", exp.to_identifier(key.split(".")[-1]))
                if "." in key:
                    table.set("db", exp.to_identifier(key.split(".")[0]))
        if self.aggregate and isinstance(tree, exp.Select):
            counts = [
                exp.Count(
                    this=exp.Distinct(expressions=[exp.column(subject, table=alias, quoted=True)])
                )
                for alias, subject in self._k_tables
            ]
            k: exp.Expr = (
                counts[0] if len(counts) == 1 else exp.Least(this=counts[0], expressions=counts[1:])
            )
            tree.select(exp.alias_(k, K_COLUMN), copy=False)
        sql = tree.sql(dialect=dialect, comments=False, identify=True)
        if dialect == "postgres":
            pgcheck.check_generated(sql, self.source)
        else:
            duckcheck.check_generated(sql, self.source)
        return sql


@lru_cache(maxsize=256)
def _parsed_template(template: str, dialect: Dialect) -> exp.Expr:
    return sqlglot.parse_one(
        template.replace(COLUMN_PLACEHOLDER, "custos_coarse_col"), read=dialect
    )


def _coarse_expression(mapped: ColumnMap, column: exp.Column, dialect: Dialect) -> exp.Expr:
    assert mapped.coarse is not None
    expression = _parsed_template(mapped.coarse.template(dialect), dialect).copy()
    reference = column.copy()
    reference.meta.pop(_META, None)
    for placeholder in list(expression.find_all(exp.Column)):
        if placeholder.name == "custos_coarse_col":
            placeholder.replace(reference.copy())
    return exp.Paren(this=expression)


# --- the steps ---------------------------------------------------------------------------


def _where(node: exp.Expr) -> str:
    """``line L, column C`` of the first token of ``node`` sqlglot kept a position for."""
    for candidate in node.walk():
        line = candidate.meta_get("line")
        if line is not None:
            column = candidate.meta_get("col", 1) - len(candidate.name) + 1
            return f"line {line}, column {max(1, column)}"
    parent = node.parent
    while parent is not None:
        line = parent.meta_get("line")
        if line is not None:
            return f"line {line}"
        parent = parent.parent
    return "somewhere in the query"


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return f"function {shown_id(node.name)}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name().lower()}"
    named: dict[type[exp.Expr], str] = {
        exp.Into: "SELECT INTO",
        exp.Lock: "a locking clause (FOR UPDATE/SHARE)",
        exp.Placeholder: "a parameter placeholder",
        exp.Parameter: "a parameter",
        exp.ByteString: "an E'' or byte string",
        exp.RawString: "a dollar-quoted or raw string",
        exp.BitwiseAnd: "the & operator (or a U&'' literal)",
        exp.Dot: "a field of a row or composite value",
        exp.TableColumn: "a whole row (a table name used as a column)",
        exp.Pivot: "PIVOT",
        exp.TableSample: "TABLESAMPLE",
        exp.Values: "VALUES",
        exp.Fetch: "FETCH FIRST (write LIMIT)",
    }
    return named.get(type(node), f"{type(node).__name__} (not on the allow-list)")


def _parse(sql: str, dialect: Dialect) -> exp.Expr:
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRejected(f"the query is longer than {MAX_SQL_CHARS} characters")
    try:
        statements = sqlglot.parse(sql, read=dialect)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f"line {first.get('line', '?')}, column {first.get('col', '?')}"
        raise SqlRejected(f"cannot parse the query at {where}") from None
    except (TokenError, SqlglotError):
        raise SqlRejected("cannot parse the query (an unterminated string or comment?)") from None
    except RecursionError:
        raise SqlRejected("the query is nested too deeply") from None
    except Exception:  # noqa: BLE001 - a parser bug must refuse the query, not crash
        raise SqlRejected("cannot parse the query") from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise SqlRejected(
            f"{len(statements)} statements: send exactly one SELECT"
            if statements
            else "no statement: send one SELECT"
        )
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise SqlRejected(
            f"only one read-only SELECT is allowed, not {(tree.key if tree else '').upper()}"
            " (no DML, DDL, COPY, SET or other statement)"
        )
    return tree


def _check_allowed(tree: exp.Expr) -> None:
    for node in tree.walk():
        if type(node) not in ALLOWED_NODES:
            raise SqlRejected(f"{_describe(node)} is not allowed ({_where(node)})")
        if isinstance(node, exp.Select):
            if node.args.get("into"):
                raise SqlRejected(f"SELECT INTO is not allowed ({_where(node)})")
            if node.args.get("locks"):
                raise SqlRejected(f"FOR UPDATE/SHARE is not allowed ({_where(node)})")
            distinct = node.args.get("distinct")
            if distinct is not None and distinct.args.get("on"):
                raise SqlRejected(f"DISTINCT ON is not allowed ({_where(node)})")
        elif isinstance(node, exp.With) and node.args.get("recursive"):
            raise SqlRejected("WITH RECURSIVE is not allowed: write the query without recursion")
        elif isinstance(node, exp.Cast):
            to = node.args.get("to")
            if not isinstance(to, exp.DataType) or to.this not in CAST_TYPES:
                shown = shown_id(to.sql()) if isinstance(to, exp.DataType) else "that type"
                raise SqlRejected(
                    f"a cast to {shown} is"
                    f" not allowed ({_where(node)}); cast to text, numbers, booleans, dates"
                    " or timestamps"
                )
        elif isinstance(node, exp.Join):
            if node.args.get("using") or node.args.get("method") or node.args.get("global_"):
                raise SqlRejected(
                    f"JOIN … USING and NATURAL joins are not allowed ({_where(node)});"
                    " write JOIN … ON a.col = b.col"
                )
            kind = (node.args.get("kind") or "").upper()
            if kind not in ("", "INNER", "OUTER", "CROSS"):
                raise SqlRejected(f"{kind} joins are not allowed ({_where(node)})")
        elif isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise SqlRejected(
                    f"table functions are not allowed ({_where(node)}); name a mapped table"
                )
            if node.args.get("catalog"):
                raise SqlRejected(f"a table names a database or catalog ({_where(node)})")
        elif isinstance(node, exp.Literal) and (
            isinstance(node.parent, exp.Group)
            or (isinstance(node.parent, exp.Ordered) and node.arg_key == "this")
        ):
            raise SqlRejected(
                f"ORDER BY or GROUP BY by position ({_where(node)}): name the column instead"
            )
        elif isinstance(node, (exp.Limit, exp.Offset)):
            value = node.expression
            if not (isinstance(value, exp.Literal) and value.is_int):
                raise SqlRejected(f"LIMIT and OFFSET take a whole number ({_where(node)})")
        elif isinstance(node, exp.Lateral) and not isinstance(node.this, exp.Subquery):
            raise SqlRejected(f"LATERAL takes a subquery ({_where(node)})")
        elif isinstance(node, exp.Window) and node.args.get("spec") is not None:
            raise SqlRejected(f"window frames (ROWS/RANGE) are not allowed ({_where(node)})")


def _cte_names(tree: exp.Expr) -> set[str]:
    return {cte.alias_or_name for cte in tree.find_all(exp.CTE)}


def _resolve_tables(tree: exp.Expr, source: SourceMap) -> dict[str, TableMap]:
    """Rename every base table to a synthetic name (``custos_tN``) and give it an alias;
    returns synthetic name -> table. Raises SqlRejected for an unmapped table."""
    by_bare: dict[str, list[str]] = {}
    for key in source.tables:
        by_bare.setdefault(key.split(".")[-1], []).append(key)
    ctes = _cte_names(tree)
    for name in ctes:
        if name in by_bare or name.startswith(_TABLE_PREFIX):
            raise SqlRejected(f"the CTE {shown_id(name)} has a mapped table's name: rename it")
    base: dict[int, exp.Table] = {}
    for scope in traverse_scope(tree):
        for value in scope.sources.values():
            if isinstance(value, exp.Table):
                base[id(value)] = value
    synthetic: dict[str, TableMap] = {}
    names: dict[str, str] = {}
    for table in list(tree.find_all(exp.Table)):
        if id(table) not in base:
            if table.args.get("db") or table.name not in ctes:
                raise SqlRejected(f"table {shown_id(table.name)} is not understood here")
            continue
        db = table.args.get("db")
        bare = table.name
        if db is not None:
            key = f"{db.name}.{bare}"
            if key not in source.tables:
                raise SqlRejected(
                    f"table {shown_id(key)} is not in the data map of source"
                    f" {source.name} ({_where(table)})"
                )
        else:
            keys = by_bare.get(bare, [])
            if len(keys) != 1:
                raise SqlRejected(
                    f"table {shown_id(bare)} is not in the data map of source"
                    f" {source.name} ({_where(table)})"
                    if not keys
                    else f"table {shown_id(bare)} is ambiguous: name its schema"
                )
            key = keys[0]
        if key not in names:
            names[key] = f"{_TABLE_PREFIX}{len(names)}"
            synthetic[names[key]] = source.tables[key]
        if not table.alias:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(bare)))
        table.set("this", exp.to_identifier(names[key]))
        table.set("db", None)
        table.meta[_META] = key
    return synthetic


def _qualify(tree: exp.Expr, tables: Mapping[str, TableMap], dialect: Dialect) -> exp.Expr:
    schema: dict[str, object] = {
        name: dict.fromkeys(table.columns, "TEXT") for name, table in tables.items()
    }
    try:
        # qualify()'s steps less the two already done (normalizing) or left to the
        # generator (quoting): a third of the time of an analysis.
        tree = qualify_tables(tree, dialect=dialect)
        tree = qualify_columns(tree, ensure_schema(schema, dialect=dialect))
        return validate_qualify_columns(tree)
    except SqlglotError as exc:
        # Rebuilt from the parts, never passed on: an identifier may be anything quoted.
        found = _UNRESOLVED.search(str(exc))
        if found is None:
            raise SqlRejected(
                "a column is not in the data map, is ambiguous or cannot be resolved"
            ) from None
        raise SqlRejected(
            f"column {shown_id(found['name'])} is not in the data map or is ambiguous"
            f" (line {found['line']}, column {found['col']}): name a mapped column, with its"
            " table's alias when several tables have it"
        ) from None
    except RecursionError:
        raise SqlRejected("the query is nested too deeply") from None
    except Exception:  # noqa: BLE001 - an optimizer bug must refuse the query, not crash
        raise SqlRejected("the columns of the query cannot be resolved") from None


class _Tracer:
    """Column lineage over sqlglot's scopes: which mapped columns a value depends on."""

    def __init__(self, tree: exp.Expr, tables: Mapping[str, TableMap]) -> None:
        self.tables = tables
        self.scopes = traverse_scope(tree)
        self.owner: dict[int, Scope] = {}
        for scope in self.scopes:  # innermost first: a column belongs to its innermost scope
            for column in scope.columns:
                self.owner.setdefault(id(column), scope)
        self.memo: dict[tuple[int, str], frozenset[BaseColumn]] = {}
        self.root = self.scopes[-1]

    def source_of(self, column: exp.Column) -> tuple[Scope, exp.Table | Scope] | None:
        scope: Scope | None = self.owner.get(id(column))
        while scope is not None:
            found = scope.sources.get(column.table) or scope.lateral_sources.get(column.table)
            if found is not None:
                return scope, found
            scope = scope.parent
        return None

    def column(self, column: exp.Column) -> frozenset[BaseColumn]:
        if not column.table:
            return self._alias_reference(column)
        found = self.source_of(column)
        if found is None:
            raise SqlRejected(f"cannot trace column {shown_id(column.name)} ({_where(column)})")
        _, source = found
        if isinstance(source, exp.Table):
            key = source.name
            if key not in self.tables:
                raise SqlRejected(f"cannot trace column {shown_id(column.name)}")
            origin = (key, column.name)
            column.meta[_META] = (self.tables[key].name, column.name)
            return frozenset({origin})
        return self.output(source, column.name)

    def _alias_reference(self, column: exp.Column) -> frozenset[BaseColumn]:
        # ORDER BY may name an output column by itself; anything else unqualified is not
        # understood. Only a bare name: PostgreSQL resolves a name inside an ORDER BY
        # expression against the tables, not the output, and the rewrite must not differ.
        if not (isinstance(column.parent, exp.Ordered) and column.arg_key == "this"):
            raise SqlRejected(f"cannot resolve column {shown_id(column.name)} ({_where(column)})")
        owner = column.parent.parent.parent if column.parent.parent else None
        if isinstance(owner, exp.SetOperation):
            names = owner.named_selects
            if column.name in names:
                scope = self._scope_of(owner)
                return self.output(scope, column.name)
        select: exp.Expr | None = column.parent
        while select is not None and not isinstance(select, exp.Select):
            select = select.parent
        if isinstance(select, exp.Select) and _in_search_position(column, stop=select):
            for projection in select.expressions:
                if projection.alias_or_name == column.name:
                    return self.expression(projection)
        raise SqlRejected(f"cannot trace column {shown_id(column.name)} ({_where(column)})")

    def output(self, scope: Scope, name: str) -> frozenset[BaseColumn]:
        key = (id(scope), name)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = frozenset()  # a cycle adds nothing; WITH RECURSIVE is refused anyway
        expression = scope.expression
        if isinstance(expression, exp.SetOperation):
            result = self._set_output(expression, scope, name)
        elif isinstance(expression, (exp.Lateral, exp.Subquery)):
            inner = expression.this
            if isinstance(inner, exp.Subquery):
                inner = inner.this
            result = self.output(self._scope_of(inner), name)
        elif isinstance(expression, exp.Select):
            projections = [p for p in expression.expressions if p.alias_or_name == name]
            if len(projections) != 1:
                raise SqlRejected(f"cannot trace column {shown_id(name)} of a subquery")
            result = self.expression(projections[0])
        else:
            raise SqlRejected("cannot trace a column of this kind of subquery")
        self.memo[key] = result
        return result

    def _set_output(
        self, expression: exp.SetOperation, scope: Scope, name: str
    ) -> frozenset[BaseColumn]:
        names = expression.named_selects
        if name not in names:
            raise SqlRejected(f"cannot trace column {shown_id(name)} of a set operation")
        position = names.index(name)
        result: set[BaseColumn] = set()
        for branch in self._branches(expression):
            branch_scope = self._scope_of(branch)
            branch_names = branch.named_selects
            if position >= len(branch_names):
                raise SqlRejected("the branches of a set operation differ in width")
            result |= self.output(branch_scope, branch_names[position])
        return frozenset(result)

    def _branches(self, expression: exp.Expr) -> Iterator[exp.Query]:
        if isinstance(expression, exp.SetOperation):
            yield from self._branches(expression.this)
            yield from self._branches(expression.expression)
        elif isinstance(expression, exp.Subquery):
            yield from self._branches(expression.this)
        elif isinstance(expression, exp.Query):
            yield expression
        else:
            raise SqlRejected("a set operation branch is not a query")

    def _scope_of(self, expression: exp.Expr) -> Scope:
        for scope in self.scopes:
            if scope.expression is expression:
                return scope
        raise SqlRejected("cannot trace a branch of a set operation")

    def expression(self, node: exp.Expr) -> frozenset[BaseColumn]:
        """The mapped columns the value of ``node`` depends on. Columns in the predicates of
        a subquery inside it decide which rows it sees, not what it yields: they count as
        searched (see analyze), not here."""
        result: set[BaseColumn] = set()
        for column in node.find_all(exp.Column):
            if not _in_search_position(column, stop=node):
                result |= self.column(column)
        return frozenset(result)


def _conjuncts(node: exp.Expr | None) -> list[exp.Expr]:
    if node is None:
        return []
    if isinstance(node, (exp.Paren, exp.Where)):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _literal_id(node: exp.Expr) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal) and (node.is_string or node.is_int):
        return str(node.this)
    return None


@dataclass
class _Pins:
    """What the pinning conjuncts say: literal pins and subject equalities, per table node."""

    literal: dict[int, set[str]] = field(default_factory=dict)
    # (table to pin, table it is pinned through): the first's subjects are the second's
    edges: list[tuple[int, int]] = field(default_factory=list)
    uses: set[int] = field(default_factory=set)  # ids of subject Column nodes used to pin/join
    literal_uses: set[int] = field(default_factory=set)  # those compared with literal ids


def _subject_table(tracer: _Tracer, node: exp.Expr) -> tuple[Scope, exp.Table] | None:
    """The base table whose subject column ``node`` is (a bare column), else None."""
    if not isinstance(node, exp.Column) or not node.table:
        return None
    found = tracer.source_of(node)
    if found is None or not isinstance(found[1], exp.Table):
        return None
    table = tracer.tables.get(found[1].name)
    if table is None or node.name != table.subject:
        return None
    return found[0], found[1]


def _only_subjects(tracer: _Tracer, node: exp.Expr) -> bool:
    """Whether ``node`` is a column whose value is a subject column's, and only that."""
    if not isinstance(node, exp.Column) or not node.table:
        return False
    origins = tracer.column(node)
    return bool(origins) and all(tracer.tables[t].columns[c].is_subject for t, c in origins)


def _collect_pins(tracer: _Tracer) -> _Pins:
    pins = _Pins()
    for scope in tracer.scopes:
        select = scope.expression
        if not isinstance(select, exp.Select):
            continue
        # (conjuncts, ids of the tables they may pin: None = any table of this scope)
        groups: list[tuple[list[exp.Expr], set[int] | None]] = [
            (_conjuncts(select.args.get("where")), None)
        ]
        for join in select.args.get("joins") or []:
            side = (join.args.get("side") or "").upper()
            on = _conjuncts(join.args.get("on"))
            if side == "":
                groups.append((on, None))
            elif side == "LEFT" and isinstance(join.this, exp.Table):
                groups.append((on, {id(join.this)}))
            else:
                groups.append((on, set()))  # pins nothing, but its equalities are joins
        for conjuncts, may_pin in groups:
            for conjunct in conjuncts:
                _pin_conjunct(tracer, scope, conjunct, may_pin, pins)
    return pins


def _pin_conjunct(
    tracer: _Tracer, scope: Scope, conjunct: exp.Expr, may_pin: set[int] | None, pins: _Pins
) -> None:
    def pinnable(found: tuple[Scope, exp.Table] | None) -> bool:
        return (
            found is not None and found[0] is scope and (may_pin is None or id(found[1]) in may_pin)
        )

    if isinstance(conjunct, exp.EQ):
        left, right = conjunct.this, conjunct.expression
        left_t, right_t = _subject_table(tracer, left), _subject_table(tracer, right)
        if left_t and right_t:
            pins.uses.update({id(left), id(right)})
            if pinnable(left_t):
                pins.edges.append((id(left_t[1]), id(right_t[1])))
            if pinnable(right_t):
                pins.edges.append((id(right_t[1]), id(left_t[1])))
            return
        if _only_subjects(tracer, left) and _only_subjects(tracer, right):
            # A join of derived tables (CTEs, subqueries) on subject columns: a join, not a
            # search; it pins nothing (their tables were pinned, or not, where they are read).
            pins.uses.update({id(left), id(right)})
            return
        for column_t, column, other in ((left_t, left, right), (right_t, right, left)):
            value = _literal_id(other)
            if column_t is not None and value is not None:
                pins.uses.add(id(column))
                pins.literal_uses.add(id(column))
                if pinnable(column_t):
                    pins.literal.setdefault(id(column_t[1]), set()).add(value)
                return
    elif isinstance(conjunct, exp.In) and not conjunct.args.get("query"):
        found = _subject_table(tracer, conjunct.this)
        values = [_literal_id(v) for v in conjunct.expressions]
        if found is not None and values and all(v is not None for v in values):
            pins.uses.add(id(conjunct.this))
            pins.literal_uses.add(id(conjunct.this))
            if pinnable(found):
                pins.literal.setdefault(id(found[1]), set()).update(
                    v for v in values if v is not None
                )


def _pinned(pins: _Pins) -> dict[int, set[str]]:
    pinned = {table: set(values) for table, values in pins.literal.items()}
    changed = True
    while changed:
        changed = False
        for target, through in pins.edges:
            if through in pinned and target not in pinned:
                pinned[target] = set(pinned[through])
                changed = True
    return pinned


def _in_search_position(node: exp.Expr, stop: exp.Expr | None = None) -> bool:
    """Whether ``node`` stands in a clause that filters, groups or orders rows (below
    ``stop``, or anywhere up to the root)."""
    while node.parent is not None and node is not stop:
        if node.arg_key in _SEARCH_KEYS:
            return True
        node = node.parent
    return False


def _categories(tables: Mapping[str, TableMap], columns: frozenset[BaseColumn]) -> set[str]:
    found: set[str] = set()
    for table_key, name in columns:
        category = tables[table_key].columns[name].category
        if category is not None:
            found.add(category)
    return found


def _has_subject(tables: Mapping[str, TableMap], columns: frozenset[BaseColumn]) -> bool:
    return any(tables[t].columns[c].is_subject for t, c in columns)


def _outputs(tracer: _Tracer, tree: exp.Expr) -> list[tuple[str, frozenset[BaseColumn]]]:
    root = tracer.root
    if isinstance(tree, exp.SetOperation):
        return [(name, tracer.output(root, name)) for name in tree.named_selects]
    assert isinstance(tree, exp.Select)
    return [(p.alias_or_name, tracer.expression(p)) for p in tree.expressions]


def analyze(sql: str, source: SourceMap) -> Analysis:
    """Understand ``sql``, one SELECT on ``source``.

    Raises :class:`SqlRejected` when it is not one read-only SELECT of allowed parts over
    mapped tables and columns, and :class:`QueryRefused` when its shape is refused: some of
    its tables pinned and others not, a subject column searched, an aggregate query using a
    category or subject column other than as a GROUP BY key. Neither repeats a literal.
    """
    try:
        return _analyze(sql, source)
    except RecursionError:
        raise SqlRejected("the query is nested too deeply") from None


def _analyze(sql: str, source: SourceMap) -> Analysis:
    dialect = source.dialect
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRejected(f"the query is longer than {MAX_SQL_CHARS} characters")
    # The engine's own parser first: what it would run must be one SELECT to it too.
    if dialect == "postgres":
        pgcheck.check_user_text(sql)
    else:
        duckcheck.check_user_text(sql)
    tree = _parse(sql, dialect)
    _check_allowed(tree)
    try:
        tree = normalize_identifiers(tree, dialect=dialect)
        tables = _resolve_tables(tree, source)
    except RecursionError:
        raise SqlRejected("the query is nested too deeply") from None
    if not tables:
        raise SqlRejected(f"the query names no table of the data map of source {source.name}")
    tree = _qualify(tree, tables, dialect)
    # Qualifying may turn a reference into something else (a bare table name into a
    # whole-row TableColumn): the tree that runs passes the allow-list again.
    for node in tree.walk():
        if type(node) not in ALLOWED_NODES:
            raise SqlRejected(
                f"{_describe(node)} is not allowed ({_where(node)}); name each column"
            )
    if any(not isinstance(s.parent, exp.Count) for s in tree.find_all(exp.Star)):
        raise SqlRejected("a * could not be expanded from the data map")
    tracer = _Tracer(tree, tables)
    outputs = _outputs(tracer, tree)
    pins = _collect_pins(tracer)
    pinned = _pinned(pins)
    base = [
        value
        for scope in tracer.scopes
        for value in scope.sources.values()
        if isinstance(value, exp.Table)
    ]
    unique = {id(t): t for t in base}
    unpinned = [t for i, t in unique.items() if i not in pinned]
    if unpinned and len(unpinned) < len(unique):
        names = ", ".join(sorted({f"{tables[t.name].name} AS {t.alias_or_name}" for t in unpinned}))
        raise QueryRefused(
            f"the subjects of {names} are not pinned: add WHERE alias.subject_column = '…'"
            " (or IN (…)) in its own SELECT, or join it ON its subject column to a pinned table"
        )
    # Every column, once: where it stands decides whether it is read or searched. A column
    # the scopes do not account for cannot be traced and is refused.
    searched: set[str] = set()
    for column in list(tree.find_all(exp.Column)):
        if isinstance(column.this, exp.Star):
            continue
        origins = tracer.column(column)
        if id(column) in pins.uses:
            continue
        if not _in_search_position(column):
            continue
        if _has_subject(tables, origins):
            raise QueryRefused(
                "a subject column is used to search, group or order"
                f" ({_where(column)}): use it only as the pin (= or IN with literal ids),"
                " to join on another subject column, or in the output"
            )
        searched |= _categories(tables, origins)
    output_columns = tuple(
        OutputColumn(name, frozenset(_categories(tables, deps)), _has_subject(tables, deps))
        for name, deps in outputs
    )
    reads = frozenset(c for o in output_columns for c in o.categories)
    if unpinned:
        k_tables = _check_aggregate(tree, tracer, tables, pins)
        return Analysis(
            source,
            output_columns,
            frozenset(),
            True,
            reads,
            frozenset(),
            tree,
            {t.name: t for t in source.tables.values()},
            k_tables,
        )
    subjects = frozenset(s for values in pinned.values() for s in values)
    return Analysis(
        source,
        output_columns,
        subjects,
        False,
        reads,
        frozenset(searched),
        tree,
        {t.name: t for t in source.tables.values()},
    )


def _check_aggregate(
    tree: exp.Expr, tracer: _Tracer, tables: Mapping[str, TableMap], pins: _Pins
) -> tuple[tuple[str, str], ...]:
    """Refuse an unpinned query that is not a plain aggregate; returns (alias, subject
    column) of each table, for custos_k."""
    change = (
        "a query that pins no subject may only count: one SELECT over mapped tables with"
        " aggregates (COUNT, SUM, AVG, MIN, MAX) of plain columns and GROUP BY keys"
    )
    if not isinstance(tree, exp.Select):
        raise QueryRefused(f"{change}; no UNION, INTERSECT or EXCEPT")
    if tree.find(exp.Subquery, exp.CTE, exp.Exists, exp.Lateral, exp.Window):
        raise QueryRefused(f"{change}; no subqueries, CTEs, LATERAL or window functions")
    if tree.args.get("distinct") is not None:
        raise QueryRefused(f"{change}; no SELECT DISTINCT")
    group = tree.args.get("group")
    keys = list(group.expressions) if group else []
    key_sql = {k.sql() for k in keys}
    if not keys and not any(p.find(exp.AggFunc) for p in tree.expressions):
        raise QueryRefused(f"{change}; this query has neither")

    def kind(column: exp.Column) -> str:
        origins = tracer.column(column)
        if _has_subject(tables, origins):
            return "subject"
        return "category" if _categories(tables, origins) else "plain"

    for key in keys:
        for column in key.find_all(exp.Column):
            if kind(column) == "subject":
                raise QueryRefused(
                    f"GROUP BY a subject column makes groups of one person ({_where(column)})"
                )

    def check_value(node: exp.Expr, clause: str) -> None:
        if node.sql() in key_sql:
            return
        if isinstance(node, exp.AggFunc):
            for column in node.find_all(exp.Column):
                what = kind(column)
                if what == "category" or (what == "subject" and not isinstance(node, exp.Count)):
                    raise QueryRefused(
                        f"{clause}: an aggregate of a personal column ({_where(column)});"
                        " count rows or aggregate plain columns, or GROUP BY the column"
                    )
            return
        if isinstance(node, exp.Column):
            if kind(node) != "plain":
                raise QueryRefused(
                    f"{clause}: a personal column outside GROUP BY and aggregates"
                    f" ({_where(node)}); {change}"
                )
            return
        for child in node.iter_expressions():
            check_value(child, clause)

    for projection in tree.expressions:
        check_value(
            projection.unalias() if isinstance(projection, exp.Alias) else projection, "SELECT"
        )
    for clause in ("having", "order"):
        node = tree.args.get(clause)
        if node is not None:
            check_value(node, clause.upper())
    filters: list[exp.Expr] = [w for w in [tree.args.get("where")] if w is not None]
    filters += [j.args["on"] for j in tree.args.get("joins") or [] if j.args.get("on")]
    for node in filters:
        for column in node.find_all(exp.Column):
            if id(column) in pins.uses and id(column) not in pins.literal_uses:
                continue  # a join on subject columns
            if kind(column) != "plain":
                raise QueryRefused(
                    f"a filter on a personal column in a query that pins no subject"
                    f" ({_where(column)}): filter on plain columns, or pin the subjects"
                )
    result: list[tuple[str, str]] = []
    for scope in tracer.scopes:
        for alias, value in scope.sources.items():
            if isinstance(value, exp.Table):
                result.append((alias, tables[value.name].subject))
    return tuple(result)
