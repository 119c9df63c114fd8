"""What the audit-log importers share: the result of reading a log (events, bulk accesses,
entries that could not be mapped, records that could not be parsed), finding the subjects a
SQL statement names, and describing a statement that names none (a bulk access) without
keeping any of its values.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from custos.detect.events import AccessEvent, parse_event
from custos.detect.importers.mapping import LogMapping
from custos.directory.files import ID_PATTERN
from custos.errors import ValidationFailed
from custos.times import iso

#: Why an entry was not imported, by the key reports use.
REASONS: dict[str, str] = {
    "principal": "principal not mapped",
    "resource": "table or resource not mapped",
    "subject": "no subject named",
    "not_access": "not an access to data",
}


@dataclass(frozen=True, slots=True)
class Unmapped:
    """An entry of the log (first line ``line``) that became no event: ``reason`` is a key of
    :data:`REASONS`, ``detail`` says more without quoting personal data."""

    line: int
    reason: str
    detail: str

    def describe(self, source: str) -> str:
        return f"{source}: line {self.line}: {REASONS[self.reason]} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that could not be parsed: its physical lines and the problem (with where)."""

    lines: tuple[int, ...]
    problem: str


@dataclass(slots=True)
class ReadLog:
    """What reading a log found: ``records`` read (log records, multi-line ones counted
    once), ``entries`` among them that are audit entries, the access ``events`` they
    became (and ``duplicates``, accesses read twice), the entries ``unmapped`` and the
    records ``rejected``."""

    records: int = 0
    entries: int = 0
    #: Entries that were an access already read (pgaudit logs a statement once per table
    #: alias; CloudTrail may deliver a record twice): counted, not stored twice.
    duplicates: int = 0
    events: list[AccessEvent] = field(default_factory=list)
    #: Statements or calls that reached a mapped table or resource without naming subjects
    #: (see :func:`bulk_access`): one access to many people, kept as such.
    bulk: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def unmapped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(u.reason for u in self.unmapped).items()))

    def skip(self, line: int, reason: str, detail: str) -> None:
        self.unmapped.append(Unmapped(line, reason, detail))

    def add_bulk(self, record: dict[str, Any]) -> None:
        """Add the bulk access ``record`` (from :func:`bulk_access`); the same one read
        twice (an entry per alias, a record delivered twice) is counted as a repeat."""
        if record["id"] in self._ids:
            self.duplicates += 1
            return
        self._ids.add(record["id"])
        self.bulk.append(record)

    def add(self, line: int, body: dict[str, Any]) -> None:
        """Add the event ``body`` (DESIGN.md format) read at ``line``. The same access
        logged twice (pgaudit logs a statement once per alias of a table) is one event."""
        if body["id"] in self._ids:
            self.duplicates += 1
            return
        try:
            event = parse_event(body)
        except ValidationFailed as exc:
            # The mapping's words are validated; what is left is the log's content.
            self.skip(line, "subject", "; ".join(exc.problems))
            return
        self._ids.add(event.id)
        self.events.append(event)


