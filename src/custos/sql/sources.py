"""The data sources of the data map: opening them read-only, running one query under a
statement timeout and a row cap, and checking the map against the live schema.

Defence in depth beneath the analyzer (which lets only one understood SELECT through):

- PostgreSQL: every query runs in a transaction made ``READ ONLY`` with a ``LOCAL``
  ``statement_timeout``, and is rolled back; the map's role should be a reader's (``custos
  sources check`` warns, naming the role, when it can write to a mapped table). The password
  comes from the environment variable the map names, never from the map.
- DuckDB files are opened ``read_only``; in-memory DuckDB sources (``duckdb:``) hold one view
  per table over its Parquet files. Both run with external access off (no ``read_csv`` of
  ``/etc/passwd`` even if a function slipped past the analyzer; only the mapped Parquet files
  are readable) and their configuration locked; a timer interrupts a query that overruns.

Errors never carry the server's own words: a database error message can quote a value of the
query or of a row. A source that cannot be reached or does not answer in time is
:class:`SourceUnavailable`; a query the source ran and failed is :class:`SourceFailed`, named
by its SQLSTATE or error class only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg
import psycopg.errors
from psycopg import sql as pgsql

from custos.errors import ConfigurationError, SourceFailed, SourceUnavailable, shown_id
from custos.sql.datamap import SourceMap, TableMap

#: The default schema a table name without one is looked up in.
_DUCKDB_SCHEMA = "main"
#: Seconds to wait for a PostgreSQL connection.
CONNECT_TIMEOUT = 5


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a query returned: its column names, at most ``row_cap`` rows, and whether the
    source had more (``truncated``)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    truncated: bool


class SourceConnection(Protocol):
    """An open, read-only connection to one source of the data map.

    :meth:`run` executes one SQL text (already analysed and rewritten by custos: never a
    user's text) and returns at most ``row_cap`` rows, with ``truncated`` set when there
    were more. A query that runs past the statement timeout raises
    :class:`SourceUnavailable`; one the source rejects raises :class:`SourceFailed`. Neither
    message repeats a value. :meth:`columns` lists a table's live columns (None when the
    table does not exist); :meth:`writable` names the role when it may write to the table
    (None when it may not, or the source cannot say).
    """

    def run(self, sql: str, row_cap: int) -> Fetched: ...

    def columns(self, table: str) -> tuple[str, ...] | None: ...

    def writable(self, table: str) -> str | None: ...


def _split(table: str, default: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return (schema or default), name


class _DuckDB:
    """A DuckDB connection, sandboxed as the module docstring says."""

    def __init__(self, source: SourceMap, home: Path, timeout: float) -> None:
        self.source = source
        self.timeout = timeout
        target = source.url.removeprefix("duckdb:")
        try:
            if target:
                path = (home / target).resolve()
                if not path.is_file():
                    raise SourceUnavailable(
                        f"source {shown_id(source.name)}: no DuckDB file at {path}"
                    )
                # Locked from the start: a query cannot turn external access back on.
                self.con = duckdb.connect(
                    str(path),
                    read_only=True,
                    config={"enable_external_access": False, "lock_configuration": True},
                )
            else:
                self.con = duckdb.connect(":memory:")
                files = self._views(home)
                self.con.execute("SET allowed_paths = $1", [files])
                self.con.execute("SET enable_external_access = false")
                self.con.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            raise SourceUnavailable(
                f"source {shown_id(source.name)} cannot be opened ({type(exc).__name__})"
            ) from None

    def _views(self, home: Path) -> list[str]:
        """One view per mapped table over its Parquet files; returns every file."""
        every: list[str] = []
        for table in self.source.tables.values():
            pattern = str(home / (table.file or ""))
            files = sorted(glob.glob(pattern))
            if not table.file or not files:
                raise SourceUnavailable(
                    f"source {shown_id(self.source.name)}: table {table.name} has no Parquet "
                    f"file matching {pattern}"
                )
            every.extend(files)
            schema, name = _split(table.name, _DUCKDB_SCHEMA)
            self.con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            # Names in the map are plain identifiers (the map parser checks), so quoting
            # them is exact; a view takes no parameters, so each path is a quoted literal.
            paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            self.con.execute(
                f'CREATE VIEW "{schema}"."{name}" AS SELECT * FROM read_parquet([{paths}])'  # noqa: S608
            )
        return every

    def run(self, sql: str, row_cap: int) -> Fetched:
        timer = threading.Timer(self.timeout, self.con.interrupt)
        timer.start()
        try:
            cursor = self.con.execute(sql)
            rows = cursor.fetchmany(row_cap + 1)
            names = tuple(d[0] for d in cursor.description or ())
        except duckdb.InterruptException:
            raise SourceUnavailable(
                f"source {shown_id(self.source.name)} did not answer within "
                f"{self.timeout:g} s ([sql] statement_timeout)"
            ) from None
        except duckdb.Error as exc:
            raise SourceFailed(
                f"source {shown_id(self.source.name)} could not run the query "
                f"({type(exc).__name__})"
            ) from None
        finally:
            timer.cancel()
        return Fetched(names, [tuple(r) for r in rows[:row_cap]], len(rows) > row_cap)

    def columns(self, table: str) -> tuple[str, ...] | None:
        schema, name = _split(table, _DUCKDB_SCHEMA)
        found = self.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
        return tuple(r[0] for r in found) or None

    def writable(self, table: str) -> str | None:
        return None  # opened read-only: no role, nothing writable

    def close(self) -> None:
        self.con.close()


class _Postgres:
    """A PostgreSQL connection whose every query runs in a read-only transaction."""

    def __init__(self, source: SourceMap, timeout: float) -> None:
        self.source = source
        self.timeout = timeout
        password = None
        if source.password_env:
            password = os.environ.get(source.password_env)
            if password is None:
                raise ConfigurationError(
                    f"source {shown_id(source.name)}: ${source.password_env} is not set",
                    hint="sources.yaml names the environment variable holding the password",
                )
        try:
            self.con = psycopg.connect(
                source.url,
                password=password,
                connect_timeout=CONNECT_TIMEOUT,
                autocommit=False,
                application_name="custos",
            )
        except psycopg.Error:
            raise SourceUnavailable(
                f"source {shown_id(source.name)} is unreachable or refused the connection",
                hint="check its url in sources.yaml and the password variable it names",
            ) from None

    def run(self, sql: str, row_cap: int) -> Fetched:
        try:
            with self.con.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(
                    pgsql.SQL("SET LOCAL statement_timeout = {}").format(
                        pgsql.Literal(max(1, round(self.timeout * 1000)))
                    )
                )
                cursor.execute(sql.encode())  # custos's own SQL, generated from the AST
                rows = cursor.fetchmany(row_cap + 1)
                names = tuple(d.name for d in cursor.description or ())
        except psycopg.errors.QueryCanceled:
            raise SourceUnavailable(
                f"source {shown_id(self.source.name)} did not answer within "
                f"{self.timeout:g} s ([sql] statement_timeout)"
            ) from None
        except psycopg.OperationalError:
            raise SourceUnavailable(
                f"source {shown_id(self.source.name)} closed the connection"
            ) from None
        except psycopg.Error as exc:
            state = exc.sqlstate or "unknown"
            raise SourceFailed(
                f"source {shown_id(self.source.name)} could not run the query "
                f"(SQLSTATE {state}, {type(exc).__name__})"
            ) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                self.con.rollback()
        return Fetched(names, [tuple(r) for r in rows[:row_cap]], len(rows) > row_cap)

    def _query(self, text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            with self.con.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.execute(text.encode(), params)
                return list(cursor.fetchall())
        except psycopg.Error:
            raise SourceUnavailable(
                f"source {shown_id(self.source.name)} could not list its schema"
            ) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                self.con.rollback()

    def columns(self, table: str) -> tuple[str, ...] | None:
        found = self._query(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [table],
        )
        return tuple(str(r[0]) for r in found) or None

    def writable(self, table: str) -> str | None:
        found = self._query(
            "SELECT current_user, has_table_privilege(to_regclass(%s), "
            "'INSERT, UPDATE, DELETE, TRUNCATE')",
            [table],
        )
        role, can = found[0]
        return str(role) if can else None

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.con.close()


@contextlib.contextmanager
def connect(source: SourceMap, home: Path, *, timeout: float) -> Iterator[SourceConnection]:
    """An open read-only connection to ``source`` (DuckDB paths and Parquet globs relative
    to ``home``), closed on leaving. ``timeout`` (seconds) bounds each query.

    Raises :class:`SourceUnavailable` when it cannot be opened and
    :class:`ConfigurationError` when the password variable the map names is not set.
    """
    opened: _DuckDB | _Postgres
    if source.dialect == "postgres":
        opened = _Postgres(source, timeout)
    else:
        opened = _DuckDB(source, home, timeout)
    try:
        yield opened
    finally:
        opened.close()


@dataclass(frozen=True)
class SchemaCheck:
    """The data map of one source held against its live schema.

    ``problems``: what makes the map wrong (a mapped table or column, or the subject column,
    that does not exist); ``unmapped``: live columns of mapped tables the map does not name
    (refused to every query, listed so that a new column holding personal data is noticed);
    ``warnings``: what is risky but works (a role that can write to a mapped table).
    """

    source: str
    problems: tuple[str, ...] = ()
    unmapped: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "problems": list(self.problems),
            "unmapped": {t: list(c) for t, c in self.unmapped.items()},
            "warnings": list(self.warnings),
        }


def _check_table(
    connection: SourceConnection, table: TableMap
) -> tuple[list[str], tuple[str, ...], str | None]:
    live = connection.columns(table.name)
    if live is None:
        return [f"table {table.name} does not exist"], (), None
    problems = []
    if table.subject not in live:
        problems.append(f"table {table.name}: the subject column {table.subject} does not exist")
    problems.extend(
        f"table {table.name}: column {name} does not exist"
        for name in sorted(table.columns)
        if name not in live and name != table.subject
    )
    unmapped = tuple(c for c in live if c not in table.columns and c != table.subject)
    return problems, unmapped, connection.writable(table.name)


def check_schema(source: SourceMap, home: Path, *, timeout: float) -> SchemaCheck:
    """Hold ``source``'s map to its live schema (see :class:`SchemaCheck`).

    A source that cannot be opened is one problem (not an exception): the check of every
    source goes on. Raises :class:`ConfigurationError` for an unset password variable.
    """
    try:
        with connect(source, home, timeout=timeout) as connection:
            problems: list[str] = []
            unmapped: dict[str, tuple[str, ...]] = {}
            writers: dict[str, list[str]] = {}
            for name in sorted(source.tables):
                found, extra, role = _check_table(connection, source.tables[name])
                problems.extend(found)
                if extra:
                    unmapped[name] = extra
                if role is not None:
                    writers.setdefault(role, []).append(name)
    except SourceUnavailable as exc:
        return SchemaCheck(source.name, problems=(exc.message,))
    warnings = tuple(
        f"role {role} can write to {', '.join(tables)}: map the source with a read-only role"
        for role, tables in sorted(writers.items())
    )
    return SchemaCheck(source.name, tuple(problems), unmapped, warnings)


def run_query(source: SourceMap, home: Path, sql: str, *, row_cap: int, timeout: float) -> Fetched:
    """Open ``source``, run ``sql`` (custos's rewritten SQL) read-only with the row cap and
    the statement timeout, close. Raises :class:`SourceUnavailable`, :class:`SourceFailed`
    and :class:`ConfigurationError` (see :func:`connect`)."""
    with connect(source, home, timeout=timeout) as connection:
        return connection.run(sql, row_cap)
