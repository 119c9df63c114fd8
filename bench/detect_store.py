"""Detection from the custos database: loading the store into DuckDB, against fetching the
same events' columns through the database driver, in the same run.

``custos detect`` reads every stored event and the directory on each run (the baselines need
the history), so how fast the store reaches DuckDB bounds how fast detection can be. This
generates the world of ``bench/detect.py`` (principals, subjects, tickets, events), stores it
in a fresh custos home (SQLite by default; PostgreSQL when ``CUSTOS_DATABASE_URL`` is set),
then times, best of 2:

- the baseline: ``SELECT`` of the events' fourteen columns, every row fetched through the
  driver (what any loader that touches each row in Python pays at least);
- the load: :func:`custos.detect.load_store` (events and directory, written by the database
  itself and read by DuckDB's bulk readers);
- the rules over the loaded tables, for scale.

Prints the figures and ratios; asserts nothing. ``--events`` (default 1,000,000).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb

from custos.access import Custos
from custos.detect import DetectConfig, Detector, EventStore, connect, load_store
from detect import generate  # the same world as bench/detect.py


def store(system: Custos, files: dict[str, Path]) -> None:
    """Copy the generated Parquet world into the custos database, in batches."""
    con = duckdb.connect()
    ts = "strftime({}, '%Y-%m-%d %H:%M:%S.%f')"
    utc = "" if system.db.is_sqlite else " || '+00'"
    selects = {
        "principals": (
            "INSERT INTO principals (id, name, kind, role, team, manager, country, status, "
            "groups, role_since, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, '{}')",
            f"SELECT id, id, kind, role, team, manager, country, status, "
            f"{ts.format('role_since')}{utc} FROM read_parquet(?)",
        ),
        "subjects": (
            "INSERT INTO subjects (id, handle, jurisdiction, protected, employee, extra) "
            "VALUES (?, NULL, 'US', ?, ?, '{}')",
            "SELECT id, CASE WHEN protected IS NULL THEN '[]' ELSE '[\"' || protected || '\"]' "
            "END, employee FROM read_parquet(?)",
        ),
        "tickets": (
            "INSERT INTO tickets (id, kind, subject, assignee, status, opened, closed, "
            "opened_by, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}')",
            f"SELECT id, kind, subject, assignee, status, {ts.format('opened')}{utc}, "
            f"{ts.format('closed')}{utc}, opened_by FROM read_parquet(?)",
        ),
        "events": (
            "INSERT INTO access_events (id, time, principal, action, subject, category, "
            "purpose, ticket, decision, precision, records, source, extra) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            f"SELECT id, {ts.format('time')}{utc}, principal, action, subject, category, "
            "purpose, ticket, decision, precision, records, source, "
            f"CASE WHEN break_glass THEN '{json.dumps({'break_glass': True})}' ELSE '{{}}' END "
            "FROM read_parquet(?)",
        ),
    }
    for table, (insert, select) in selects.items():
        result = con.execute(select, [str(files[table])])
        with system.db.cursor() as cursor:
            while rows := result.fetchmany(50_000):
                cursor.executemany(insert, rows)
    con.close()


def best(fn: object, repeats: int = 2) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="custos-bench-") as tmp:
        started = time.perf_counter()
        files = generate(Path(tmp), args.events, args.threads)
        system = Custos.init(Path(tmp) / "home")
        store(system, files)
        backend = "SQLite" if system.db.is_sqlite else "PostgreSQL"
        print(
            f"stored {args.events:,} events in {backend} in {time.perf_counter() - started:.1f} s"
        )

        columns = (
            "id, time, principal, action, subject, category, purpose, ticket, decision, "
            "precision, records, source, extra, extra"
        )

        def fetch() -> None:
            with system.db.cursor() as cursor:
                for _ in cursor.chunks(f"SELECT {columns} FROM access_events", size=50_000):
                    pass

        def load() -> duckdb.DuckDBPyConnection:
            con = connect(args.threads)
            load_store(con, EventStore(system.db), system.directory)
            return con

        t_fetch = best(fetch)
        t_load = best(lambda: load().close())
        con = load()
        started = time.perf_counter()
        alerts = len(Detector(con, DetectConfig()).run())
        t_rules = time.perf_counter() - started
        con.close()
        system.close()
    n = args.events
    print(
        f"driver fetch of the events' columns (baseline) {t_fetch:6.2f} s  "
        f"{t_fetch / n * 1e6:.1f} us/event"
    )
    print(
        f"load_store (events + directory into DuckDB)    {t_load:6.2f} s  "
        f"{t_load / n * 1e6:.1f} us/event  x{t_load / t_fetch:.2f} the driver fetch"
    )
    print(f"all rules over the loaded tables               {t_rules:6.2f} s  ({alerts:,} alerts)")


if __name__ == "__main__":
    main()
