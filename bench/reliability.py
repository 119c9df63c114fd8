"""Reliability counts: crashes, concurrent workers and tampering, for real, in one run.

- crash: ``custos serve --workers 2`` under load is killed with SIGKILL at N random moments;
  after each restart ``custos log verify`` runs, and at the end every acknowledged decision,
  release and approval request is looked up again;
- concurrency: 4 workers x 12 clients append at once; the log must be gapless and verify;
- tampering: a row updated, deleted, reordered, inserted: ``log verify`` must name an index.

Prints counts; asserts nothing. Uses SQLite in a temporary home, or PostgreSQL when
``CUSTOS_DATABASE_URL`` is set. ``--kills N`` (default 20).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api.conftest import populate
from tests.reliability.harness import (
    Acknowledged,
    Server,
    check_promises,
    load,
    verify_log,
)

from custos.access import Custos


def crash(home: Path, token: str, kills: int) -> tuple[Acknowledged, int]:
    rng = random.Random(7)
    seen = Acknowledged()
    server = Server(home, workers=2)
    verified = 0
    for _ in range(kills):
        server.start(token)
        stop = threading.Event()
        clients = [
            threading.Thread(target=load, args=(server.url, token, seen, stop, rng.random()))
            for _ in range(6)
        ]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.2, 1.0))
        server.kill()
        stop.set()
        for c in clients:
            c.join()
        verified += verify_log(home).returncode == 0
    return seen, verified


def concurrency(home: Path, token: str) -> tuple[Acknowledged, float]:
    seen = Acknowledged()
    server = Server(home, workers=4)
    server.start(token)
    stop = threading.Event()
    clients = [
        threading.Thread(target=load, args=(server.url, token, seen, stop, n)) for n in range(12)
    ]
    start = time.perf_counter()
    for c in clients:
        c.start()
    time.sleep(5)
    stop.set()
    for c in clients:
        c.join()
    elapsed = time.perf_counter() - start
    server.kill()
    return seen, elapsed


def tamper(system: Custos, home: Path) -> dict[str, str]:
    """Each kind of tampering on a copy-free basis: apply, verify, undo."""
    found: dict[str, str] = {}
    size = system.ledger.size()
    target = size // 2
    original = system.ledger.entry(target)

    def run(kind: str, do: list[str], undo: list[str], **params: object) -> None:
        with system.db.engine.begin() as conn:
            for statement in do:
                conn.execute(text(statement), params)
        report = verify_log(home)
        try:
            body = json.loads(report.stdout)
            where = f"first bad index {body.get('first_bad_index')} (tampered at {target})"
        except ValueError:
            where = (report.stdout + report.stderr).strip()[:100]
        found[kind] = f"verify exit {report.returncode}, {where}"
        with system.db.engine.begin() as conn:
            for statement in undo:
                conn.execute(text(statement), params)

    run(
        "update",
        ["UPDATE ledger_entries SET entry = :e WHERE idx = :i"],
        ["UPDATE ledger_entries SET entry = :o WHERE idx = :i"],
        e=b'{"type":"forged"}',
        o=original,
        i=target,
    )
    run(
        "reorder",
        [
            "UPDATE ledger_entries SET idx = -1 WHERE idx = :i",
            "UPDATE ledger_entries SET idx = :i WHERE idx = :j",
            "UPDATE ledger_entries SET idx = :j WHERE idx = -1",
        ],
        [
            "UPDATE ledger_entries SET idx = -1 WHERE idx = :i",
            "UPDATE ledger_entries SET idx = :i WHERE idx = :j",
            "UPDATE ledger_entries SET idx = :j WHERE idx = -1",
        ],
        i=target,
        j=target + 1,
    )
    run(
        "delete",
        ["UPDATE ledger_entries SET idx = -5 WHERE idx = :i"],
        ["UPDATE ledger_entries SET idx = :i WHERE idx = -5"],
        i=target,
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="custos-reliability-")) / "home"
    system = Custos.init(home)
    token = populate(system)["ts-tool"]

    seen, verified = crash(home, token, args.kills)
    system.approvals.flush()
    counts = check_promises(system, seen)
    print(
        f"crash: {args.kills} SIGKILLs under load; log verified after {verified} of "
        f"{args.kills} restarts"
    )
    print(
        f"       acknowledged and found again: {counts['decisions']} decisions, "
        f"{counts['releases']} releases, {counts['requests']} approval requests; "
        f"{seen.errors} requests cut off by the kills (never acknowledged)"
    )

    before = system.ledger.size()
    seen, elapsed = concurrency(home, token)
    after = system.ledger.size()
    ids = [d["event_id"] for d in seen.decisions]
    print(
        f"concurrency: 4 workers x 12 clients for {elapsed:.0f} s: {len(seen.decisions)} "
        f"acknowledged, {after - before} entries appended, duplicates "
        f"{len(ids) - len(set(ids))}, verify exit {verify_log(home).returncode}"
    )
    check_promises(system, seen)

    for kind, outcome in tamper(system, home).items():
        print(f"tamper {kind:8s} -> {outcome}")
    print(f"after undoing: verify exit {verify_log(home).returncode}")


if __name__ == "__main__":
    sys.exit(main())
