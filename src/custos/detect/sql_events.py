"""Guarded SQL's own traces for detection: ``sql_refused`` and ``aggregate_decision`` ledger
entries, as rows of the ``sql_events`` table the ``sql_probing`` rule reads.

Neither entry names a subject (a refused query was never decided per person; an aggregate
counts many), and an access event must name one, so they are not access events: inventing a
subject would put a stranger's name on the probing. They are read from the ledger itself
when detection runs, the way the event feed reads decisions: what the rule sees is exactly
what was logged, and an entry that is not in the ledger does not count.

``sql_events(id, time, principal, kind, query, action, dataset, category, purpose, ticket,
decision, code)`` — ``id`` is ``ledger-<index>`` (the entry's place in the ledger, where an
auditor finds it); ``kind`` is ``refused`` (the analyzer would not run the text: ``decision``
``deny``, action ``search``, ``code`` its refusal code) or ``aggregate`` (one category of a
count decided, ``decision`` as logged); ``query`` groups the rows of one query (an aggregate
is decided once per category).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import duckdb
from sqlalchemy import text

from custos.detect.loading import STORED_TIME, create_empty, load_lists
from custos.store import Database
from custos.times import utc_instant

#: The ledger entry types the table holds.
SQL_ENTRY_TYPES = ("sql_refused", "aggregate_decision")
SQL_EVENT_COLUMNS = {
    "id": "VARCHAR",
    "time": "TIMESTAMP",
    "principal": "VARCHAR",
    "kind": "VARCHAR",
    "query": "VARCHAR",
    "action": "VARCHAR",
    "dataset": "VARCHAR",
    "category": "VARCHAR",
    "purpose": "VARCHAR",
    "ticket": "VARCHAR",
    "decision": "VARCHAR",
    "code": "VARCHAR",
}


def sql_event(index: int, entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``sql_events`` row of ledger entry ``index`` (its JSON), or None for an entry of
    another type or one missing what the rule needs (principal, time). Never raises."""
    kind = entry.get("type")
    if kind not in SQL_ENTRY_TYPES:
        return None
    principal, when = entry.get("principal"), entry.get("time")
    if not isinstance(principal, str) or not isinstance(when, str):
        return None
    try:
        time = utc_instant(when)
    except ValueError:
        return None

    def word(name: str) -> str | None:
        value = entry.get(name)
        return value if isinstance(value, str) else None

    refused = kind == "sql_refused"
    dataset, purpose = word("dataset"), word("purpose")
    return {
        "id": f"ledger-{index}",
        "time": time.replace(tzinfo=None),
        "principal": principal,
        "kind": "refused" if refused else "aggregate",
        # One aggregate query is decided once per category, in one batch at one time.
        "query": f"ledger-{index}" if refused else f"{principal}|{when}|{dataset}|{purpose}",
        "action": "search" if refused else (word("action") or "aggregate"),
        "dataset": dataset,
        "category": None if refused else word("category"),
        "purpose": purpose,
        "ticket": word("ticket"),
        "decision": "deny" if refused else (word("decision") or "deny"),
        "code": word("code") if refused else None,
    }


def _entries(db: Database) -> Iterator[tuple[int, bytes]]:
    """Ledger entries that may be of :data:`SQL_ENTRY_TYPES` (their canonical JSON names the
    type as ``"type":"…"``), in index order; :func:`sql_event` checks each."""
    marks = {f"m{n}": f'"type":"{kind}"'.encode() for n, kind in enumerate(SQL_ENTRY_TYPES)}
    # Bytes searched in bytes: the scan never decodes an entry that is not wanted.
    test = "instr(entry, :{0}) > 0" if db.is_sqlite else "position(:{0} in entry) > 0"
    where = " OR ".join(test.format(name) for name in marks)
    query = text(f"SELECT idx, entry FROM ledger_entries WHERE {where} ORDER BY idx")  # noqa: S608 - only fixed names
    with db.session() as session:
        for idx, raw in session.execute(query, marks):
            yield int(idx), bytes(raw)


def create_sql_events(con: duckdb.DuckDBPyConnection) -> None:
    """Make an empty ``sql_events`` table in ``con`` unless there is one (sources without a
    ledger, such as JSON Lines or Parquet files, have no guarded SQL)."""
    create_empty(con, "sql_events", SQL_EVENT_COLUMNS)


def load_sql_events(con: duckdb.DuckDBPyConnection, db: Database) -> int:
    """Read every ``sql_refused`` and ``aggregate_decision`` entry of ``db``'s ledger into
    ``con``'s ``sql_events`` (made anew); returns how many rows. Raises
    :class:`StoreUnavailable`, and :class:`ConfigurationError` when the temporary folder
    cannot take the rows."""
    names = list(SQL_EVENT_COLUMNS)

    def rows() -> Iterator[list[Any]]:
        for index, raw in _entries(db):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            row = sql_event(index, entry) if isinstance(entry, dict) else None
            if row is not None:
                row["time"] = row["time"].strftime(STORED_TIME)
                yield [row[name] for name in names]

    return load_lists(con, "sql_events", SQL_EVENT_COLUMNS, rows())
