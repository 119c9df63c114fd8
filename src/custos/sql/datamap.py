"""The data map: which sources custos guards, and in them which tables hold whose data.

``sources.yaml`` in the home names each source (a PostgreSQL URL, a DuckDB file, or an
in-memory DuckDB reading Parquet files) and, per table, the column naming the subject and the
columns holding each category, with the category's coarse form as a SQL expression per
dialect. What is not in the map does not exist for a query (deny by default).

The map is authority: its digest (of :func:`to_json`) is ledgered like a policy version, so a
map edited behind custos' back is noticed before a query rests on it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import rfc8785
import yaml

from custos.errors import DataMapError, InvalidInput, shown_id
from custos.textfiles import _StrictLoader, read_text
from custos.vocabulary import DEFAULT_VOCABULARY, Vocabulary

Dialect = Literal["duckdb", "postgres"]
DIALECTS: Final[tuple[Dialect, ...]] = ("duckdb", "postgres")

#: The file the map lives in, relative to the home.
MAP_FILE: Final = "sources.yaml"
#: Larger maps are refused rather than read: a map is written by hand.
MAX_MAP_BYTES: Final = 1 << 20

#: The placeholder a coarse form's SQL names the column by.
COLUMN_PLACEHOLDER: Final = "{col}"
#: What ``{col}`` becomes while a template is checked: a name no map may use.
_PROBE_COLUMN: Final = "custos_coarse_probe"

# Names in the map are plain lower-case SQL identifiers: nothing that needs quoting, so a
# quoting or case trick in a query can never name something the map did not mean.
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SOURCE_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, eq=True)
class CoarseForm:
    """A category's coarse form: ``sql[dialect]`` is an expression in which ``{col}`` stands
    for the (qualified) column it replaces."""

    name: str
    sql: Mapping[Dialect, str]

    def template(self, dialect: Dialect) -> str:
        """The SQL template for ``dialect``. Raises ``KeyError`` when it has none (the map
        parser refuses such a map, so only hand-built maps can meet it)."""
        return self.sql[dialect]


def _builtin(name: str, duckdb: str, postgres: str) -> CoarseForm:
    return CoarseForm(name, MappingProxyType({"duckdb": duckdb, "postgres": postgres}))


#: The built-in coarse forms, by name.
BUILTIN_COARSE: Final[Mapping[str, CoarseForm]] = MappingProxyType(
    {
        # IPv4 to its /24 and IPv6 to its /48, as text. DuckDB without its inet extension
        # (which would have to be downloaded) only has string functions: the first three
        # octets, or the first three groups before any "::" padded with zeros. Anything that
        # is neither an address of either family becomes NULL rather than pass through.
        "ip_prefix": _builtin(
            "ip_prefix",
            duckdb=(
                "CASE WHEN regexp_full_match(CAST({col} AS VARCHAR),"
                " '[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}')"
                " THEN regexp_extract(CAST({col} AS VARCHAR),"
                " '^([0-9]+\\.[0-9]+\\.[0-9]+)\\.', 1) || '.0/24'"
                " WHEN regexp_full_match(CAST({col} AS VARCHAR), '[0-9A-Fa-f:.]+')"
                " AND contains(CAST({col} AS VARCHAR), ':')"
                " THEN array_to_string(list_resize(CASE WHEN split_part(lower(CAST({col} AS"
                " VARCHAR)), '::', 1) = '' THEN CAST([] AS VARCHAR[]) ELSE"
                " string_split(split_part(lower(CAST({col} AS VARCHAR)), '::', 1), ':') END,"
                " 3, '0'), ':') || '::/48'"
                " ELSE NULL END"
            ),
            postgres=(
                "CAST(network(set_masklen(CAST(CAST({col} AS TEXT) AS INET),"
                " CASE WHEN family(CAST(CAST({col} AS TEXT) AS INET)) = 4 THEN 24 ELSE 48 END))"
                " AS TEXT)"
            ),
        ),
        # A coordinate snapped down to a multiple of 0.1 degree (about 11 km of latitude).
        "grid": _builtin(
            "grid",
            duckdb="floor(CAST({col} AS DOUBLE) * 10) / 10",
            postgres="floor(CAST({col} AS DOUBLE PRECISION) * 10) / 10",
        ),
        # The first character and the domain: j***@example.org.
        "email_mask": _builtin(
            "email_mask",
            duckdb=(
                "left(CAST({col} AS VARCHAR), 1) || '***@'"
                " || split_part(CAST({col} AS VARCHAR), '@', 2)"
            ),
            postgres=(
                "left(CAST({col} AS TEXT), 1) || '***@' || split_part(CAST({col} AS TEXT), '@', 2)"
            ),
        ),
        "day": _builtin(
            "day",
            duckdb="date_trunc('day', {col})",
            postgres="date_trunc('day', {col})",
        ),
        # Nothing leaves at coarse level: always NULL, but of the column's type and not a
        # constant (DuckDB and PostgreSQL refuse ORDER BY a constant).
        "none": _builtin("none", duckdb="NULLIF({col}, {col})", postgres="NULLIF({col}, {col})"),
    }
)

#: The coarse form a category gets when the map names none.
DEFAULT_COARSE: Final[Mapping[str, str]] = MappingProxyType(
    {"ip_history": "ip_prefix", "location": "grid", "contact": "email_mask"}
)


def default_coarse(category: str) -> CoarseForm:
    """The built-in coarse form of ``category`` (``none`` for any category without one)."""
    return BUILTIN_COARSE[DEFAULT_COARSE.get(category, "none")]


@dataclass(frozen=True, eq=True)
class ColumnMap:
    """One mapped column. ``category`` None is plain data (not personal), or the subject
    column when ``is_subject``; ``coarse`` is set exactly when ``category`` is."""

    name: str
    category: str | None
    coarse: CoarseForm | None
    is_subject: bool = False


@dataclass(frozen=True, eq=True)
class TableMap:
    """One mapped table: ``name`` as the map writes it (``logins`` or ``public.logins``),
    ``subject`` the column naming the subject, ``columns`` every column a query may name
    (the subject column included), ``file`` the Parquet glob of an in-memory DuckDB source."""

    name: str
    subject: str
    columns: Mapping[str, ColumnMap]
    file: str | None = None


@dataclass(frozen=True, eq=True)
class SourceMap:
    """One source: where it is (``url``), its SQL ``dialect`` and its mapped tables."""

    name: str
    url: str
    dialect: Dialect
    tables: Mapping[str, TableMap]
    password_env: str | None = None


@dataclass(frozen=True, eq=True)
class DataMap:
    """Every source of the home; ``digest`` is the SHA-256 (hex) of :func:`to_json`."""

    sources: Mapping[str, SourceMap]
    digest: str = field(default="")

    def source(self, name: str) -> SourceMap:
        """The source called ``name``. Raises :class:`InvalidInput` listing the valid names."""
        try:
            return self.sources[name]
        except KeyError:
            valid = ", ".join(sorted(self.sources)) or "none: sources.yaml maps no source"
            raise InvalidInput(f"unknown source {shown_id(name)} (valid: {valid})") from None


def to_json(data_map: DataMap | Mapping[str, SourceMap]) -> dict[str, Any]:
    """The canonical body of a map: what its digest is of and what the ledger records."""
    sources = data_map.sources if isinstance(data_map, DataMap) else data_map
    return {
        "sources": {
            name: {
                "url": source.url,
                "dialect": source.dialect,
                "password_env": source.password_env,
                "tables": {
                    tname: {
                        "subject": table.subject,
                        "file": table.file,
                        "columns": {
                            cname: {
                                "category": column.category,
                                "subject": column.is_subject,
                                "coarse": None
                                if column.coarse is None
                                else {
                                    "name": column.coarse.name,
                                    "sql": dict(sorted(column.coarse.sql.items())),
                                },
                            }
                            for cname, column in sorted(table.columns.items())
                        },
                    }
                    for tname, table in sorted(source.tables.items())
                },
            }
            for name, source in sorted(sources.items())
        }
    }


def map_digest(sources: Mapping[str, SourceMap]) -> str:
    """SHA-256 (hex) of the canonical JSON (RFC 8785) of :func:`to_json`."""
    return hashlib.sha256(bytes(rfc8785.dumps(to_json(sources)))).hexdigest()


def build_data_map(sources: Mapping[str, SourceMap]) -> DataMap:
    """A :class:`DataMap` of ``sources`` with its digest computed."""
    frozen = MappingProxyType(dict(sources))
    return DataMap(frozen, map_digest(frozen))


# --- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Y:
    """A YAML value with the (1-based) line it starts on; mappings hold ``_Y`` values."""

    value: Any
    line: int


class _Problems:
    """The problems found so far, and the words (the active pack's) the map may use."""

    def __init__(self, where: str, words: Vocabulary = DEFAULT_VOCABULARY) -> None:
        self.where = where
        self.words = words
        self._found: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self._found.append((line, f"{self.where}:{line}: {message}"))

    @property
    def items(self) -> list[str]:
        """The problems in the order of their lines (the order found, within a line)."""
        return [text for _, text in sorted(self._found, key=lambda item: item[0])]


def _located(loader: _StrictLoader, node: yaml.Node) -> _Y:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        items: dict[Any, _Y] = {}
        for key_node, value_node in node.value:
            # A name as written: YAML 1.1 would read a column called `on` or `no` as a
            # boolean.
            if isinstance(key_node, yaml.ScalarNode):
                key = str(key_node.value)
            else:
                key = repr(loader.construct_object(key_node, deep=True))
            items[key] = _located(loader, value_node)
        return _Y(items, line)
    if isinstance(node, yaml.SequenceNode):
        return _Y([_located(loader, item) for item in node.value], line)
    return _Y(loader.construct_object(node, deep=True), line)


def _load_yaml(text: str, where: str) -> _Y | None:
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        loader.construct_document(node)  # duplicate keys are refused here
        return _located(loader, node)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        problem = f"a character YAML does not allow (code {exc.character:#x})"
        raise DataMapError(f"{where}: not valid YAML", [f"{where}:{line}: {problem}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or "syntax error"
        raise DataMapError(f"{where}: not valid YAML", [f"{where}:{line}: {problem}"]) from None
    except RecursionError:
        raise DataMapError(f"{where}: not valid YAML", [f"{where}:1: nested too deeply"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _mapping(
    node: _Y, what: str, problems: _Problems, allowed: tuple[str, ...] | None = None
) -> dict[str, _Y] | None:
    if not isinstance(node.value, dict):
        problems.add(node.line, f"{what} must be a mapping")
        return None
    items = cast(dict[str, _Y], node.value)
    if allowed is not None:
        for key, value in items.items():
            if key not in allowed:
                problems.add(
                    value.line,
                    f"{what}: unknown field {shown_id(key)} (valid: {', '.join(allowed)})",
                )
    return items


def _string(node: _Y | None, what: str, problems: _Problems, line: int) -> str | None:
    if node is None:
        problems.add(line, f"{what} is missing")
        return None
    if not isinstance(node.value, str) or not node.value.strip():
        problems.add(node.line, f"{what} must be a non-empty string")
        return None
    return node.value


def _dialect_of(url: str) -> Dialect | None:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if url.startswith("duckdb:"):
        return "duckdb"
    return None


def _check_template(sql: str, dialect: Dialect) -> str | None:
    """What is wrong with the coarse template ``sql`` in ``dialect``, or None."""
    # sqlglot only for custom templates: reading a map of built-in forms stays light.
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    probe = sql.replace(COLUMN_PLACEHOLDER, _PROBE_COLUMN)
    try:
        parsed = sqlglot.parse(probe, read=dialect)
    except SqlglotError:
        return f"not a {dialect} SQL expression"
    if len(parsed) != 1 or parsed[0] is None:
        return "must be one SQL expression"
    tree = parsed[0]
    if isinstance(tree, exp.Query) or tree.find(exp.Query, exp.Table, exp.Subquery):
        return "must be an expression of {col}, not a query or a table"
    for column in tree.find_all(exp.Column):
        if column.name != _PROBE_COLUMN or column.table:
            return "may name no column but {col}"
    return None


def _coarse(
    node: _Y | None, category: str, dialect: Dialect, what: str, problems: _Problems
) -> CoarseForm | None:
    if node is None:
        return default_coarse(category)
    if isinstance(node.value, str):
        form = BUILTIN_COARSE.get(node.value)
        if form is None:
            valid = ", ".join(BUILTIN_COARSE)
            problems.add(
                node.line,
                f"{what}: unknown coarse form {shown_id(node.value)} (valid: {valid}, or a"
                " mapping of dialect to SQL)",
            )
        return form
    items = _mapping(node, f"{what} coarse", problems, DIALECTS)
    if items is None:
        return None
    templates: dict[Dialect, str] = {}
    for name in DIALECTS:
        if name not in items:
            continue
        text = _string(items[name], f"{what} coarse {name}", problems, node.line)
        if text is None:
            continue
        wrong = _check_template(text, name)
        if wrong is not None:
            problems.add(items[name].line, f"{what} coarse {name}: {wrong}")
            continue
        templates[name] = text
    if dialect not in items:
        problems.add(node.line, f"{what} coarse: no SQL for this source's dialect {dialect}")
        return None
    if dialect not in templates:
        return None
    return CoarseForm("custom", MappingProxyType(templates))


def _column(
    name: str,
    node: _Y,
    subject: str | None,
    dialect: Dialect,
    what: str,
    problems: _Problems,
) -> ColumnMap | None:
    if not _IDENTIFIER.fullmatch(name):
        problems.add(node.line, f"{what}: column names are lower-case SQL identifiers")
        return None
    coarse_node: _Y | None = None
    if isinstance(node.value, str):
        category: str | None = node.value
    elif isinstance(node.value, dict):
        items = _mapping(node, what, problems, ("category", "coarse"))
        assert items is not None
        category = _string(items.get("category"), f"{what} category", problems, node.line)
        if category is None:
            return None
        coarse_node = items.get("coarse")
        if category in ("plain", "subject"):
            problems.add(node.line, f"{what}: a {category} column has no coarse form")
            return None
    else:
        problems.add(node.line, f"{what}: give a category, plain, subject or a mapping")
        return None
    if category == "subject":
        if name != subject:
            problems.add(node.line, f"{what}: only the table's subject column is subject")
            return None
        return ColumnMap(name, None, None, is_subject=True)
    if name == subject:
        problems.add(node.line, f"{what}: the subject column must be mapped as subject")
        return None
    if category == "plain":
        return ColumnMap(name, None, None)
    if category is None or not problems.words.knows("category", category):
        problems.add(node.line, f"{what}: {problems.words.unknown('category', category)}")
        return None
    coarse = _coarse(coarse_node, category, dialect, what, problems)
    return None if coarse is None else ColumnMap(name, category, coarse)


def _table(
    name: str, node: _Y, dialect: Dialect, in_memory: bool, what: str, problems: _Problems
) -> TableMap | None:
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        problems.add(
            node.line, f"{what}: table names are lower-case SQL identifiers, schema.table at most"
        )
        return None
    items = _mapping(node, what, problems, ("subject", "file", "columns"))
    if items is None:
        return None
    subject = _string(items.get("subject"), f"{what} subject", problems, node.line)
    if subject is not None and not _IDENTIFIER.fullmatch(subject):
        problems.add(items["subject"].line, f"{what} subject: a lower-case SQL identifier")
        subject = None
    file: str | None = None
    if "file" in items:
        file = _string(items["file"], f"{what} file", problems, node.line)
        if not in_memory:
            problems.add(items["file"].line, f'{what} file: only for url "duckdb:" sources')
    elif in_memory:
        problems.add(node.line, f'{what}: a table of url "duckdb:" names its Parquet file')
    columns: dict[str, ColumnMap] = {}
    column_nodes = items.get("columns")
    if column_nodes is None:
        problems.add(node.line, f"{what} columns is missing")
    else:
        raw = _mapping(column_nodes, f"{what} columns", problems)
        for cname, cnode in (raw or {}).items():
            column = _column(cname, cnode, subject, dialect, f"{what} column {cname}", problems)
            if column is not None:
                columns[cname] = column
    if subject is None:
        return None
    columns.setdefault(subject, ColumnMap(subject, None, None, is_subject=True))
    return TableMap(name, subject, MappingProxyType(columns), file)


def _source(name: str, node: _Y, problems: _Problems) -> SourceMap | None:
    what = f"source {name}"
    if not _SOURCE_NAME.fullmatch(name):
        problems.add(node.line, f"{what}: source names are lower-case letters, digits, _ and -")
        return None
    items = _mapping(node, what, problems, ("url", "password_env", "tables"))
    if items is None:
        return None
    url = _string(items.get("url"), f"{what} url", problems, node.line)
    dialect = None if url is None else _dialect_of(url)
    if url is not None and dialect is None:
        problems.add(
            items["url"].line,
            f"{what} url: postgresql://… or duckdb:PATH (duckdb: alone for Parquet files)",
        )
    if url is not None and dialect == "postgres":
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
            problems.add(items["url"].line, f"{what} url: not a valid URL")
        if password is not None:
            # Never repeated: it is a secret.
            problems.add(
                items["url"].line,
                f"{what} url holds a password: remove it and name password_env instead",
            )
    password_env: str | None = None
    if "password_env" in items:
        password_env = _string(items["password_env"], f"{what} password_env", problems, 0)
        if password_env is not None and not _ENV_NAME.fullmatch(password_env):
            problems.add(items["password_env"].line, f"{what} password_env: not a variable name")
            password_env = None
        if password_env is not None and dialect == "duckdb":
            problems.add(items["password_env"].line, f"{what}: a DuckDB source has no password")
    tables: dict[str, TableMap] = {}
    table_nodes = items.get("tables")
    if table_nodes is None:
        problems.add(node.line, f"{what} tables is missing")
    elif dialect is not None and url is not None:
        raw = _mapping(table_nodes, f"{what} tables", problems)
        in_memory = url == "duckdb:"
        for tname, tnode in (raw or {}).items():
            table = _table(tname, tnode, dialect, in_memory, f"{what} table {tname}", problems)
            if table is not None:
                tables[tname] = table
        bare = [t.split(".")[-1] for t in tables]
        for tname in tables:
            if "." in tname and bare.count(tname.split(".")[-1]) > 1:
                problems.add(
                    table_nodes.line, f"{what}: table {tname} is mapped twice under two schemas"
                )
    if url is None or dialect is None:
        return None
    return SourceMap(name, url, dialect, MappingProxyType(tables), password_env)


def parse_data_map(
    text: str, where: str = MAP_FILE, *, words: Vocabulary = DEFAULT_VOCABULARY
) -> DataMap:
    """Parse and validate the text of a data map; ``where`` names it in messages, and its
    categories are ``words``' (the active policy pack's).

    Raises :class:`DataMapError` listing every problem as ``where:line: what`` (never a
    password, never a value that looks personal).
    """
    problems = _Problems(where, words)
    root = _load_yaml(text.removeprefix("\ufeff"), where)
    if root is None:
        return build_data_map({})
    items = _mapping(root, "the map", problems, ("sources",))
    sources: dict[str, SourceMap] = {}
    if items is not None and "sources" in items:
        source_nodes = items["sources"]
        if source_nodes.value is not None:
            raw = _mapping(source_nodes, "sources", problems)
            for name, node in (raw or {}).items():
                source = _source(name, node, problems)
                if source is not None:
                    sources[name] = source
    if problems.items:
        count = len(problems.items)
        raise DataMapError(
            f"{where}: {count} problem{'s' if count > 1 else ''}; the map was not accepted",
            problems.items,
        )
    return build_data_map(sources)


def load_data_map(path: Path, *, words: Vocabulary = DEFAULT_VOCABULARY) -> DataMap:
    """Read and parse the data map at ``path``; an absent file is an empty map.

    Raises :class:`InvalidInput` when it cannot be read and :class:`DataMapError` when invalid.
    """
    if not path.exists():
        return build_data_map({})
    text = read_text(path, "a data map", max_bytes=MAX_MAP_BYTES)
    return parse_data_map(text, str(path), words=words)
