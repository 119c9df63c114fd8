"""Tampering with stored rows is caught by ``custos log verify``, naming the first bad index."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from custos.access import Custos
from custos.errors import IntegrityError
from custos.ledger import verify_log


def fill(system: Custos, count: int = 40) -> None:
    for start in range(0, count, 7):
        system.ledger.append_many(
            {"type": "test", "n": n} for n in range(start, min(start + 7, count))
        )
        system.ledger.checkpoint()


def run_verify(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custos", "log", "verify", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CUSTOS_HOME": str(home)},
        timeout=120,
        check=False,
    )


def sql(system: Custos, statement: str, **params: object) -> None:
    with system.db.engine.begin() as conn:
        conn.execute(text(statement), params)


def alter_entry(system: Custos) -> int:
    sql(system, "UPDATE ledger_entries SET entry = :e WHERE idx = 17", e=b'{"type":"forged"}')
    return 17


def alter_entry_and_its_hashes(system: Custos) -> int:
    # A careful forger also rewrites the leaf hash; the parent no longer matches.
    from custos.ledger import leaf_hash

    forged = b'{"type":"forged"}'
    sql(
        system,
        "UPDATE ledger_entries SET entry = :e, leaf = :h WHERE idx = 17",
        e=forged,
        h=leaf_hash(forged),
    )
    return 16


def delete_entry(system: Custos) -> int:
    sql(system, "DELETE FROM ledger_entries WHERE idx = 23")
    return 23


def reorder_entries(system: Custos) -> int:
    # Whole rows (entry and leaf hash) swap places: each row is self-consistent, so the
    # first stored subtree hash over them (entries 16..31) is what no longer matches.
    sql(system, "UPDATE ledger_entries SET idx = -1 WHERE idx = 30")
    sql(system, "UPDATE ledger_entries SET idx = 30 WHERE idx = 31")
    sql(system, "UPDATE ledger_entries SET idx = 31 WHERE idx = -1")
    return 16


def reorder_entry_contents(system: Custos) -> int:
    sql(system, "UPDATE ledger_entries SET idx = -1 WHERE idx = 30")
    sql(system, "UPDATE ledger_entries SET idx = 30 WHERE idx = 31")
    sql(system, "UPDATE ledger_entries SET idx = 31 WHERE idx = -1")
    sql(
        system,
        "UPDATE ledger_entries SET leaf = (SELECT leaf FROM ledger_entries WHERE idx = 31)"
        " WHERE idx = 30",
    )
    return 30


def insert_entry(system: Custos) -> int:
    from custos.ledger import leaf_hash

    size = system.ledger.size()
    planted = b'{"type":"planted"}'
    sql(
        system,
        "INSERT INTO ledger_entries (idx, entry, leaf) VALUES (:i, :e, :h)",
        i=size,
        e=planted,
        h=leaf_hash(planted),
    )
    return size


def truncate_log(system: Custos) -> int:
    sql(system, "DELETE FROM ledger_entries WHERE idx >= 35")
    sql(system, "UPDATE ledger_state SET size = 35")
    return 35


@pytest.mark.parametrize(
    "tamper",
    [
        alter_entry,
        alter_entry_and_its_hashes,
        delete_entry,
        reorder_entries,
        reorder_entry_contents,
        insert_entry,
        truncate_log,
    ],
)
def test_tampering_is_detected_with_the_first_bad_index(
    system: Custos, home: Path, tamper: Callable[[Custos], int]
) -> None:
    fill(system)
    assert verify_log(system.ledger, system.log_verifier).ok
    expected = tamper(system)
    result = run_verify(home)
    assert result.returncode == 6, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["first_bad_index"] == expected, report


def test_a_clean_log_verifies_from_the_cli(system: Custos, home: Path) -> None:
    fill(system)
    result = run_verify(home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"]
    assert report["checked_entries"] == system.ledger.size()
    assert report["checked_checkpoints"] == len(system.ledger.checkpoints())


def flip_signature(note: str) -> str:
    """The note with one bit of its (last) signature flipped; the text stays a valid note."""
    body, _, signature_line = note.rstrip("\n").rpartition("\n")
    dash, name, encoded = signature_line.split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 0x01
    return f"{body}\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"


def test_a_forged_checkpoint_signature_is_detected(system: Custos) -> None:
    fill(system, 10)
    size, _, note = system.ledger.checkpoints()[-1]
    forged = flip_signature(note)
    assert forged != note
    sql(system, "UPDATE ledger_checkpoints SET note = :n WHERE size = :s", n=forged, s=size)
    report = verify_log(system.ledger, system.log_verifier)
    assert not report.ok
    assert any("signature" in problem.lower() for problem in report.problems), report.problems


def rewrite_history(system: Custos) -> None:
    """What a database administrator can do without the key: rewrite entry 3 and every row
    derived from it (leaf, stored nodes, the frontier), and delete the checkpoints."""
    from custos.ledger.log import _encode_frontier, _grow

    size = system.ledger.size()
    rows = system.ledger.entries(0, size)
    forged = [e if i != 3 else b'{"type":"forged","salt":"AAAA"}' for i, e in rows]
    grown = _grow(0, [], forged)
    with system.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_nodes"))
        conn.execute(text("DELETE FROM ledger_checkpoints"))
        for idx, entry, leaf in grown.entry_rows:
            conn.execute(
                text("UPDATE ledger_entries SET entry = :e, leaf = :l WHERE idx = :i"),
                {"e": entry, "l": leaf, "i": idx},
            )
        for level, idx, digest in grown.node_rows:
            conn.execute(
                text("INSERT INTO ledger_nodes (level, idx, hash) VALUES (:lv, :i, :h)"),
                {"lv": level, "i": idx, "h": digest},
            )
        conn.execute(
            text("UPDATE ledger_state SET frontier = :f WHERE id = 1"),
            {"f": _encode_frontier(grown.frontier)},
        )


def test_a_rewritten_history_is_never_signed_and_does_not_verify(
    system: Custos, home: Path
) -> None:
    fill(system)
    honest = system.ledger.checkpoint()
    rewrite_history(system)
    with Custos.open(home) as reopened:  # a fresh process: nothing cached
        with pytest.raises(IntegrityError, match="history was rewritten; nothing was signed"):
            reopened.ledger.checkpoint()
        assert reopened.ledger.checkpoints() == []  # the log's key signed no second version
        report = verify_log(reopened.ledger, reopened.log_verifier)
    assert not report.ok
    signed_at = honest.split("\n")[1]
    assert f"the checkpoint this host last signed at size {signed_at}" in report.problems[0]
    assert run_verify(home).returncode == 6


def test_a_truncated_log_is_never_signed(system: Custos, home: Path) -> None:
    fill(system)
    system.ledger.checkpoint()
    truncate_log(system)
    sql(system, "DELETE FROM ledger_checkpoints")
    with (
        Custos.open(home) as reopened,
        pytest.raises(IntegrityError, match="it was truncated; nothing was signed"),
    ):
        reopened.ledger.checkpoint()


def test_what_the_next_append_builds_on_is_verified_too(system: Custos, home: Path) -> None:
    fill(system)
    assert verify_log(system.ledger, system.log_verifier).ok
    with system.db.engine.begin() as conn:
        blob = bytes(
            conn.execute(text("SELECT frontier FROM ledger_state WHERE id = 1")).scalar_one()
        )
    sql(
        system,
        "UPDATE ledger_state SET frontier = :f WHERE id = 1",
        f=blob[:-1] + bytes([blob[-1] ^ 1]),
    )
    report = verify_log(system.ledger, system.log_verifier)
    assert report.problems == ["the stored frontier does not match the entries"]
    sql(system, "UPDATE ledger_state SET frontier = :f WHERE id = 1", f=blob)
    size = system.ledger.size()
    sql(
        system,
        "INSERT INTO ledger_nodes (level, idx, hash) VALUES (4, :i, :h)",
        i=size >> 4,
        h=b"\x00" * 32,
    )
    report = verify_log(system.ledger, system.log_verifier)
    assert not report.ok
    assert "beyond the log's size" in report.problems[0]
