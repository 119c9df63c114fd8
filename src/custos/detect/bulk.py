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

from typing import Any

import duckdb

from custos.store import Database
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
    anew); returns how many. Raises :class:`StoreUnavailable`."""
    con.execute("DROP TABLE IF EXISTS bulk_accesses")
    create_bulk_accesses(con)
    rows: list[list[Any]] = []
    for found in BulkAccessStore(db).all_rows(_STORED):
        record = dict(zip(_STORED, found, strict=True))
        mapped = record["principal"] is not None
        rows.append(
            [
                record["id"],
                record["time"].replace(tzinfo=None),
                record["principal"] if mapped else UNMAPPED + record["actor"],
                mapped,
                record["actor"],
                record["action"],
                record["decision"],
                record["object"],
                record["category"],
                record["precision"],
                record["scope"],
                record["rows"],
                record["digest"],
            ]
        )
    if rows:
        marks = ", ".join("?" for _ in BULK_COLUMNS)
        con.executemany(f"INSERT INTO bulk_accesses VALUES ({marks})", rows)  # noqa: S608
    return len(rows)
