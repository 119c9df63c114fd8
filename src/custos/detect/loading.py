"""Getting the four tables the rules read into DuckDB: from the custos database (through
CSV files in a private temporary folder), or as views over Parquet files."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from custos.detect.engine import (
    EVENT_COLUMNS,
    PRINCIPAL_COLUMNS,
    SUBJECT_COLUMNS,
    TICKET_COLUMNS,
)
from custos.detect.events import EventStore
from custos.directory import DirectoryDocument, DirectoryStore

TABLES = {
    "events": EVENT_COLUMNS,
    "principals": PRINCIPAL_COLUMNS,
    "subjects": SUBJECT_COLUMNS,
    "tickets": TICKET_COLUMNS,
}


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def directory_rows(document: DirectoryDocument) -> dict[str, list[Sequence[Any]]]:
    """The directory as rows in the column order of the rule tables."""
    return {
        "principals": [
            (p.id, p.kind, p.role, p.team, p.manager, p.country, p.status, _ts(p.role_since))
            for p in document.principals
        ],
        "subjects": [(s.id, "|".join(s.protected), s.employee) for s in document.subjects],
        "tickets": [
            (
                t.id,
                t.kind,
                t.subject,
                t.assignee,
                t.status,
                _ts(t.opened),
                _ts(t.closed),
                t.opened_by,
            )
            for t in document.tickets
        ],
    }


def _write(path: Path, rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def _read_csv(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    columns = ", ".join(f"'{name}': '{kind}'" for name, kind in TABLES[table].items())
    con.execute(
        f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_csv(?, header = false, "
        f"auto_detect = false, columns = {{{columns}}}, nullstr = '', quote = '\"', "
        "escape = '\"', timestampformat = '%Y-%m-%d %H:%M:%S.%f')",
        [str(path)],
    )


def load_store(
    con: duckdb.DuckDBPyConnection, events: EventStore, directory: DirectoryStore
) -> int:
    """Copy the stored events and directory into ``con``; returns the number of events."""
    document = DirectoryDocument(
        tuple(directory.principals()), tuple(directory.subjects()), tuple(directory.tickets())
    )
    with tempfile.TemporaryDirectory(prefix="custos-detect-") as folder:
        base = Path(folder)
        count = events.write_csv(base / "events.csv")
        _read_csv(con, "events", base / "events.csv")
        for table, rows in directory_rows(document).items():
            _write(base / f"{table}.csv", rows)
            _read_csv(con, table, base / f"{table}.csv")
    return count


def attach_parquet(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> None:
    """Make each of ``events``, ``principals``, ``subjects``, ``tickets`` a view over the
    Parquet file of that name in ``files`` (columns as in :data:`TABLES`)."""
    for table, path in files.items():
        names = ", ".join(TABLES[table])
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {names} FROM read_parquet('{path}')")
