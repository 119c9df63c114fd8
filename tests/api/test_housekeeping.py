"""The service's own timers, on a real service over loopback: it signs checkpoints as the log
grows without anyone asking, and shreds records past retention at start-up and on schedule."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos
from custos.errors import ConfigurationError
from custos.ledger import SignedNote
from custos.ledger.notes import Checkpoint
from custos.policy import AccessRequest
from custos.store.vault import VaultKeyRow
from tests.api.conftest import populate, run_service
from tests.factories import SUPPORT_WORLD, load_org
from tests.reliability.harness import Server

INTERVAL = 0.5


def configured(system: Custos, **sections: Mapping[str, Any]) -> Custos:
    """The same installation with config.toml sections replaced (as ``config.toml`` would)."""
    extra = {**system.settings.extra, **sections}
    return Custos(dataclasses.replace(system.settings, extra=extra), system.db)


def wait_for(condition: Callable[[], bool], seconds: float) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test after ``seconds``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def covers(system: Custos, size: int) -> bool:
    """Whether the newest checkpoint covers the first ``size`` entries."""
    found = system.ledger.checkpoints()
    return bool(found) and found[-1][0] >= size


def test_the_service_signs_checkpoints_as_the_log_grows(system: Custos) -> None:
    """Entries appended with nobody asking for a checkpoint: one covering them is signed
    within about two intervals, and none while the log does not grow."""
    load_org(system, SUPPORT_WORLD)
    custos = configured(system, ledger={"checkpoint_interval": INTERVAL})
    latencies = []
    for _url, _app in run_service(custos):
        for round_ in range(3):
            custos.decide(AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1"))
            custos.ledger.append_many({"type": "test", "n": n} for n in range(20 + round_))
            size = custos.ledger.size()
            latencies.append(wait_for(partial(covers, custos, size), 6 * INTERVAL))
        quiet = len(custos.ledger.checkpoints())
        time.sleep(4 * INTERVAL)  # the log does not grow: nothing to sign
        assert len(custos.ledger.checkpoints()) == quiet
    assert max(latencies) <= 2 * INTERVAL + 0.5, latencies
    verifier = custos.log_verifier
    for size, root, note in custos.ledger.checkpoints():
        signed = SignedNote.parse(note)
        assert signed.verify(verifier)
        assert Checkpoint.parse_text(signed.text).size == size
        assert custos.ledger.root(size) == root
    assert custos.ledger.last_signed() == custos.ledger.checkpoints()[-1][:2]


def test_a_signer_that_fails_keeps_trying_and_says_so_once(
    system: Custos, caplog: pytest.LogCaptureFixture
) -> None:
    """A log that no longer extends what this host signed is never signed; the timer keeps
    running, says so once (without anything secret), and signs again once it is resolved."""
    custos = configured(system, ledger={"checkpoint_interval": 0.1})
    custos.ledger.append({"type": "test"})
    custos.ledger.checkpoint()
    head = custos.ledger.signed_head
    assert head is not None
    good = head.read_text()
    # As if this host had signed a larger tree than the database now holds (a truncation).
    head.write_text(f"{custos.ledger.size() + 5} {good.split()[1]}\n")
    caplog.set_level(logging.WARNING, logger="custos.api")
    for _url, _app in run_service(custos):
        signed = len(custos.ledger.checkpoints())
        custos.ledger.append_many({"type": "test", "n": n} for n in range(3))
        time.sleep(1.0)  # ten rounds
        assert len(custos.ledger.checkpoints()) == signed
        complaints = [r for r in caplog.records if "signing a checkpoint failed" in r.message]
        assert len(complaints) == 1
        assert complaints[0].levelno == logging.ERROR
        assert "truncated; nothing was signed" in complaints[0].message
        key = (custos.settings.keys_dir / "log.key").read_text()
        assert all(part not in complaints[0].message for part in key.split() if len(part) > 20)
        head.write_text(good)  # resolved (e.g. the database restored)
        size = custos.ledger.size()
        wait_for(partial(covers, custos, size), 3.0)
    assert any("signing a checkpoint works again" in r.message for r in caplog.records)


def test_checkpoint_interval_must_be_a_positive_number(system: Custos) -> None:
    from custos.api import create_app

    for bad in (0, -1, "1", True):
        with pytest.raises(ConfigurationError, match=r"\[ledger\] checkpoint_interval"):
            create_app(configured(system, ledger={"checkpoint_interval": bad}))
    with pytest.raises(ConfigurationError, match=r"\[vault\] shred_interval"):
        create_app(configured(system, vault={"shred_interval": 0}))


def test_two_workers_sign_in_turn_and_the_log_verifies(home: Path, system: Custos) -> None:
    """``custos serve --workers 2``: each worker has its own timer; the check made again under
    the signing lock keeps them from signing twice for one interval, and every checkpoint
    extends the last (keys/log.signed, shared by the workers of the host)."""
    tokens = populate(system)
    (home / "config.toml").write_text(f"[ledger]\ncheckpoint_interval = {INTERVAL}\n")
    server = Server(home, workers=2)
    server.start(tokens["monitor"])
    try:
        before = len(system.ledger.checkpoints())
        start = time.monotonic()
        while time.monotonic() - start < 4.0:  # the log grows all the time
            system.ledger.append({"type": "test"})
            time.sleep(0.05)
        elapsed = time.monotonic() - start
        size = system.ledger.size()
        wait_for(partial(covers, system, size), 6 * INTERVAL)
        signed = len(system.ledger.checkpoints()) - before
    finally:
        server.kill()
    # One signature per interval at most, whichever worker made it (plus the one that
    # caught up at the end); two timers signing independently would make about twice that.
    assert 2 <= signed <= elapsed / INTERVAL + 2, signed
    done = subprocess.run(
        [sys.executable, "-m", "custos", "--home", str(home), "log", "verify"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def login(record_id: str, subject: str, when: datetime) -> str:
    stamp = when.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"id": record_id, "kind": "login", "subject": subject, "time": stamp, "ip": "192.0.2.7"}
    )


def live_keys(system: Custos) -> set[str]:
    with system.db.session() as session:
        return {k.id for k in session.query(VaultKeyRow) if k.wrapped is not None}


def shred_entries(system: Custos) -> list[dict[str, Any]]:
    found = [json.loads(e) for _, e in system.ledger.entries(0, system.ledger.size())]
    return [e for e in found if e["type"] == "shred"]


def test_the_service_shreds_at_start_up_and_on_schedule(system: Custos) -> None:
    """Records that were within retention when they came in and are past it now: the
    service shreds them at start-up, then again on its schedule as more expire, and logs a
    shredding only when something expired."""
    load_org(system, SUPPORT_WORLD)
    now = datetime.now(UTC)
    old = now - timedelta(days=200)
    # Ingested as of 200 days ago, when these were new; 90 days' retention ended since.
    system.ingest([login("old-1", "user-1", old)], "t", now=old + timedelta(hours=1))
    system.ingest([login("new-1", "user-1", now - timedelta(days=1))], "t")
    assert len(live_keys(system)) == 2
    custos = configured(system, vault={"shred_interval": INTERVAL})
    for _url, _app in run_service(custos):
        wait_for(lambda: len(live_keys(custos)) == 1, 5.0)
        (first,) = shred_entries(custos)
        assert (first["keys"], first["categories"]) == (1, {"ip_history": 1})
        # Another record comes in that was recent at its time and is past retention now.
        older = now - timedelta(days=300)
        custos.ingest([login("old-2", "user-2", older)], "t", now=older + timedelta(hours=1))
        assert len(live_keys(custos)) == 2
        wait_for(lambda: len(live_keys(custos)) == 1, 4 * INTERVAL + 2)
        time.sleep(4 * INTERVAL)  # rounds with nothing expired log nothing
        assert len(shred_entries(custos)) == 2
    released = custos.vault.release("user-1", "ip_history", "precise")
    assert [(r["id"], r.get("ip")) for r in released.records] == [
        ("old-1", None),
        ("new-1", "192.0.2.7"),
    ]


def test_shredding_at_start_up_with_the_default_interval(system: Custos) -> None:
    """Without ``[vault] shred_interval`` the service still shreds once when it starts."""
    load_org(system, SUPPORT_WORLD)
    old = datetime.now(UTC) - timedelta(days=120)
    system.ingest([login("old-1", "user-1", old)], "t", now=old)
    for _url, _app in run_service(system):
        wait_for(lambda: not live_keys(system), 5.0)
    assert len(shred_entries(system)) == 1