def event_id(prefix: str, *parts: object) -> str:
    """A stable id for an imported access: the same log entry gives the same id on every
    import (so importing a log twice changes nothing), and ids reveal nothing of the entry."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f"{prefix}-{digest}"


def subject_id(prefix: str, value: str) -> str | None:
    """``prefix + value`` if that is a valid id, else None."""
    made = prefix + value
    return made if ID_PATTERN.match(made) else None


def access_event(
    mapping: LogMapping,
    *,
    key: str,
    time: datetime,
    principal: str,
    action: str,
    subject: str,
    category: str,
    decision: str,
    precision: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """An imported access in the DESIGN.md format: no ticket (it bypassed custos), the
    mapping's purpose and source, ``guarded: false`` saying so, and the mapping's digest;
    ``extra`` should name the log's own actor (``log_principal``), so that who the mapping
    said it was can be checked against the log."""
    return {
        "id": key,
        "time": iso(time),
        "principal": principal,
        "action": action,
        "subject": subject,
        "category": category,
        "purpose": mapping.purpose,
        "decision": decision,
        "precision": precision if decision == "allow" else None,
        "source": mapping.source_name,
        "guarded": False,
        "mapping": mapping.digest,
        **extra,
    }


class ParametersNotLogged(Exception):
    """The statement names its subject by a parameter the log does not carry."""


# sqlglot's PostgreSQL tokenizer reads ``$1,$2`` as the start of a dollar-quoted string.
_PLACEHOLDER_AFTER_COMMA = re.compile(r",\$(\d)")


# sqlglot warns on stderr of every statement it keeps as an opaque command (CREATE
# EXTENSION, …); such a statement names no subject, and a log has many.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

#: A subject a statement names: a literal value (str) or its n-th parameter (int).
Named = str | int


def parse_statements(sql: str, dialect: str) -> tuple[exp.Expr, ...] | None:
    """The syntax trees of the statements in ``sql`` (a log may hold several sent as one),
    or None when sqlglot cannot parse them. The trees are shared between calls (logs repeat
    the same prepared statements): read them, never change them."""
    return _parsed(sql, dialect)


@functools.lru_cache(maxsize=4096)
def _parsed(sql: str, dialect: str) -> tuple[exp.Expr, ...] | None:
    try:
        trees = sqlglot.parse(_PLACEHOLDER_AFTER_COMMA.sub(r", $\1", sql), dialect=dialect)
    except (SqlglotError, RecursionError, ValueError):
        return None
    return tuple(tree for tree in trees if tree is not None)


#: Statement texts up to this length keep their analysis; longer ones up to the next are
#: analysed each time; longer still, not at all (reported as not parsed).
_KEPT_TEXT = 64 * 1024
_LONGEST_TEXT = 8 * 2**20


@dataclass(frozen=True, slots=True)
class TableTarget:
    """A table as an audit entry names it (``schema.table``, lower case): a statement's
    table is it when the names agree and the statement names no other schema."""

    schema: str
    table: str

    def __call__(self, node: exp.Table) -> bool:
        return node.name.lower() == self.table and (
            not node.db or not self.schema or node.db.lower() == self.schema
        )


class Unparsed(Exception):
    """The statement could not be parsed."""


def statement_subjects_cached(
    sql: str, dialect: str, target: TableTarget, column: str, params: Sequence[str] | None
) -> set[str] | None:
    """:func:`subjects_of` for the statement text ``sql`` and ``target``, with the analysis
    kept per statement text (a log repeats its prepared statements with other parameters).
    Raises :class:`Unparsed` and :class:`ParametersNotLogged`."""
    found: frozenset[Named] | Literal[False] | None
    if len(sql) > _KEPT_TEXT:
        # A bulk INSERT of thousands of rows: analysed, not kept (thousands of such trees
        # would fill the memory), and too big to be analysed at all past a point.
        if len(sql) > _LONGEST_TEXT:
            raise Unparsed
        trees = _parsed.__wrapped__(sql, dialect)
        found = False if not trees else _template_of(trees, target, column.lower())
    else:
        found = _template(sql, dialect, target, column.lower())
    if found is False:
        raise Unparsed
    return _resolve(found, params)


@functools.lru_cache(maxsize=8192)
def _template(
    sql: str, dialect: str, target: TableTarget, column: str
) -> frozenset[Named] | Literal[False] | None:
    """The analysis of one statement text (False: it could not be parsed)."""
    trees = parse_statements(sql, dialect)
    if not trees:
        return False
    return _template_of(trees, target, column)


def subjects_of(
    trees: Sequence[exp.Expr],
    is_target: Callable[[exp.Table], bool],
    column: str,
    params: Sequence[str] | None,
) -> set[str] | None:
    """The values of ``column`` that restrict every part of the statements ``trees`` that
    reads or writes a table ``is_target`` accepts (see :func:`statement_subjects`); None if
    one is not so restricted, or none touches the table. ``$n`` takes the n-th of
    ``params``. Raises :class:`ParametersNotLogged` when a value is a parameter and
    ``params`` is None."""
    return _resolve(_template_of(trees, is_target, column.lower()), params)


def _template_of(
    trees: Sequence[exp.Expr], is_target: Callable[[exp.Table], bool], column: str
) -> frozenset[Named] | None:
    found: set[Named] = set()
    touched = False
    for tree in trees:
        if not any(isinstance(t, exp.Table) and is_target(t) for t in tree.walk()):
            continue
        touched = True
        try:
            values = statement_subjects(tree, is_target, column)
        except RecursionError:  # conditions nested too deeply to follow: not restricted
            return None
        if values is None:
            return None
        found |= values
    return frozenset(found) if touched else None


def _resolve(template: frozenset[Named] | None, params: Sequence[str] | None) -> set[str] | None:
    if template is None:
        return None
    found: set[str] = set()
    for value in template:
        if isinstance(value, str):
            found.add(value)
            continue
        if params is None:
            raise ParametersNotLogged
        if not 1 <= value <= len(params):
            return None
        found.add(params[value - 1])
    return found


def _target_aliases(scope: Scope, is_target: Callable[[exp.Table], bool]) -> set[str]:
    """The names (lowercase) under which ``scope`` reads a table ``is_target`` accepts."""
    return {
        alias.lower()
        for alias, source in scope.sources.items()
        if isinstance(source, exp.Table) and is_target(source)
    }


def statement_subjects(
    tree: exp.Expr, is_target: Callable[[exp.Table], bool], column: str
) -> set[Named] | None:
    """What restricts ``column`` (lower case) in every part of ``tree`` reading or writing
    a table ``is_target`` accepts: ``WHERE col = v`` (or ``col IN (…)``, ``OR`` of such)
    anded with anything, or an ``INSERT``'s values; each value a literal (str) or the
    number of a parameter ``$n`` (int).

    None when some part touching the table is not restricted to named values (a bulk read,
    a join on another condition, a subquery): such an access is not one subject's, and is
    reported rather than guessed."""
    found: set[Named] = set()
    touched = False
    for node in tree.walk():
        if isinstance(node, exp.Insert):
            target = node.this
            if isinstance(target, exp.Schema) and isinstance(target.this, exp.Table):
                if not is_target(target.this):
                    continue
                touched = True
                values = _inserted(node, target, column)
                if values is None:
                    return None
                found |= values
            elif isinstance(target, exp.Table) and is_target(target):
                return None  # no column list: which value is the subject is unknown
        elif isinstance(node, exp.Update | exp.Delete):
            target = node.this
            if isinstance(target, exp.Table) and is_target(target):
                touched = True
                aliases = {target.alias_or_name.lower()}
                values = _restriction(node.args.get("where"), aliases, column)
                if values is None:
                    return None
                found |= values
    try:
        scopes = traverse_scope(tree)
    except (SqlglotError, RecursionError, ValueError):
        return None
    for scope in scopes:
        if isinstance(scope.expression, exp.Update | exp.Delete | exp.Insert):
            continue
        aliases = _target_aliases(scope, is_target)
        if not aliases:
            continue
        touched = True
        values = _restriction(scope.expression.args.get("where"), aliases, column)
        if values is None:
            return None
        found |= values
    return found if touched else None


def _inserted(node: exp.Insert, target: exp.Schema, column: str) -> set[Named] | None:
    names = [
        c.name.lower() for c in target.expressions if isinstance(c, exp.Identifier | exp.Column)
    ]
    if column not in names or not isinstance(node.expression, exp.Values):
        return None
    position = names.index(column)
    found: set[Named] = set()
    for row in node.expression.expressions:
        cells = row.expressions if isinstance(row, exp.Tuple) else [row]
        if len(cells) != len(names):
            return None
        value = _value(cells[position])
        if value is None:
            return None
        found.add(value)
    return found


def _is_column(node: exp.Expr, aliases: set[str], column: str) -> bool:
    return (
        isinstance(node, exp.Column)
        and node.name.lower() == column
        and (not node.table or node.table.lower() in aliases)
    )


def _value(node: exp.Expr) -> Named | None:
    while isinstance(node, exp.Cast | exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        return str(node.this)
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal):
        number = str(node.this.this)
        return int(number) if number.isdigit() and len(number) < 6 else None
    return None


def _restriction(node: exp.Expr | None, aliases: set[str], column: str) -> set[Named] | None:
    """The values ``node`` (a condition) restricts the column to, or None if it does not."""
    if node is None:
        return None
    if isinstance(node, exp.Where | exp.Paren):
        return _restriction(node.this, aliases, column)
    if isinstance(node, exp.And):
        left = _restriction(node.left, aliases, column)
        right = _restriction(node.right, aliases, column)
        if left is None or right is None:
            return left if right is None else right
        return left & right
    if isinstance(node, exp.Or):
        left = _restriction(node.left, aliases, column)
        right = _restriction(node.right, aliases, column)
        return None if left is None or right is None else left | right
    if isinstance(node, exp.EQ):
        for side, other in ((node.left, node.right), (node.right, node.left)):
            if _is_column(side, aliases, column):
                value = _value(other)
                return None if value is None else {value}
        return None
    if isinstance(node, exp.In) and _is_column(node.this, aliases, column):
        if node.args.get("query") is not None or not node.expressions:
            return None
        values = [_value(e) for e in node.expressions]
        return None if any(v is None for v in values) else {v for v in values if v is not None}
    return None


# -- bulk accesses: statements that name no subject --------------------------------------

#: Value nodes replaced by ``?`` in a statement's shape: every kind of literal sqlglot has.
_LITERALS: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, name)
    for name in (
        "Literal", "HexString", "ByteString", "BitString", "RawString", "UnicodeString",
        "National",
    )
    if isinstance(getattr(exp, name, None), type)
)  # fmt: skip
#: Aggregates that reveal a value of some row, not only a count or sum over them.
_VALUE_AGGREGATES: tuple[type[exp.Expr], ...] = tuple(
    getattr(exp, name)
    for name in ("ArrayAgg", "GroupConcat", "Min", "Max", "AnyValue", "First", "Last")
    if isinstance(getattr(exp, name, None), type)
)
_MAX_COLUMNS = 64


def _blank(node: exp.Expr) -> exp.Expr:
    # A parameter's number ($1) is no value; everything else literal is.
    if isinstance(node, _LITERALS) and not isinstance(node.parent, exp.Parameter):
        return exp.Var(this="?")
    return node


def statement_shape(trees: Sequence[exp.Expr], dialect: str) -> tuple[str, str]:
    """The statements ``trees`` with every literal replaced by ``?`` and comments dropped,
    and ``sha256:`` of that text: what a statement did (tables, columns, the form of its
    predicates) without a value it held. A statement kept as an opaque command (not
    parsed) is shown by its first word only. The trees are not changed."""
    parts: list[str] = []
    for tree in trees:
        if any(isinstance(node, exp.Command) for node in tree.walk()):
            first = tree.this if isinstance(tree, exp.Command) else None
            word = str(first).split()[0] if isinstance(first, str) and first.split() else ""
            parts.append(f"{word.upper()[:32] or 'COMMAND'} …")
            continue
        parts.append(tree.transform(_blank, copy=True).sql(dialect, comments=False))
    text = "; ".join(parts)
    return text, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class BulkScope:
    """What a statement that names no subject did with a table: ``scope`` (``table``,
    ``range`` or ``aggregate``, see :data:`custos.store.bulk.SCOPES`) and the names of
    the ``columns`` it read (``*`` for all)."""

    scope: str
    columns: tuple[str, ...]
    #: The statement copies the rows out (``COPY … TO``), not only reads them.
    export: bool = False


def _aggregate_only(select: exp.Select) -> bool:
    """Only aggregates over the rows, nothing grouped: a count or a sum, not a value."""
    if select.args.get("group") is not None or not select.expressions:
        return False
    for projection in select.expressions:
        inner = projection.this if isinstance(projection, exp.Alias) else projection
        if not isinstance(inner, exp.AggFunc) or isinstance(inner, _VALUE_AGGREGATES):
            return False
    return True


def bulk_scope(trees: Sequence[exp.Expr], is_target: Callable[[exp.Table], bool]) -> BulkScope:
    """How the statements ``trees`` reached the table ``is_target`` accepts without naming
    its subjects: every row (``table``), rows a predicate or join chose (``range``), or only
    aggregates (``aggregate``); and the columns read of it. A statement sqlglot reads only
    partly (``COPY`` of a table, an opaque command) counts as the whole table."""
    columns: set[str] = set()
    kinds: set[str] = set()
    for tree in trees:
        if not any(isinstance(t, exp.Table) and is_target(t) for t in tree.walk()):
            continue
        try:
            scopes = traverse_scope(tree)
        except (SqlglotError, RecursionError, ValueError):
            scopes = []
        seen = False
        for scope in scopes:
            aliases = _target_aliases(scope, is_target)
            if not aliases:
                continue
            seen = True
            select = scope.expression
            only = len(scope.sources) == 1
            for column in scope.columns:
                if (column.table and column.table.lower() in aliases) or (
                    not column.table and only
                ):
                    columns.add(column.name.lower())
            if isinstance(select, exp.Select):
                for projection in select.expressions:
                    if isinstance(projection, exp.Star) or (
                        isinstance(projection, exp.Column)
                        and isinstance(projection.this, exp.Star)
                        and (not projection.table or projection.table.lower() in aliases)
                    ):
                        columns.add("*")
                if _aggregate_only(select):
                    kinds.add("aggregate")
                elif (
                    select.args.get("where") is not None
                    or select.args.get("joins")
                    or select.args.get("limit") is not None
                    or len(scope.sources) > 1
                ):
                    kinds.add("range")
                else:
                    kinds.add("table")
            else:
                kinds.add("table")
        if not seen:
            # COPY table TO …: its columns are the list given, or every one.
            copy = tree if isinstance(tree, exp.Copy) else None
            target = copy.this if copy is not None else None
            if isinstance(target, exp.Schema):
                columns.update(
                    c.name.lower()
                    for c in target.expressions
                    if isinstance(c, exp.Identifier | exp.Column)
                )
            else:
                columns.add("*")
            kinds.add("table")
    if not kinds:
        kinds.add("table")
    # The widest wins: any statement reading every row reads the table.
    widest = next(k for k in ("table", "range", "aggregate") if k in kinds)
    if widest == "aggregate":
        columns.discard("*")
    export = any(isinstance(tree, exp.Copy) and not tree.args.get("kind") for tree in trees)
    return BulkScope(widest, tuple(sorted(columns)[:_MAX_COLUMNS]), export)


@functools.lru_cache(maxsize=4096)
def bulk_of_cached(
    sql: str, dialect: str, target: TableTarget
) -> tuple[BulkScope, str, str] | None:
    """:func:`bulk_scope` and :func:`statement_shape` of the statement text ``sql`` for
    ``target``, kept per text (a log repeats its statements); None when it cannot be
    parsed (or is too long to be: see :func:`statement_subjects_cached`)."""
    if len(sql) > _KEPT_TEXT:
        return None
    trees = parse_statements(sql, dialect)
    if not trees:
        return None
    return (bulk_scope(trees, target), *statement_shape(trees, dialect))


def bulk_access(
    mapping: LogMapping,
    *,
    key: str,
    time: datetime,
    principal: str | None,
    actor: str,
    action: str,
    decision: str,
    obj: str,
    category: str,
    precision: str | None,
    scope: BulkScope,
    rows: int | None,
    shape: str,
    digest: str,
    command: str,
    line: int,
    database: str | None = None,
) -> dict[str, Any]:
    """A bulk access (a row of :class:`custos.store.bulk.BulkAccessRow` but the log file's
    name and the arrival time, which the import adds): ``principal`` the mapped one or None
    (then ``actor``, the log's own name for who it was, is all that is known)."""
    from custos.store.bulk import MAX_SHAPE

    return {
        "id": key,
        "time": time,
        "principal": principal,
        "actor": actor[:256],
        "action": action,
        "decision": decision,
        "object": obj[:256],
        "category": category,
        "precision": precision or "precise",
        "scope": scope.scope,
        "columns": list(scope.columns),
        "rows": rows,
        "shape": shape[:MAX_SHAPE],
        "digest": digest,
        "command": command[:64],
        "purpose": mapping.purpose,
        "source": mapping.source_name[:128],
        "log_line": line,
        "mapping": mapping.digest,
        "database": database[:128] if database else None,
    }
