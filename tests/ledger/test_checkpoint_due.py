"""Checkpoints signed when due (what the service's timer asks for): only when the log has
grown beyond the newest checkpoint and that one is old enough; once for several signers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from custos.access import Custos
from custos.ledger import LOG_KEY_FILE, SIGNED_HEAD_FILE, Ledger, read_key
from custos.store.ledger import LedgerCheckpointRow

HOUR = timedelta(hours=1)


def another_ledger(system: Custos) -> Ledger:
    """A second signer on the same database and keys: as another worker process has."""
    keys = system.settings.keys_dir
    signer = read_key(keys / LOG_KEY_FILE)
    return Ledger(system.db, signer, signer.name, keys / SIGNED_HEAD_FILE)


def test_a_checkpoint_is_due_when_the_log_grew_and_the_newest_is_old(system: Custos) -> None:
    ledger = system.ledger
    if ledger.size() == 0:
        assert ledger.checkpoint_if_due(timedelta(0)) is None  # nothing to sign
    ledger.append({"type": "test"})
    first = ledger.checkpoint_if_due(HOUR)  # there is no checkpoint yet
    assert first is not None
    assert int(first.split("\n")[1]) == ledger.size()
    assert ledger.checkpoint_if_due(timedelta(0)) is None  # the log did not grow
    ledger.append({"type": "test"})
    assert ledger.checkpoint_if_due(HOUR) is None  # the newest is too young
    second = ledger.checkpoint_if_due(timedelta(0))
    assert second is not None
    assert int(second.split("\n")[1]) == ledger.size()
    assert [size for size, _, _ in ledger.checkpoints()] == [ledger.size() - 1, ledger.size()]
    assert ledger.last_signed() == ledger.checkpoints()[-1][:2]


def test_signers_that_find_it_due_together_sign_once(system: Custos) -> None:
    """Each thread has its own Ledger (its own lock file handle, as a process has): the test
    made again under the signing lock lets one of them sign."""
    system.ledger.append({"type": "test"})
    system.ledger.checkpoint()
    with system.db.engine.begin() as conn:  # as if it had been signed an hour ago
        conn.execute(
            update(LedgerCheckpointRow).values(created=datetime.now(UTC) - timedelta(hours=1))
        )
    system.ledger.append_many({"type": "test", "n": n} for n in range(10))
    signers = [another_ledger(system) for _ in range(6)]
    assert all(signer._checkpoint_due(timedelta(seconds=30)) for signer in signers)
    before = len(system.ledger.checkpoints())
    results: list[str | None] = []
    gate = threading.Barrier(len(signers))

    def sign(ledger: Ledger) -> None:
        gate.wait()
        results.append(ledger.checkpoint_if_due(timedelta(seconds=30)))

    threads = [threading.Thread(target=sign, args=(s,)) for s in signers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(system.ledger.checkpoints()) == before + 1
    assert sum(note is not None for note in results) == 1
