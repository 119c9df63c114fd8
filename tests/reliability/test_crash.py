"""Kill the service with SIGKILL under load, again and again; after every restart the log
verifies, everything acknowledged is in it, and no approval is half-applied. Then four
workers appending at once still make one gapless, verified log."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from custos.access import Custos
from tests.api.conftest import populate
from tests.reliability.harness import Acknowledged, Server, check_promises, load, verify_log

KILLS = 20


def test_sigkill_under_load_loses_nothing_acknowledged(system: Custos, home: Path) -> None:
    tokens = populate(system)
    token = tokens["ts-tool"]
    rng = random.Random(20261125)
    seen = Acknowledged()
    server = Server(home, workers=2)
    for _round in range(KILLS):
        server.start(token)
        stop = threading.Event()
        clients = [
            threading.Thread(target=load, args=(server.url, token, seen, stop, rng.random()))
            for _ in range(6)
        ]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.2, 1.0))  # a random moment under load
        server.kill()
        stop.set()
        for c in clients:
            c.join()
        verified = verify_log(home)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    system.approvals.flush()  # journal entries left by a kill are appended now
    counts = check_promises(system, seen)
    assert counts["decisions"] > KILLS  # the load really ran
    assert counts["releases"] > 0
    final = verify_log(home)
    assert final.returncode == 0, final.stdout


def test_four_workers_make_one_gapless_log(system: Custos, home: Path) -> None:
    tokens = populate(system)
    token = tokens["ts-tool"]
    before = system.ledger.size()
    seen = Acknowledged()
    server = Server(home, workers=4)
    server.start(token)
    try:
        stop = threading.Event()
        clients = [
            threading.Thread(target=load, args=(server.url, token, seen, stop, n))
            for n in range(12)
        ]
        for c in clients:
            c.start()
        time.sleep(4)
        stop.set()
        for c in clients:
            c.join()
    finally:
        server.kill()
    indexes = [d["ledger_index"] for d in seen.decisions]
    assert len(indexes) == len(set(indexes))  # no duplicates
    entries = [json.loads(e) for _, e in system.ledger.entries(before, system.ledger.size())]
    decision_ids = [e["id"] for e in entries if e["type"] == "decision"]
    assert len(decision_ids) == len(set(decision_ids))
    assert {d["event_id"] for d in seen.decisions} <= set(decision_ids)
    # Gapless: indexes run 0..size-1 with no hole (verify recomputes every one).
    assert len(system.ledger.entries(0, system.ledger.size())) == system.ledger.size()
    verified = verify_log(home)
    assert verified.returncode == 0, verified.stdout
    check_promises(system, seen)
