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

from collections.abc import Iterator

import duckdb

from custos.detect.loading import STORED_TIME, create_empty, load_lists
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
    create_empty(con, "bulk_accesses", BULK_COLUMNS)


def load_bulk_accesses(con: duckdb.DuckDBPyConnection, db: Database) -> int:
    """Read every stored bulk access of ``db`` into ``con``'s ``bulk_accesses`` (made
    anew); returns how many. Raises :class:`StoreUnavailable`, and
    :class:`ConfigurationError` when the temporary folder cannot take the rows."""

    def rows() -> Iterator[list[str | None]]:
        for found in BulkAccessStore(db).all_rows(_STORED):
            record = dict(zip(_STORED, found, strict=True))
            mapped = record["principal"] is not None
            yield [
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

    return load_lists(con, "bulk_accesses", BULK_COLUMNS, rows())
