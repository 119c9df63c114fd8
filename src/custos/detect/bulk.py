"""Bulk accesses for detection: the ``bulk_accesses`` table the ``bulk_read`` rule reads.

A bulk access (:mod:`custos.store.bulk`) is one statement or call found in an audit log that
read a mapped table or resource without naming subjects: a scan, a count, a ``COPY``. It
names no subject, so it is no access event; it is loaded here whole on every run, as grants
and guarded SQL's refusals are (one row per statement, not per person read, so few).

``bulk_accesses(id, time, principal, mapped, actor, action, decision, object, category,
precision, scope, rows, digest)`` — ``principal`` is the mapped principal, or
``unmapped:<actor>`` when the mapping does not know the log's actor (``mapped`` false), so
that an alert still names who did it as the log names them.
"""

from __future__ import annotations

import json

import duckdb

from custos.detect.loading import STORED_TIME, read_rows, working_folder
from custos.store import Database, WrittenRows
from custos.store.bulk import BulkAccessStore

BULK_COLUMNS = {
    "id": "VARCHAR",
    "time": "TIMESTAMP",
    "principal": "VARCHAR",
    "mapped": "BOOLEAN",
    "actor": "VARCHAR",
    "action": "VARCHAR",
    "decision": "VARCHAR",
    "object": "VARCHAR",
    "category": "VARCHAR",
    "precision": "VARCHAR",
    "scope": "VARCHAR",
    "rows": "BIGINT",
    "digest": "VARCHAR",
}
#: What an alert names for a bulk access whose actor the mapping does not know.
UNMAPPED = "unmapped:"
_STORED = ("id", "time", "principal", "actor", "action", "decision", "object", "category",
           "precision", "scope", "rows", "digest")  # fmt: skip


def create_bulk_accesses(con: duckdb.DuckDBPyConnection) -> None:
    """Make an empty ``bulk_accesses`` table in ``con`` unless there is one (sources without
    a custos database, such as JSON Lines or Parquet files, have no bulk accesses)."""
    columns = ", ".join(f"{name} {kind}" for name, kind in BULK_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS bulk_accesses ({columns})")


def load_bulk_accesses(con: duckdb.DuckDBPyConnection, db: Database) -> int:
    """Read every stored bulk access of ``db`` into ``con``'s ``bulk_accesses`` (made
    anew); returns how many. Raises :class:`StoreUnavailable`, and
    :class:`ConfigurationError` when the temporary folder cannot take the rows."""
    count = 0
    # Through a file and DuckDB's bulk reader (as detect.loading does): DuckDB's executemany
    # inserts row by row, ~1 ms a row.
    with working_folder() as base:
        path = base / "bulk_accesses.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for found in BulkAccessStore(db).all_rows(_STORED):
                record = dict(zip(_STORED, found, strict=True))
                mapped = record["principal"] is not None
                row = [
                    record["id"],
                    record["time"].strftime(STORED_TIME),
                    record["principal"] if mapped else UNMAPPED + record["actor"],
                    "true" if mapped else "false",
                    record["actor"],
                    record["action"],
                    record["decision"],
                    record["object"],
                    record["category"],
                    record["precision"],
                    record["scope"],
                    None if record["rows"] is None else str(record["rows"]),
                    record["digest"],
                ]
                out.write(json.dumps(row) + "\n")
                count += 1
        con.execute("DROP TABLE IF EXISTS bulk_accesses")
        if count:
            read_rows(con, "bulk_accesses", BULK_COLUMNS, WrittenRows(path, "json_arrays", count))
        else:
            create_bulk_accesses(con)
    return count
