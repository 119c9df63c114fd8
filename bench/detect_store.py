"""Detection from the custos database: ``custos detect``'s mirror, and a full load, against
fetching the same events' columns through the database driver, in the same run.

The baselines need the whole history, so a run that copied every stored event into DuckDB
would pay for all of them each time. This generates the world of ``bench/detect.py``
(principals, subjects, tickets, events), stores all but its last day in a fresh custos home
(SQLite by default; PostgreSQL when ``CUSTOS_DATABASE_URL`` is set), then times:

- the baseline: ``SELECT`` of the events' fourteen columns, every row fetched through the
  driver (what any loader that touches each row in Python pays at least), best of 2;
- a full load: :func:`custos.detect.load_store` (events and directory, written by the
  database itself and read by DuckDB's bulk readers), best of 2, then the rules over it;
- ``custos detect``'s first run (:func:`custos.detect.run_detection` with the home: the
  mirror is built, everything classified) and, after the last day's events are appended and
  a hundredth of the tickets reassigned through the store's own writers, its next run (only
  those copied and classified again). Both runs must find what a full load finds;
- then a run after ten tickets were removed (the mirror reads every directory id to drop
  them), which must find what a full load finds then, against a run with nothing changed.

Prints the figures and ratios; asserts nothing about speed. ``--events`` (default 1,000,000).
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from custos.access import Custos
from custos.detect import DetectConfig, Detector, EventStore, connect, load_store
from custos.detect.mirror import open_mirror
from custos.directory import DirectoryDocument
from detect import found_by, generate  # the same world as bench/detect.py


def store(system: Custos, files: dict[str, Path], cut: str) -> None:
    """Copy the generated Parquet world into the custos database, in batches: the directory,
    and the events before ``cut`` (numbered in the change sequence as the store numbers
    them)."""
    con = duckdb.connect()
    ts = "strftime({}, '%Y-%m-%d %H:%M:%S.%f')"
    utc = "" if system.db.is_sqlite else " || '+00'"
    selects = {
        "principals": (
            "INSERT INTO principals (id, name, kind, role, team, manager, country, status, "
            "groups, role_since, extra, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, '{}', 0)",
            f"SELECT id, id, kind, role, team, manager, country, status, "
            f"{ts.format('role_since')}{utc} FROM read_parquet(?)",
        ),
        "subjects": (
            "INSERT INTO subjects (id, handle, jurisdiction, protected, employee, extra, seq) "
            "VALUES (?, NULL, 'US', ?, ?, '{}', 0)",
            "SELECT id, CASE WHEN protected IS NULL THEN '[]' ELSE '[\"' || protected || '\"]' "
            "END, employee FROM read_parquet(?)",
        ),
        "tickets": (
            "INSERT INTO tickets (id, kind, subject, assignee, status, opened, closed, "
            "opened_by, extra, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', 0)",
            f"SELECT id, kind, subject, assignee, status, {ts.format('opened')}{utc}, "
            f"{ts.format('closed')}{utc}, opened_by FROM read_parquet(?)",
        ),
        "events": (
            "INSERT INTO access_events (id, time, principal, action, subject, category, "
            "purpose, ticket, decision, precision, records, source, extra, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            f"SELECT id, {ts.format('time')}{utc}, principal, action, subject, category, "
            "purpose, ticket, decision, precision, records, source, "
            f"CASE WHEN break_glass THEN '{json.dumps({'break_glass': True})}' ELSE '{{}}' END, "
            f"row_number() OVER () FROM read_parquet(?) WHERE time < {cut}",
        ),
    }
    for table, (insert, select) in selects.items():
        result = con.execute(select, [str(files[table])])
        with system.db.cursor() as cursor:
            while rows := result.fetchmany(50_000):
                cursor.executemany(insert, rows)
    stored = system.events.count()
    with system.db.cursor() as cursor:
        cursor.execute(
            "UPDATE event_sequence SET value = ?, rows = ?, store = ? WHERE id = 1",
            (stored, stored, secrets.token_hex(16)),
        )
    con.close()


def last_day(files: dict[str, Path], cut: str) -> list[dict[str, Any]]:
    """The events at or after ``cut``, in the access-event format."""
    con = duckdb.connect()
    cursor = con.execute(
        "SELECT id, strftime(time, '%Y-%m-%dT%H:%M:%SZ') AS time, principal, action, subject, "
        "category, purpose, ticket, decision, precision, records, source, break_glass "
        f"FROM read_parquet(?) WHERE time >= {cut}",
        [str(files["events"])],
    )
    names = [d[0] for d in cursor.description or ()]
    events = []
    for row in cursor.fetchall():
        event = {k: v for k, v in zip(names, row, strict=True) if v is not None}
        if not event.pop("break_glass", False):
            event.pop("break_glass", None)
        else:
            event["break_glass"] = True
        events.append(event)
    con.close()
    return events


def mirror_run(system: Custos, threads: int) -> tuple[float, float, int, frozenset[str]]:
    """One ``custos detect`` run's detection through the home's mirror: seconds in all, of
    which bringing the mirror up to date, events copied, and what the rules found."""
    config = DetectConfig()
    started = time.perf_counter()
    con = connect(threads)
    with open_mirror(system.settings.home, con, config) as mirror:
        update = mirror.refresh(system.events, system.directory)
        caught_up = time.perf_counter() - started
        found = found_by(Detector(con, config).run(mirror.kept))
    con.close()
    return time.perf_counter() - started, caught_up, update.copied_events, found


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
        con = duckdb.connect()
        row = con.execute(
            "SELECT max(time) - INTERVAL 1 DAY FROM read_parquet(?)", [str(files["events"])]
        ).fetchone()
        con.close()
        assert row is not None
        cut = f"TIMESTAMP '{row[0]}'"
        store(system, files, cut)
        backend = "SQLite" if system.db.is_sqlite else "PostgreSQL"
        print(
            f"stored {system.events.count():,} events (all but the last day) in {backend} in "
            f"{time.perf_counter() - started:.1f} s"
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

        first = mirror_run(system, args.threads)
        # The last day arrives through the store's own writers, and a hundredth of the
        # tickets are reassigned through the directory's.
        system.events.append(last_day(files, cut))
        tickets = system.directory.tickets()
        moved = [replace(t, assignee=tickets[0].assignee) for t in tickets[::100]]
        system.directory.merge(DirectoryDocument(tickets=tuple(moved)))
        n = system.events.count()
        t_fetch = best(fetch)
        t_load = best(lambda: load().close())
        con = load()
        started = time.perf_counter()
        full = found_by(Detector(con, DetectConfig()).run())
        t_rules = time.perf_counter() - started
        con.close()
        t_next, t_caught_up, copied, found = mirror_run(system, args.threads)
        # Tickets deleted in the ticket system: the run reads every id to drop them.
        for ticket in tickets[1::97][:10]:
            system.directory.remove_ticket(ticket.id, "bench: deleted")
        t_gone, t_gone_caught_up, _, found_gone = mirror_run(system, args.threads)
        con = load()
        full_gone = found_by(Detector(con, DetectConfig()).run())
        con.close()
        t_same, t_same_caught_up, _, _ = mirror_run(system, args.threads)
        ids = len(tickets) + len(system.directory.subjects()) + len(system.directory.principals())
        system.close()
    if found != full or not first[3] or found_gone != full_gone:
        raise SystemExit("the mirror's run found other alerts than a full load")
    print(
        f"driver fetch of the events' columns (baseline) {t_fetch:6.2f} s  "
        f"{t_fetch / n * 1e6:.1f} us/event"
    )
    print(
        f"load_store (events + directory into DuckDB)    {t_load:6.2f} s  "
        f"{t_load / n * 1e6:.1f} us/event  x{t_load / t_fetch:.2f} the driver fetch"
    )
    print(
        f"all rules over the loaded tables               {t_rules:6.2f} s  ({len(full):,} alerts)"
    )
    print(
        f"custos detect, first run (mirror built)        {first[0]:6.2f} s  "
        f"x{first[0] / t_fetch:.2f} the driver fetch"
    )
    print(
        f"custos detect, next run (a new day: {copied:,} events copied, {len(moved):,} tickets "
        f"reassigned) {t_next:.2f} s (mirror up to date in {t_caught_up:.2f} s)  "
        f"x{t_next / t_fetch:.2f} the driver fetch, x{t_next / (t_load + t_rules):.2f} a full "
        "load and the rules"
    )
    print(
        f"custos detect, after 10 tickets removed ({ids:,} directory ids read) {t_gone:.2f} s "
        f"(mirror up to date in {t_gone_caught_up:.2f} s); nothing changed {t_same:.2f} s "
        f"(in {t_same_caught_up:.2f} s)  x{t_gone_caught_up / t_same_caught_up:.2f} "
        "bringing it up to date"
    )


if __name__ == "__main__":
    main()
