"""Tiles over real HTTP on loopback, and a witness that refuses rollbacks and split views."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from custos.access import Custos
from custos.ledger import Ledger, TileServer, Witness, WitnessRefusal
from custos.ledger.tiles import decode_index, encode_index, tile_path
from tests.conftest import fresh_database_url
from tests.ledger.signed_note import verify_note


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(source: Custos | Ledger) -> Iterator[str]:
    ledger = source if isinstance(source, Ledger) else source.ledger
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(TileServer(ledger), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def grow(system: Custos, count: int) -> None:
    system.ledger.append_many({"type": "test", "n": n} for n in range(count))
    system.ledger.checkpoint()


def test_tile_index_encoding() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(5) == "005"
    assert decode_index("x001/x234/067") == 1234067
    assert tile_path(0, 0, 5) == "tile/0/000.p/5"


def test_tiles_serve_the_stored_hashes(system: Custos) -> None:
    grow(system, 300)
    size = system.ledger.size()
    with serving(system) as url:
        status, body = get(f"{url}/tile/0/000")
        assert status == 200
        leaves = system.ledger.nodes((0, i) for i in range(256))
        assert body == b"".join(leaves[(0, i)] for i in range(256))
        width = size - 256
        status, body = get(f"{url}/tile/0/001.p/{width}")
        assert (status, len(body)) == (200, 32 * width)
        assert get(f"{url}/tile/0/001.p/{width + 1}")[0] == 404
        assert get(f"{url}/tile/1/000.p/1")[0] == 200  # level 8: one node over leaves 0..255
        assert get(f"{url}/tile/entries/000")[0] == 404  # entry contents are not public
        assert get(f"{url}/checkpoint", method="POST")[0] == 405
        status, note = get(f"{url}/checkpoint")
        assert status == 200
        verify_note(note.decode(), system.ledger.signer.verifier_key())


def test_witness_cosigns_a_growing_log(system: Custos, tmp_path: Path) -> None:
    witness = Witness.create(tmp_path / "witness", "witness.example")
    vkey = system.ledger.signer.verifier_key()
    grow(system, 10)
    with serving(system) as url:
        first = witness.check(url, vkey)
        assert first.previous_size is None
        grow(system, 600)
        second = witness.check(url, vkey)
    assert second.previous_size == first.checkpoint.size
    assert second.checkpoint.size == system.ledger.size()
    verify_note(second.note, witness.signer.verifier_key())
    verify_note(second.note, vkey)
    assert (
        Witness(tmp_path / "witness").state()[system.ledger.origin]["size"]
        == second.checkpoint.size
    )


def test_witness_refuses_a_rollback(system: Custos, tmp_path: Path) -> None:
    from sqlalchemy import text

    witness = Witness.create(tmp_path / "witness", "w")
    vkey = system.ledger.signer.verifier_key()
    grow(system, 10)
    old_size = system.ledger.size()
    grow(system, 10)
    with serving(system) as url:
        witness.check(url, vkey)
        with system.db.engine.begin() as conn:  # the operator rolls the log back
            conn.execute(text("DELETE FROM ledger_checkpoints WHERE size > :s"), {"s": old_size})
        with pytest.raises(WitnessRefusal, match="ROLLBACK"):
            witness.check(url, vkey)


def test_witness_refuses_an_origin_its_key_does_not_name(system: Custos, tmp_path: Path) -> None:
    # The log's key signing for another log's origin would overwrite that log's record in
    # the witness's state, and the real log would be refused as a rollback for good.
    witness = Witness.create(tmp_path / "witness", "w")
    impostor = Ledger(system.db, system.ledger.signer, "log.b.example")
    impostor.append_many({"type": "test", "n": n} for n in range(3))
    impostor.checkpoint()
    with serving(impostor) as url, pytest.raises(WitnessRefusal, match=r"'log\.b\.example'"):
        witness.check(url, system.ledger.signer.verifier_key())
    assert witness.state() == {}


def test_witness_refuses_a_split_view(
    system: Custos, tmp_path: Path, pg_database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    witness = Witness.create(tmp_path / "witness", "w")
    vkey = system.ledger.signer.verifier_key()
    grow(system, 10)
    # A second log with the same key and origin, but another history: a fork.
    other_home = tmp_path / "fork"
    (other_home / "keys").mkdir(parents=True)
    shutil.copy(system.settings.keys_dir / "log.key", other_home / "keys" / "log.key")
    url_env = fresh_database_url(pg_database)
    if url_env:
        monkeypatch.setenv("CUSTOS_DATABASE_URL", url_env)
    with Custos.init(other_home) as fork:
        grow(fork, 30)
        with serving(system) as url:
            witness.check(url, vkey)
        with serving(fork) as url, pytest.raises(WitnessRefusal, match="SPLIT VIEW"):
            witness.check(url, vkey)


def test_witness_refuses_a_checkpoint_signed_by_another_key(system: Custos, tmp_path: Path) -> None:
    witness = Witness.create(tmp_path / "witness", "w")
    other = Witness.create(tmp_path / "other", "impostor").signer
    grow(system, 3)
    from custos.ledger import NoteSigner

    impostor_key = NoteSigner(system.ledger.origin, other.private).verifier_key()
    with serving(system) as url, pytest.raises(WitnessRefusal, match="not validly signed"):
        witness.check(url, impostor_key)


def test_witness_runs_one_check_at_a_time(system: Custos, tmp_path: Path) -> None:
    """Overlapping runs (cron) take turns on the state: while another holds the witness's
    lock, a check neither reads nor writes the state, and it goes on when the lock is freed."""
    import fcntl

    from custos.ledger.witness import LOCK_FILE, STATE_FILE

    folder = tmp_path / "witness"
    witness = Witness.create(folder, "w")
    vkey = system.ledger.signer.verifier_key()
    grow(system, 10)
    outcome: list[object] = []
    with serving(system) as url, (folder / LOCK_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another run is in the middle of its check
        runner = threading.Thread(target=lambda: outcome.append(witness.check(url, vkey)))
        runner.start()
        runner.join(timeout=1.5)
        assert runner.is_alive(), "the check went on while another run held the lock"
        assert not (folder / STATE_FILE).exists()
        assert outcome == []
        fcntl.flock(held, fcntl.LOCK_UN)
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert len(outcome) == 1
    assert Witness(folder).state()[system.ledger.origin]["size"] == system.ledger.size()
