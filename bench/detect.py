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

Prints the figures and the ratios; asserts nothing about speed. ``--quick`` for 10^6 events.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from custos.detect import DetectConfig, Detector, attach_parquet, connect

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
        # The same events as if imported from other tools: none explained as decided, so the
        # first pass checks every one of them against the tickets.
        con.execute("ALTER VIEW events RENAME TO events_as_decided")
        con.execute(
            "CREATE VIEW events AS "
            "SELECT * REPLACE (NULL::VARCHAR AS explained) FROM events_as_decided"
        )
        imported = _all_rules(con, args.threads, "imported (none explained as decided)")
        con.close()
        if own[1] != imported[1]:
            raise SystemExit(f"the two runs found {own[1]:,} and {imported[1]:,} alerts")
        print(f"ratio all rules / bare scan: {own[0] / scan:.2f}x (goal <= 5x)")
        print(f"ratio as imported / bare scan: {imported[0] / scan:.2f}x")


def _all_rules(
    con: duckdb.DuckDBPyConnection, threads: int, label: str = "all rules"
) -> tuple[float, int]:
    """Run every rule three times over ``con``'s tables; prints and returns the best run's
    figures (total seconds, then the number of alerts)."""
    runs = []
    for _ in range(3):
        detector = Detector(con, DetectConfig())
        started = time.perf_counter()
        detector.prepare()
        prepared = time.perf_counter() - started
        findings = detector.run_rules()
        runs.append((time.perf_counter() - started, prepared, len(findings)))
    total, prepared, alerts = min(runs)
    print(
        f"{label}: {total:.2f} s (best of 3; classification and baselines "
        f"{prepared:.2f} s, rules {total - prepared:.2f} s); {alerts:,} alerts; "
        f"{threads} threads"
    )
    return total, alerts


if __name__ == "__main__":
    main()
