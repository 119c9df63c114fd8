"""Getting the four tables the rules read into DuckDB: from the custos database (through
files the database writes itself into a private temporary folder), or as views over Parquet
files."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import duckdb

from custos.detect.events import EXPLANATIONS, EventStore
from custos.detect.tables import (
    EVENT_COLUMNS,
    GRANT_COLUMNS,
    PRINCIPAL_COLUMNS,
    SUBJECT_COLUMNS,
    TICKET_COLUMNS,
)
from custos.directory import DIRECTORY_EXPORTS, DirectoryStore
from custos.errors import ConfigurationError, InvalidInput
from custos.store import Database, WrittenRows
from custos.vocabulary import ACTIONS, OUTCOMES, PRECISIONS

TABLES = {
    "events": EVENT_COLUMNS,
    "principals": PRINCIPAL_COLUMNS,
    "subjects": SUBJECT_COLUMNS,
    "tickets": TICKET_COLUMNS,
}


#: The grants detection reads, per backend (``(sqlite, postgresql)`` for
#: :meth:`Database.write_rows`), columns as :data:`GRANT_COLUMNS`: only grants whose ledger
#: entry is durable (``logged``; the workflow honours no other), the approvers and their
#: groups joined by ``|``, a revoked grant ending when it was revoked.
GRANT_EXPORTS = (
    "SELECT json_array(id, principal, subject, purpose, precision, "
    "(SELECT group_concat(value, '|') FROM json_each(approvers)), "
    "(SELECT group_concat(value, '|') FROM json_each(approver_groups)), starts, "
    "CASE WHEN revoked IS NOT NULL AND revoked < ends THEN revoked ELSE ends END, "
    "CASE WHEN break_glass THEN 'true' ELSE 'false' END) FROM grants WHERE logged",
    "SELECT id, principal, subject, purpose, precision, "
    "nullif(array_to_string(ARRAY(SELECT json_array_elements_text(approvers)), '|'), ''), "
    "nullif(array_to_string(ARRAY(SELECT json_array_elements_text(approver_groups)), '|'), ''), "
    "to_char(starts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), "
    "to_char(least(ends, coalesce(revoked, ends)) AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD HH24:MI:SS.US'), "
    "CASE WHEN break_glass THEN 'true' ELSE 'false' END FROM grants WHERE logged",
)


def write_grants(db: Database, path: Path) -> WrittenRows:
    """Write every durable grant for DuckDB (:data:`GRANT_EXPORTS`). Raises
    :class:`StoreUnavailable`."""
    return db.write_rows(path, sqlite=GRANT_EXPORTS[0], postgresql=GRANT_EXPORTS[1])


#: How both readers parse the times the database writes (what SQLite stores, and what the
#: exports of :data:`custos.directory.DIRECTORY_EXPORTS` write on PostgreSQL).
STORED_TIME = "%Y-%m-%d %H:%M:%S.%f"


def _read_csv(
    con: duckdb.DuckDBPyConnection, create: str, types: Mapping[str, str], path: Path
) -> None:
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in types.items())
    con.execute(
        f"{create} AS SELECT * FROM read_csv(?, header = false, "
        f"auto_detect = false, columns = {{{columns}}}, nullstr = '', quote = '\"', "
        f"escape = '\"', timestampformat = '{STORED_TIME}')",
        [str(path)],
    )


def _read_json_arrays(
    con: duckdb.DuckDBPyConnection, create: str, types: Mapping[str, str], path: Path
) -> None:
    """Load a file of one JSON array of strings per line (columns as in ``types``)."""
    columns = []
    for n, (name, kind) in enumerate(types.items(), start=1):
        if kind == "VARCHAR":
            columns.append(f"c[{n}] AS {name}")
        elif kind == "TIMESTAMP":
            columns.append(f"strptime(c[{n}], '{STORED_TIME}') AS {name}")
        else:
            columns.append(f"c[{n}]::{kind} AS {name}")
    con.execute(
        f"{create} AS SELECT {', '.join(columns)} FROM read_json(?, "
        "format = 'newline_delimited', records = false, columns = {'c': 'VARCHAR[]'})",
        [str(path)],
    )


def load_store(
    con: duckdb.DuckDBPyConnection, events: EventStore, directory: DirectoryStore
) -> int:
    """Copy the stored events and directory into ``con``; returns the number of events.

    Each table goes through a file in a private temporary folder, written by the database
    itself (:meth:`Database.write_rows`) and read by DuckDB's bulk readers: nothing of it is
    made into Python objects one row at a time. Raises :class:`StoreUnavailable`, and
    :class:`ConfigurationError` when the temporary folder cannot take the files.
    """
    with working_folder() as base:
        written = events.write_rows(base / "events")
        read_rows(con, "events", EVENT_COLUMNS, written)
        for table, (sqlite, postgresql) in DIRECTORY_EXPORTS.items():
            rows = directory.db.write_rows(
                base / table,
                sqlite=sqlite.format(where=""),
                postgresql=postgresql.format(where=""),
            )
            read_rows(con, table, TABLES[table], rows)
        read_rows(con, "grants", GRANT_COLUMNS, write_grants(events.db, base / "grants"))
    return written.count


@contextlib.contextmanager
def working_folder() -> Iterator[Path]:
    """A private temporary folder for the files the database writes for DuckDB, removed
    afterwards. Raises :class:`ConfigurationError` when it cannot take them (full, or not
    writable)."""
    try:
        with tempfile.TemporaryDirectory(prefix="custos-detect-") as folder:
            yield Path(folder)
    except OSError as exc:
        raise ConfigurationError(
            f"detection cannot write its working files in {tempfile.gettempdir()}: "
            f"{exc.strerror or type(exc).__name__}",
            hint="free space there, or point TMPDIR at a folder with room",
        ) from None


def read_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    types: Mapping[str, str],
    rows: WrittenRows,
    *,
    temporary: bool = False,
) -> None:
    """Make ``table`` in ``con`` (a temporary one with ``temporary``) of the rows a
    database wrote (:meth:`Database.write_rows`), with the columns and types of ``types``
    in order."""
    create = f"CREATE OR REPLACE {'TEMP ' if temporary else ''}TABLE {table}"
    if rows.format == "csv":
        _read_csv(con, create, types, rows.path)
    else:
        _read_json_arrays(con, create, types, rows.path)


def create_empty(con: duckdb.DuckDBPyConnection, table: str, types: Mapping[str, str]) -> None:
    """Make ``table`` in ``con`` with the columns and types of ``types``, empty, unless there
    is one."""
    columns = ", ".join(f"{name} {kind}" for name, kind in types.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")


def load_lists(
    con: duckdb.DuckDBPyConnection,
    table: str,
    types: Mapping[str, str],
    rows: Iterable[Sequence[str | None]],
) -> int:
    """Make ``table`` in ``con`` anew of ``rows`` made in Python (each value text, or None;
    times as :data:`STORED_TIME` writes them), with the columns of ``types``; returns how
    many. Through a file and DuckDB's JSON reader, as :func:`read_rows`: DuckDB's
    ``executemany`` inserts row by row (~1–2.5 ms a row). Raises
    :class:`ConfigurationError` when the temporary folder cannot take the rows."""
    count = 0
    with working_folder() as base:
        path = base / f"{table}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(list(row)) + "\n")
                count += 1
        con.execute(f"DROP TABLE IF EXISTS {table}")
        if count:
            read_rows(con, table, types, WrittenRows(path, "json_arrays", count))
        else:
            create_empty(con, table, types)
    return count


#: Columns that must be present and never null: what every rule reads (DESIGN.md, *Access
#: events*; an id for each directory record). The other columns may be absent: they are null.
REQUIRED = {
    "events": ("id", "time", "principal", "action", "subject", "category", "purpose", "decision"),
    "principals": ("id",),
    "subjects": ("id",),
    "tickets": ("id",),
    "grants": ("id", "principal", "subject", "starts", "ends"),
}
#: Closed vocabularies of the event format whose values the rules compare against.
_VOCABULARIES = {
    "action": ACTIONS,
    "decision": OUTCOMES,
    "precision": PRECISIONS,
    "explained": EXPLANATIONS,
}
#: What an event the guarded path explained as it decided must be (see
#: :func:`custos.policy.model.ticket_explanation`): the rules never check it again, so a
#: refusal, an export or break-glass claiming it would vanish from review.
_EXPLAINED_ONLY_IF = (
    "decision = 'allow' AND action <> 'export' AND NOT coalesce(break_glass, false) "
    "AND ticket IS NOT NULL"
)
_INTEGERS = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
}  # fmt: skip
_TIMESTAMPS = {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE"}


def literal(text: str) -> str:
    """``text`` as a DuckDB string literal (for the statements that take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def first_line(exc: BaseException) -> str:
    """What an error from DuckDB says, in one line (its name when it says nothing)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _column(table: str, path: Path, name: str, wanted: str, found: str | None) -> str:
    """The view's expression for column ``name`` of ``table``, stored as ``found``."""
    if found is None:
        if name in REQUIRED[table]:
            raise InvalidInput(f"{table}: {path} has no column {name!r}")
        return f"NULL::{wanted} AS {name}"
    quoted = '"' + name + '"'
    if found == wanted or (wanted == "BIGINT" and found in _INTEGERS):
        return f"{quoted}::{wanted} AS {name}" if found != wanted else quoted
    if wanted == "TIMESTAMP" and found in _TIMESTAMPS:
        return f"{quoted}::TIMESTAMP AS {name}"
    if wanted == "TIMESTAMP" and found == "TIMESTAMP WITH TIME ZONE":
        return f"timezone('UTC', {quoted}) AS {name}"  # the rules work in UTC
    raise InvalidInput(f"{table}: column {name!r} of {path} is {found}, not {wanted}")


def attach_parquet(con: duckdb.DuckDBPyConnection, files: Mapping[str, Path]) -> None:
    """Make each of ``events``, ``principals``, ``subjects``, ``tickets`` a view over the
    Parquet file of that name in ``files`` (columns as in :data:`TABLES`).

    Each file is checked first, once: it must be readable Parquet, hold the columns of
    :data:`REQUIRED` with no nulls, store every column as its type or a compatible one
    (any integer, any timestamp; one with a time zone is read in UTC), and use only the
    format's words for ``action``, ``decision`` and ``precision``. An events file may carry
    ``explained`` (``ticket``, ``own_ticket`` or null): the guarded path's own explanation of
    its decisions, which the rules take without looking at the ticket again. Whoever writes
    the files vouches for it as for the events themselves; it is refused on any row that is
    not an allowed access citing a ticket, or is an export or break-glass. Absent optional
    columns read as null. Raises :class:`InvalidInput` naming the table, file and column (and how
    many rows are at fault, never a value); no view is replaced before all four pass.
    """
    unknown = sorted(set(files) - set(TABLES) - {"grants"})
    missing = sorted(set(TABLES) - set(files))
    if unknown or missing:
        raise InvalidInput(
            "detection reads exactly the Parquet files "
            + ", ".join(TABLES)
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    views = {table: _checked_view(con, table, Path(files[table])) for table in TABLES}
    if "grants" in files:
        views["grants"] = _checked_view(con, "grants", Path(files["grants"]))
    else:
        # No grant facts: an empty table, so that no grant is doubted (see detect.grants).
        views["grants"] = (
            "SELECT "
            + ", ".join(f"NULL::{kind} AS {name}" for name, kind in GRANT_COLUMNS.items())
            + " WHERE false"
        )
    for table, select in views.items():
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {select}")


def _checked_view(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> str:
    source = f"read_parquet({literal(str(path))})"
    if not path.is_file():
        raise InvalidInput(f"{table}: no such Parquet file {path}")
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.Error as exc:
        raise InvalidInput(
            f"{table}: {path} is not a readable Parquet file ({first_line(exc)})"
        ) from None
    stored = {str(row[0]): str(row[1]) for row in described}
    columns = [
        _column(table, path, name, wanted, stored.get(name))
        for name, wanted in {**TABLES, "grants": GRANT_COLUMNS}[table].items()
    ]
    select = f"SELECT {', '.join(columns)} FROM {source}"
    checks = [f"count(*) FILTER (WHERE {name} IS NULL)" for name in REQUIRED[table]]
    words = {n: v for n, v in _VOCABULARIES.items() if table == "events" and n in stored}
    checks += [
        f"count(*) FILTER (WHERE {name} NOT IN ({', '.join(map(literal, sorted(vocabulary)))}))"
        for name, vocabulary in words.items()
    ]
    if "explained" in words:
        checks.append(
            f"count(*) FILTER (WHERE explained IS NOT NULL AND NOT ({_EXPLAINED_ONLY_IF}))"
        )
    try:
        counts = con.execute(f"SELECT {', '.join(checks)} FROM ({select})").fetchone()
    except duckdb.Error as exc:
        raise InvalidInput(f"{table}: cannot read {path} ({first_line(exc)})") from None
    assert counts is not None
    for name, count in zip(REQUIRED[table], counts, strict=False):
        if count:
            raise InvalidInput(f"{table}: column {name!r} of {path} is empty in {count:,} rows")
    start = len(REQUIRED[table])
    for name, count in zip(words, counts[start : start + len(words)], strict=True):
        if count:
            allowed = ", ".join(sorted(_VOCABULARIES[name]))
            raise InvalidInput(
                f"{table}: column {name!r} of {path} holds a value other than {allowed} "
                f"in {count:,} rows"
            )
    if "explained" in words and counts[start + len(words)]:
        raise InvalidInput(
            f"{table}: column 'explained' of {path} is set in "
            f"{counts[start + len(words)]:,} rows that are not allowed accesses citing a "
            "ticket (refusals, exports and break-glass are always reviewed)"
        )
    return select
