"""Appends: group commit under concurrency, fail-closed errors, and durability across SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from custos.access import Custos
from custos.errors import InvalidInput, LedgerUnavailable
from custos.ledger import Spliced, canonical_json, verify_log


def test_concurrent_appends_form_one_gapless_log(system: Custos) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            receipt = system.ledger.append({"type": "test", "worker": n, "i": i})
            with lock:
                results.append(receipt.index)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    start = system.ledger.size()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(start, start + 400))
    system.ledger.checkpoint()
    assert verify_log(system.ledger, system.log_verifier).ok


def test_two_processes_appending_at_once_do_not_fork(system: Custos, home: Path) -> None:
    script = (
        "import sys\n"
        "from custos.access import Custos\n"
        "s = Custos.open()\n"
        "for i in range(60):\n"
        "    s.ledger.append_many([{'type': 'test', 'p': sys.argv[1], 'i': i}] * 3)\n"
    )
    start = system.ledger.size()
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], env={**os.environ})
        for n in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    assert system.ledger.size() == start + 3 * 60 * 3
    system.ledger.checkpoint()
    assert verify_log(system.ledger, system.log_verifier).ok


def test_non_json_entries_are_refused_before_anything_is_written(system: Custos) -> None:
    size = system.ledger.size()
    with pytest.raises(InvalidInput):
        system.ledger.append_many([{"ok": 1}, {"bad": object()}])
    assert system.ledger.size() == size


def test_an_unwritable_ledger_raises_ledger_unavailable(system: Custos) -> None:
    if system.db.is_sqlite:
        with system.db.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER no_more BEFORE INSERT ON ledger_entries "
                    "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
                )
            )
    else:
        with system.db.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE FUNCTION no_more() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'read-only'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER no_more BEFORE INSERT ON ledger_entries "
                    "FOR EACH ROW EXECUTE FUNCTION no_more()"
                )
            )
    size = system.ledger.size()
    with pytest.raises(LedgerUnavailable, match="access denied"):
        system.ledger.append({"type": "test"})
    assert system.ledger.size() == size


CHILD = r"""
import sys, threading
from custos.access import Custos
s = Custos.open()
out = open(sys.argv[1], "a", buffering=1)
lock = threading.Lock()
def work(n):
    i = 0
    while True:
        receipts = s.ledger.append_many([{"type": "test", "w": n, "i": i + k} for k in range(5)])
        i += 5
        with lock:
            for r in receipts:
                out.write(f"{r.index}\n")
for n in range(4):
    threading.Thread(target=work, args=(n,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.25])
def test_sigkill_during_heavy_appends_loses_nothing_acknowledged(
    system: Custos, tmp_path: Path, delay: float
) -> None:
    acked = tmp_path / "acked.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(acked)], env={**os.environ})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until appends are flowing, then kill mid-stream
        if acked.exists() and acked.read_text().count("\n") >= 40:
            break
        time.sleep(0.02)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    acknowledged = [int(line) for line in acked.read_text().split()]
    assert acknowledged, "the child acknowledged nothing before it was killed"
    reopened = Custos.open(system.settings.home)
    try:
        size = reopened.ledger.size()
        assert max(acknowledged) < size
        for index in acknowledged[-50:]:
            assert json.loads(reopened.ledger.entry(index))["type"] == "test"
        reopened.ledger.checkpoint()
        report = verify_log(reopened.ledger, reopened.log_verifier)
        assert report.ok, report.problems
        # and the log takes new appends after the crash
        assert reopened.ledger.append({"type": "after"}).index == size
    finally:
        reopened.close()


def test_a_spliced_entry_is_stored_as_the_canonical_json_of_the_whole(system: Custos) -> None:
    rows = [{"id": "user-1", "protected": ["journalist"]}, {"id": "user-2", "protected": []}]
    text = "[" + ",".join(canonical_json(row).decode() for row in rows) + "]"
    envelope = {"type": "test", "kind": "subject", "by": None}
    receipt = system.ledger.append_many([Spliced(envelope, "set", text), {"type": "test"}])[0]
    stored = system.ledger.entry(receipt.index)
    value = json.loads(stored)
    assert value == {**envelope, "set": rows, "salt": value["salt"]}
    assert canonical_json(value) == stored  # canonical, salted, as any entry
    system.ledger.checkpoint()
    assert verify_log(system.ledger, system.log_verifier).ok


@pytest.mark.parametrize(
    "spliced",
    [
        Spliced({"type": "test", "set": []}, "set", "[]"),  # the member twice
        Spliced({"type": "test", "subject": "user-42"}, "set", "[]"),  # a chain key
        Spliced({"type": "test"}, "set", '["\ud800"]'),  # not UTF-8
    ],
)
def test_a_spliced_entry_that_cannot_be_stored_as_given_is_refused(
    system: Custos, spliced: Spliced
) -> None:
    size = system.ledger.size()
    with pytest.raises(InvalidInput):
        system.ledger.append_many([{"type": "test"}, spliced])
    assert system.ledger.size() == size
