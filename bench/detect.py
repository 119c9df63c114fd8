"""Detection speed: every rule over N access events on DuckDB, against a bare scan of the
same events, in the same run.

Generates a world with DuckDB's own SQL (no Python loop): principals in roles and teams,
subjects (some protected, some employees' accounts), tickets, and events that mostly cite
the ticket explaining them, with refusals, stray lookups, exports and break-glass mixed in,
each marked as custos's guarded path marks its own decisions (``explained``: ``ticket``, or
``own_ticket`` for tickets the principal opened; none for the rest). Writes everything to
Parquet, then times, with ``--threads`` (default 2):

- the bare scan: ``SELECT count(*), count(DISTINCT subject) FROM read_parquet(events)``
  (best of 3);
- all rules: :class:`custos.detect.Detector` over views of the same Parquet files (best of
  3, as the scan). Attaching the files checks them first (one pass); that is printed on its own.
- all rules again over the same events as if imported from other tools: their ``explained``
  column (what custos's guarded path writes on the decisions it let through on their ticket)
  nulled, so that every event is checked against the tickets. Both runs must find the same
  alerts.

- a run that keeps its classification (:class:`custos.detect.kept.Classification`, in a
  DuckDB file) as ``custos detect`` does: the state is built once over all but the last day
  of events, against the tickets as they were then (a hundredth of them since reassigned);
  then the last day's events arrive with the tickets as they are now, and the run classifies
  and counts the new day, classifies again the events citing a ticket that changed, and runs
  every rule over the whole history (best of 3, each from a copy of the same kept file). It
  must find exactly what the first run found.

Prints the figures and the ratios; asserts nothing about speed. ``--quick`` for 10^6 events.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from custos.detect import DetectConfig, Detector, Finding, attach_parquet, connect
from custos.detect.kept import Classification
from custos.detect.replay import PolicyReplay, ReplayPolicy
from custos.policy import PolicyEngine
from custos.policy.pack import DEFAULT_PACK, load_pack

ROLES = [
    ("support_agent", "support"),
    ("trust_safety_investigator", "trust_safety"),
    ("fraud_analyst", "fraud"),
    ("security_responder", "security_incident"),
    ("engineer", "product_debug"),
]


def generate(folder: Path, events: int, threads: int) -> dict[str, Path]:
    """Write principals, subjects, tickets and events Parquet files into ``folder``."""
    con = connect(threads)
    principals = max(500, events // 2000)
    subjects = max(10_000, events // 5)
    tickets = events // 4
    span_s = 30 * 86400
    roles = " ".join(f"WHEN {i} THEN '{r}'" for i, (r, _) in enumerate(ROLES))
    kinds = " ".join(f"WHEN {i} THEN '{k}'" for i, (_, k) in enumerate(ROLES))
    files = {
        name: folder / f"{name}.parquet" for name in ("principals", "subjects", "tickets", "events")
    }
    con.execute(
        f"""COPY (SELECT 'emp-' || i AS id, 'employee' AS kind,
                   CASE i % {len(ROLES)} {roles} END AS role,
                   'team-' || (i % {len(ROLES)}) || '-' || (i // 50) AS team,
                   NULL::VARCHAR AS manager, 'US' AS country,
                   CASE WHEN i % 97 = 0 THEN 'leaving' ELSE 'active' END AS status,
                   CASE WHEN i % 53 = 0 THEN TIMESTAMP '2026-01-10' END AS role_since
            FROM range({principals}) t(i)) TO '{files["principals"]}' (FORMAT parquet)"""
    )
    con.execute(
        f"""COPY (SELECT 'user-' || i AS id,
                   CASE WHEN i < {principals} THEN 'employee_account'
                        WHEN hash(i) % 1000 < 4 THEN 'journalist'
                        WHEN hash(i) % 1000 < 50 THEN 'minor' END AS protected,
                   CASE WHEN i < {principals} THEN 'emp-' || i END AS employee
            FROM range({subjects}) t(i)) TO '{files["subjects"]}' (FORMAT parquet)"""
    )
    con.execute(
        f"""COPY (SELECT 'T-' || t AS id,
                   CASE (t % {principals}) % {len(ROLES)} {kinds} END AS kind,
                   'user-' || (hash(t * 7 + 1) % {subjects}) AS subject,
                   'emp-' || (t % {principals}) AS assignee, 'open' AS status,
                   TIMESTAMP '2026-01-05' + to_seconds((t * {span_s} // {tickets})::BIGINT)
                     AS opened,
                   TIMESTAMP '2026-01-06' + to_seconds((t * {span_s} // {tickets})::BIGINT)
                     AS closed,
                   CASE WHEN hash(t) % 100 < 5 THEN 'emp-' || (t % {principals})
                        ELSE 'subject' END AS opened_by
            FROM range({tickets}) r(t)) TO '{files["tickets"]}' (FORMAT parquet)"""
    )
    con.execute(
        f"""COPY (
            WITH e AS (SELECT i, i // 4 AS t, hash(i * 31 + 7) % 1000 AS roll
                       FROM range({events}) r(i))
            SELECT 'ev-' || i AS id,
                   TIMESTAMP '2026-01-05' + to_seconds((t * {span_s} // {tickets} + (i % 4) * 600
                     + 3600)::BIGINT) AS time,
                   'emp-' || (t % {principals}) AS principal,
                   CASE WHEN roll < 2 THEN 'export' WHEN roll < 20 THEN 'search' ELSE 'read' END
                     AS action,
                   CASE WHEN roll BETWEEN 990 AND 999 THEN 'user-' || (hash(i) % {subjects})
                        ELSE 'user-' || (hash(t * 7 + 1) % {subjects}) END AS subject,
                   CASE WHEN roll >= 990
                        THEN (['profile', 'device', 'content'])[1 + (hash(i) % 3)::INT]
                        ELSE (['profile', 'contact', 'ip_history', 'device', 'content', 'payment',
                              'messages', 'location', 'social_graph',
                              'credentials'])[1 + (hash(i) % 10)::INT] END AS category,
                   CASE (t % {principals}) % {len(ROLES)} {kinds} END AS purpose,
                   CASE WHEN roll < 990 THEN 'T-' || t END AS ticket,
                   CASE WHEN roll BETWEEN 960 AND 969 THEN 'deny' ELSE 'allow' END AS decision,
                   'coarse' AS precision,
                   CASE WHEN roll < 20 THEN 50 + roll * 10 ELSE 1 END::BIGINT AS records,
                   'bench' AS source, roll = 959 AS break_glass, false AS granted,
                   -- What custos's guarded path writes on its own decisions: allowed on the
                   -- cited ticket (assigned, about the subject, of the kind, open, opened by
                   -- someone else), not an export, not break-glass. explained_as_decided()
                   -- holds this to the tickets file.
                   CASE WHEN roll >= 2 AND roll < 990 AND roll NOT BETWEEN 959 AND 969
                        THEN CASE WHEN hash(t) % 100 >= 5 THEN 'ticket' ELSE 'own_ticket' END
                   END AS explained
            FROM e) TO '{files["events"]}' (FORMAT parquet)"""
    )
    con.close()
    return files


def explained_as_decided(files: dict[str, Path], threads: int) -> int:
    """How many events say the guarded path explained them; raises unless each of them is
    explained by the ticket it cites (the generator's shortcut held to its definition)."""
    con = connect(threads)
    events, tickets = (str(files[n]).replace("'", "''") for n in ("events", "tickets"))
    row = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE NOT coalesce(
                   t.assignee = e.principal AND t.subject = e.subject AND t.kind = e.purpose
                   AND t.status = 'open' AND e.time BETWEEN t.opened AND t.closed
                   AND t.opened_by IS DISTINCT FROM e.principal, false))
            FROM read_parquet('{events}') e LEFT JOIN read_parquet('{tickets}') t
              ON t.id = e.ticket
            WHERE e.explained = 'ticket'"""
    ).fetchone()
    con.close()
    assert row is not None
    if row[1]:
        raise SystemExit(f"the generator marked {row[1]:,} events explained that are not")
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="10^6 events")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the Parquet files here and keep them")
    args = parser.parse_args()
    events = 1_000_000 if args.quick else args.events
    with tempfile.TemporaryDirectory(prefix="custos-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        files = generate(folder, events, args.threads)
        size = files["events"].stat().st_size / 2**20
        print(
            f"generated {events:,} events ({size:.0f} MiB Parquet) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        con = connect(args.threads)
        path = str(files["events"]).replace("'", "''")
        scans = []
        for _ in range(3):
            started = time.perf_counter()
            row = con.execute(
                f"SELECT count(*), count(DISTINCT subject) FROM read_parquet('{path}')"
            ).fetchone()
            scans.append(time.perf_counter() - started)
        scan = min(scans)
        assert row is not None
        print(f"bare scan: {scan:.2f} s (best of 3; {row[0]:,} events, {row[1]:,} subjects)")
        started = time.perf_counter()
        attach_parquet(con, files)  # checks every file once (columns, nulls, vocabularies)
        attached = time.perf_counter() - started
        print(f"checking the Parquet files: {attached:.2f} s (once per run, not in the ratio)")
        explained = explained_as_decided(files, args.threads)
        print(
            f"{explained:,} of the events ({explained / events:.0%}) were explained by their "
            "ticket as custos decided them"
        )
        own = _all_rules(con, args.threads)
        kept = folder / "kept.duckdb"
        told = _kept_run(con, kept, args.threads, told=True, label="kept, a new day")
        compared = _kept_run(
            con, kept, args.threads, told=False, label="kept, a new day, tickets compared"
        )
        # The same events as if imported from other tools: none explained as decided, so the
        # first pass checks every one of them against the tickets.
        con.execute("ALTER VIEW events RENAME TO events_as_decided")
        con.execute(
            "CREATE VIEW events AS "
            "SELECT * REPLACE (NULL::VARCHAR AS explained) FROM events_as_decided"
        )
        imported = _all_rules(con, args.threads, "as imported, from nothing")
        told_imported = _kept_run(
            con, kept, args.threads, told=True, label="as imported, kept, a new day"
        )
        replayed, replayed_day = _replay(con, folder / "replay.duckdb")
        con.close()
        for name, run in (
            ("as imported", imported),
            ("kept", told),
            ("kept, tickets compared", compared),
            ("as imported, kept", told_imported),
        ):
            if run[1] != own[1]:
                raise SystemExit(f"the run {name} found other alerts than the first")
        print("ratios to the bare scan (goal <= 5x):")
        for name, run in (
            ("kept, a new day (as custos detect runs)", told),
            ("kept, a new day, every ticket compared (Parquet snapshots)", compared),
            ("as imported, kept, a new day", told_imported),
            ("all rules from nothing", own),
            ("as imported, all rules from nothing", imported),
        ):
            print(f"  {name}: {run[0] / scan:.2f}x")
        print("policy replay of every event as imported, ratio to the bare scan (goal <= 5x):")
        print(f"  replay alone, from nothing: {replayed / scan:.2f}x")
        both = (imported[0] + replayed) / scan
        print(f"  as imported, all rules and replay from nothing: {both:.2f}x")
        print(f"  replay of a new day, kept: {replayed_day / scan:.2f}x")
        print(
            "  as imported, kept, a new day, with its replay: "
            f"{(told_imported[0] + replayed_day) / scan:.2f}x"
        )


Found = frozenset[str]


def _all_rules(
    con: duckdb.DuckDBPyConnection, threads: int, label: str = "all rules from nothing"
) -> tuple[float, Found]:
    """Run every rule three times over ``con``'s tables; prints and returns the best run's
    figures (total seconds, then the fingerprints of what it found)."""
    runs = []
    for _ in range(3):
        detector = Detector(con, DetectConfig())
        started = time.perf_counter()
        detector.prepare()
        prepared = time.perf_counter() - started
        findings = detector.run_rules()
        runs.append((time.perf_counter() - started, prepared, found_by(findings)))
    total, prepared, found = min(runs, key=lambda run: run[0])
    print(
        f"{label}: {total:.2f} s (best of 3; classification and baselines "
        f"{prepared:.2f} s, rules {total - prepared:.2f} s); {len(found):,} alerts; "
        f"{threads} threads"
    )
    return total, found


def found_by(findings: list[Finding]) -> Found:
    """What a run found, comparable between runs: fingerprint, explanation and evidence."""
    return frozenset(f.fingerprint + f.explanation + ",".join(f.events) for f in findings)


def _kept_run(
    con: duckdb.DuckDBPyConnection, path: Path, threads: int, *, told: bool, label: str
) -> tuple[float, Found]:
    """Build a kept classification over all but the last day (tickets as they were then),
    then time three runs, each from a copy of it, that take in the last day and the tickets
    as they are now and run every rule; prints and returns the best run's figures.

    ``told``: the run is told which tickets were written since the last (as the custos
    directory tells ``custos detect``: the day's new tickets and the reassigned ones);
    otherwise it compares every ticket with its snapshot (Parquet snapshots of a lake).
    """
    con.execute("ALTER VIEW events RENAME TO all_events")
    con.execute("ALTER VIEW tickets RENAME TO all_tickets")
    row = con.execute("SELECT max(time) - INTERVAL 1 DAY FROM all_events").fetchone()
    assert row is not None
    cut = f"TIMESTAMP '{row[0]}'"
    # The history, and the tickets as they were at its end: those opened by then, a
    # hundredth of them assigned to someone else at the time.
    con.execute(f"CREATE VIEW events AS SELECT * FROM all_events WHERE time < {cut}")
    con.execute(
        f"""CREATE VIEW tickets AS
            SELECT * REPLACE (CASE WHEN hash(id) % 100 = 0 THEN 'emp-0' ELSE assignee END
                              AS assignee)
            FROM all_tickets WHERE opened IS NULL OR opened < {cut}"""
    )
    built = path.with_suffix(".built")
    built.unlink(missing_ok=True)
    con.execute(f"ATTACH '{built}' AS kept")
    started = time.perf_counter()
    kept = Classification(con, DetectConfig(), "kept", told=told)
    kept.open()
    kept.start()
    con.execute("CHECKPOINT kept")
    con.execute("DETACH kept")
    elapsed = time.perf_counter() - started
    print(
        f"{label}: kept classification of all but the last day, built once in {elapsed:.2f} s "
        f"({built.stat().st_size / 2**20:.0f} MiB)"
    )
    # Now: every event, and the tickets as they are. What the directory says it wrote
    # since: the day's new tickets and the reassigned ones.
    con.execute("CREATE OR REPLACE VIEW events AS SELECT * FROM all_events")
    con.execute("CREATE OR REPLACE VIEW tickets AS SELECT * FROM all_tickets")
    written = f"(SELECT * FROM all_tickets WHERE opened >= {cut} OR hash(id) % 100 = 0)"
    runs = []
    for _ in range(3):
        shutil.copyfile(built, path)
        con.execute(f"ATTACH '{path}' AS kept")
        started = time.perf_counter()
        kept = Classification(con, DetectConfig(), "kept", told=told)
        con.execute("BEGIN")
        if kept.open():
            raise SystemExit("the kept classification was not reused")
        changed = kept.follow_tickets(written if told else None)
        kept.add(f"(SELECT * FROM all_events WHERE time >= {cut})")
        con.execute("COMMIT")
        caught_up = time.perf_counter() - started
        findings = Detector(con, DetectConfig()).run(kept)
        runs.append((time.perf_counter() - started, caught_up, changed, found_by(findings)))
        con.execute("DETACH kept")
    total, caught_up, changed, found = min(runs, key=lambda run: run[0])
    print(
        f"{label}: {total:.2f} s (best of 3; the day and {changed:,} changed tickets "
        f"taken in {caught_up:.2f} s, then every rule); {len(found):,} alerts; "
        f"{threads} threads"
    )
    con.execute("DROP VIEW events")
    con.execute("DROP VIEW tickets")
    con.execute("ALTER VIEW all_events RENAME TO events")
    con.execute("ALTER VIEW all_tickets RENAME TO tickets")
    return total, found


def _replay(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[float, float]:
    """Policy replay of the events as imported: from nothing over every event (the directory
    as the only state, Cedar deciding every distinct key), then, kept in a DuckDB file, all
    but the last day first (checkpointed, as a run's commit leaves it) and the last day
    timed on its own, with the alerts it changed (what ``custos detect`` records). Both
    must find the same refusals. Prints and returns both times."""
    engine = PolicyEngine(load_pack(Path(str(DEFAULT_PACK))))
    policy = ReplayPolicy(engine, lambda jurisdiction: (jurisdiction,))
    started = time.perf_counter()
    replay = PolicyReplay(con, policy, DetectConfig())
    replay.history_from_directory()
    run = replay.replay("SELECT * FROM events")
    found = replay.findings()
    whole = time.perf_counter() - started
    print(
        f"policy replay, every event: {whole:.2f} s; {run.events:,} events let through, "
        f"{run.keys:,} distinct keys, {run.decided:,} decided by Cedar, {run.found:,} refused, "
        f"{len(found):,} alerts (principal-days)"
    )
    row = con.execute("SELECT max(time) - INTERVAL 1 DAY FROM events").fetchone()
    assert row is not None
    cut = f"TIMESTAMP '{row[0]}'"
    path.unlink(missing_ok=True)
    con.execute(f"ATTACH '{path}' AS rp")
    kept = PolicyReplay(con, policy, DetectConfig(), "rp")
    kept.history_from_directory()
    before = kept.replay(f"SELECT * FROM events WHERE time < {cut}")
    kept.reported(kept.findings(pending=True))
    con.execute("CHECKPOINT rp")
    started = time.perf_counter()
    day = kept.replay(f"SELECT * FROM events WHERE time >= {cut}")
    changed = kept.findings(pending=True)
    new_day = time.perf_counter() - started
    everything = kept.findings()
    con.execute("DETACH rp")
    print(
        f"policy replay, kept, a new day: {new_day:.2f} s; {day.events:,} events, "
        f"{day.keys:,} keys not met before, {day.decided:,} new to Cedar, {day.found:,} "
        f"refused, {len(changed):,} alerts changed"
    )
    if before.found + day.found != run.found or found_by(everything) != found_by(found):
        raise SystemExit("policy replay kept found other refusals than from nothing")
    return whole, new_day


if __name__ == "__main__":
    main()
