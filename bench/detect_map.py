"""What ``data_map_weakened`` costs a detection run: its ledger reading, incremental and whole,
against the whole ``custos detect`` run it is part of, in the same run.

Builds a fresh home (SQLite by default; PostgreSQL when ``CUSTOS_DATABASE_URL`` is set) with
the world of ``bench/detect.py`` (``--events`` access events stored as
``bench/detect_store.py`` stores them), a ledger of ``--entries`` entries (a thousandth of
them refused SQL queries, the rest oversight views: entries the rule must skip) and
``--maps`` data maps ledgered among them through ``Custos.data_map`` (every other one
weakening something). One ``custos detect`` run builds the mirror; then, best of 3:

- the baseline: ``Custos.detect()`` with nothing new (a continuous run's steady state);
- the rule's ledger step as continuous detection runs it (the mirror attached): with nothing
  new, and with one new map ledgered since the last run;
- the same step with no mirror (every ``data_map`` entry read and folded again), and, for
  scale, what ``sql_probing`` pays on every run for its own entries (``load_sql_events``).

Prints the figures and the ratios to the baseline; asserts nothing about speed. About a
few minutes at the defaults on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from custos.access import Custos
from custos.detect import DetectConfig, connect
from custos.detect.map_changes import load_map_changes
from custos.detect.mirror import CATALOG, open_mirror
from custos.detect.sql_events import load_sql_events
from custos.ledger.entries import OversightViewEntry, SqlRefusedEntry
from detect import generate  # the same world as bench/detect.py
from detect_store import store

COLUMNS = ("ip: ip_history", "city: {category: location, coarse: none}", "email: contact")


def sources(n: int) -> str:
    """Map ``n``: 40 tables, every other map with one column of table ``n % 40`` plain."""
    lines = ["sources:", "  app:", "    url: postgresql://reader@127.0.0.1:5432/app", "    tables:"]
    for t in range(40):
        lines += [f"      public.t{t}:", "        subject: user_id", "        columns:"]
        for column in COLUMNS:
            weak = n % 2 == 1 and t == n % 40 and column.startswith("ip")
            lines.append(f"          {'ip: plain' if weak else column}")
        lines.append(f"          c{n}: plain")  # every map differs
    return "\n".join(lines) + "\n"


def use(system: Custos, n: int) -> None:
    new = system.settings.home / "sources.yaml.new"
    new.write_text(sources(n), encoding="utf-8")
    os.replace(new, system.settings.home / "sources.yaml")
    system.data_map()


def fill(system: Custos, entries: int, maps: int) -> None:
    """``entries`` inert entries in batches, with ``maps`` maps spread among them."""
    when = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    batch, per_map = 5_000, max(1, entries // max(1, maps))
    n_map = 0
    for start in range(0, entries, batch):
        rows = []
        for i in range(start, min(entries, start + batch)):
            if i % 1000 == 0:
                rows.append(
                    SqlRefusedEntry(
                        time=when,
                        principal=f"emp-{i % 500}",
                        dataset="app",
                        purpose="support",
                        code="sql_rejected",
                        reason="a column is not in the data map",
                        sql_sha256="0" * 64,
                        data_map="0" * 64,
                        source="bench",
                    ).to_json()
                )
            else:
                rows.append(
                    OversightViewEntry(time=when, view="alerts", principal="emp-1").to_json()
                )
        system.ledger.append_many(rows)
        while n_map < maps and (n_map + 1) * per_map <= start + batch:
            use(system, n_map)
            n_map += 1
    while n_map < maps:
        use(system, n_map)
        n_map += 1


def best(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--maps", type=int, default=50)
    args = parser.parse_args()
    config = DetectConfig()
    with tempfile.TemporaryDirectory(prefix="custos-bench-") as tmp:
        started = time.perf_counter()
        files = generate(Path(tmp), args.events, 2)
        system = Custos.init(Path(tmp) / "home")
        store(system, files, "TIMESTAMP '2100-01-01'")
        fill(system, args.entries, args.maps)
        backend = "SQLite" if system.db.is_sqlite else "PostgreSQL"
        first = system.detect()
        weakened = [a for a in first.alerts if a.rule == "data_map_weakened"]
        print(
            f"{system.events.count():,} events, {system.ledger.size():,} ledger entries, "
            f"{args.maps} maps in {backend}; set up and first run in "
            f"{time.perf_counter() - started:.1f} s; {len(weakened)} data_map_weakened alerts"
        )
        assert len(weakened) == args.maps // 2, "every other map weakens one column"

        def full() -> None:
            con = connect(2)
            try:
                load_map_changes(con, system.db, config)
            finally:
                con.close()

        def sql_events() -> None:
            con = connect(2)
            try:
                load_sql_events(con, system.db)
            finally:
                con.close()

        t_run = best(lambda: system.detect())
        # As inside a run: the mirror attached (once; attaching is the run's cost anyway).
        con = connect(2)
        with open_mirror(system.settings.home, con, config):
            load_map_changes(con, system.db, config, catalog=CATALOG)
            t_idle = best(lambda: load_map_changes(con, system.db, config, catalog=CATALOG))
            ones = []
            for n in range(3):
                use(system, args.maps + 2 * n + 1)  # one more weakening map
                started = time.perf_counter()
                load_map_changes(con, system.db, config, catalog=CATALOG)
                ones.append(time.perf_counter() - started)
            t_one = min(ones)
        con.close()
        t_full = best(full)
        t_sql = best(sql_events)
        after = [a for a in system.detect().alerts if a.rule == "data_map_weakened"]
        assert len(after) == args.maps // 2 + 3

        print(f"baseline: custos detect, nothing new        {t_run * 1000:9.1f} ms")
        for name, value in (
            ("rule's step, nothing new (mirror)", t_idle),
            ("rule's step, one new map (mirror)", t_one),
            ("rule's step, every map (no mirror)", t_full),
            ("sql_probing's load_sql_events", t_sql),
        ):
            print(f"{name:<42} {value * 1000:9.1f} ms   {value / t_run:7.4f}× the run")


if __name__ == "__main__":
    main()
