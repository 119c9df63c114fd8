"""Cursors a database administrator cannot move unnoticed: every row is sealed with the
home's export key; a row moved, inserted, copied or stripped of its MAC stops its
destination (nothing more is sent), shows in status and metrics, and only a ledgered reset
starts it again. On a real database (SQLite and PostgreSQL) with a real file destination."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from custos.access import Custos
from custos.api import create_app
from custos.config import load_settings
from custos.errors import ConfigurationError, CursorTampered, ExportFailed, InvalidInput
from custos.export import CursorKey, Cursors, Exporter, FileDestination, load_key
from custos.export.seal import KEY_FILE, encode
from custos.ledger.entries import ExportCursorEntry, read
from custos.policy import AccessRequest
from custos.vault.keys import kek_provider
from tests.export.conftest import later, run_cli, write_config
from tests.factories import APPROVALS_WORLD, load_org

FILE_CONFIG = """
[[export]]
name = "{name}"
kind = "file"
path = "{path}"
batch = 4
events = ["decisions"]
"""


def sql(system: Custos, statement: str, **params: Any) -> None:
    """What a DBA with no keys can do: any statement, straight to the database."""
    with system.db.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def move(system: Custos, name: str, ledger: int) -> None:
    sql(system, "UPDATE export_cursors SET ledger = :at WHERE name = :name", at=ledger, name=name)


def decisions(system: Custos, count: int) -> None:
    for _ in range(count):
        system.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))


def sequences(path: Path) -> list[int]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["metadata"]["sequence"] for line in lines]


def decision_indexes(system: Custos) -> list[int]:
    return [
        index
        for index, raw in system.ledger.entries(0, system.ledger.size())
        if read(raw).type == "decision"
    ]


def exporter_for(system: Custos) -> Exporter:
    return Exporter(load_settings(system.settings.home), system.db, system.ledger, clock=later)


@pytest.fixture
def files(system: Custos, tmp_path: Path) -> dict[str, Path]:
    """Two file destinations, ``a`` and ``b``, sent decisions; 10 decisions logged and
    both exported once (every cursor verified and at the ledger's end)."""
    out = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b")}
    write_config(system, "".join(FILE_CONFIG.format(name=n, path=p) for n, p in out.items()))
    load_org(system, APPROVALS_WORLD)
    decisions(system, 10)
    exporter = exporter_for(system)
    assert [r.error for r in exporter.run_once()] == [None, None]
    exporter.close()
    assert sequences(out["a"]) == sequences(out["b"]) == decision_indexes(system)
    return out


def stopped(system: Custos, name: str, out: Path) -> str:
    """Run a round; ``name`` must be stopped with the clear error and sent nothing; the
    status must show it. Returns the error."""
    before = sequences(out)
    exporter = exporter_for(system)
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    error = results[name].error
    assert error is not None
    assert f"export {name!r}: its cursor does not verify" in error
    assert results[name].sent == 0
    assert sequences(out) == before
    with pytest.raises(CursorTampered, match=f"export {name!r}"):
        exporter.cursors.get(name)
    (state,) = [s for s in exporter.cursors.all() if s.name == name]
    assert not state.verified
    assert state.failures >= 1
    assert name not in exporter.queue_depth()
    return error


def chain(path: Path) -> list[tuple[int, int | None]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    return [(e["metadata"]["sequence"], e["unmapped"]["custos"]["previous_index"]) for e in events]


def test_each_event_names_its_predecessor_so_a_receiver_sees_a_gap_itself(
    system: Custos, files: dict[str, Path]
) -> None:
    """Only decisions go to ``a``: the other entries between them are not gaps, and each
    event's ``previous_index`` says so; across rounds the chain carries on (it is sealed
    with the cursor). Alerts name theirs by id."""
    decisions(system, 3)
    exporter = exporter_for(system)
    exporter.run_once()
    exporter.close()
    links = chain(files["a"])
    assert links[0][1] is None
    assert all(prev == before for (before, _), (_, prev) in itertools.pairwise(links))
    assert [s for s, _ in links] == decision_indexes(system)


def test_a_cursor_moved_forward_stops_its_destination_and_nothing_else(
    system: Custos, files: dict[str, Path]
) -> None:
    verified_end = system.ledger.size()
    decisions(system, 6)  # the accesses the DBA wants the SIEM never to see
    sql(
        system, "UPDATE export_cursors SET ledger = :end WHERE name = 'a'", end=system.ledger.size()
    )
    stopped(system, "a", files["a"])
    assert sequences(files["a"])[-1] < verified_end  # nothing past the last verified point
    # The other destination carries on.
    assert sequences(files["b"]) == decision_indexes(system)
    # Stays stopped round after round (fail closed, not once).
    stopped(system, "a", files["a"])


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ledger", 2),
        ("ledger_inflight", 3),
        ("alert", 1000),
        ("alert_inflight", 9),
        ("ledger_last", 4),
    ],
)
def test_any_sealed_column_changed_stops_too(
    system: Custos, files: dict[str, Path], column: str, value: int
) -> None:
    """Back as well as forward: a value the row was never sealed with is not trusted."""
    sql(system, f"UPDATE export_cursors SET {column} = :v WHERE name = 'a'", v=value)
    stopped(system, "a", files["a"])


def test_a_deleted_row_is_made_again_at_zero_and_only_sends_again(
    system: Custos, files: dict[str, Path]
) -> None:
    sql(system, "DELETE FROM export_cursors WHERE name = 'a'")
    exporter = exporter_for(system)
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].error is None
    assert sequences(files["a"]) == decision_indexes(system) * 2


def test_an_inserted_cursor_row_stops_the_destination_it_names(
    system: Custos, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "c.jsonl"
    write_config(system, FILE_CONFIG.format(name="c", path=out))
    # Before the new destination's first round, a forged row with a made-up MAC.
    sql(
        system,
        "INSERT INTO export_cursors (name, ledger, alert, delivered, redelivered, failures, mac)"
        " VALUES ('c', :end, 0, 0, 0, 0, :mac)",
        end=system.ledger.size(),
        mac="v1:0123456789abcdef:" + "0" * 64,
    )
    stopped(system, "c", out)
    assert not out.exists()


def test_a_nulled_mac_stops_the_destination(system: Custos, files: dict[str, Path]) -> None:
    sql(system, "UPDATE export_cursors SET mac = NULL WHERE name = 'a'")
    assert "carries no MAC" in stopped(system, "a", files["a"])


def test_a_row_copied_from_another_destination_stops(
    system: Custos, files: dict[str, Path]
) -> None:
    # b was sent a later range than a: a's row made to say what b's does, MAC included.
    decisions(system, 5)
    exporter = Exporter(
        load_settings(system.settings.home),
        system.db,
        system.ledger,
        clock=later,
        destinations={"a": _Broken()},
    )
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].error
    assert not results["b"].error
    sql(
        system,
        f"UPDATE export_cursors SET ({SEALED}) = "
        f"(SELECT {SEALED} FROM export_cursors WHERE name = 'b') WHERE name = 'a'",
    )
    assert "not those it was sealed with" in stopped(system, "a", files["a"])


SEALED = "ledger, alert, ledger_inflight, alert_inflight, ledger_last, mac"


class _Broken:
    """A destination that never takes a batch."""

    def send(self, events: list[dict[str, Any]]) -> None:
        raise ExportFailed("down")

    def close(self) -> None:
        pass


def test_a_row_changed_during_a_round_stops_it_at_the_next_write(
    system: Custos, files: dict[str, Path]
) -> None:
    decisions(system, 12)
    sent_before = len(sequences(files["a"]))

    class Meddled(FileDestination):
        def send(self, events: list[dict[str, Any]]) -> None:
            super().send(events)
            sql(system, "UPDATE export_cursors SET mac = NULL WHERE name = 'a'")

    exporter = Exporter(
        load_settings(system.settings.home),
        system.db,
        system.ledger,
        clock=later,
        destinations={"a": Meddled("a", files["a"])},
    )
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].error is not None
    assert "does not verify" in results["a"].error
    # One batch went out before the meddling was seen; no second one.
    assert 0 < len(sequences(files["a"])) - sent_before <= 4


def test_rolled_back_to_an_older_valid_row_only_sends_again(
    system: Custos, files: dict[str, Path]
) -> None:
    """Accepted: an older sealed row is a true statement about the past, so replaying it
    can only make the destination receive events twice (counted), never miss one."""
    with system.db.engine.connect() as conn:
        old = conn.execute(sa.text("SELECT * FROM export_cursors WHERE name = 'a'")).mappings()
        (saved,) = [dict(r) for r in old]
    decisions(system, 6)
    exporter = exporter_for(system)
    exporter.run_once()
    sql(
        system,
        "UPDATE export_cursors SET ledger = :ledger, alert = :alert, ledger_inflight = NULL, "
        "alert_inflight = NULL, ledger_last = :ledger_last, mac = :mac WHERE name = 'a'",
        ledger=saved["ledger"],
        alert=saved["alert"],
        ledger_last=saved["ledger_last"],
        mac=saved["mac"],
    )
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].error is None
    assert results["a"].sent == 6
    got = sequences(files["a"])
    assert list(dict.fromkeys(got)) == decision_indexes(system)
    assert len(got) == len(decision_indexes(system)) + 6


def test_reset_after_tampering_resends_from_the_chosen_point_and_is_ledgered(
    system: Custos, files: dict[str, Path]
) -> None:
    verified_end = system.ledger.size()
    decisions(system, 6)
    sql(
        system, "UPDATE export_cursors SET ledger = :end WHERE name = 'a'", end=system.ledger.size()
    )
    stopped(system, "a", files["a"])
    size = system.ledger.size()

    exporter = exporter_for(system)
    state = exporter.reset("a", ledger=verified_end, by="test")
    assert (state.ledger, state.alert, state.ledger_inflight) == (verified_end, 0, size)
    entry = read(system.ledger.entry(size))
    assert isinstance(entry, ExportCursorEntry)
    assert (entry.destination, entry.act, entry.ledger, entry.alert, entry.by) == (
        "a",
        "reset",
        verified_end,
        0,
        "test",
    )
    assert entry.found == {"ledger": size, "alert": 0, "verified": False}
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].error is None
    assert results["a"].sent == 6  # the six the moved cursor would have skipped
    assert sequences(files["a"]) == decision_indexes(system)
    (row,) = [s for s in exporter.cursors.all() if s.name == "a"]
    assert row.verified
    assert row.last_error is None


def test_reset_moves_a_verified_cursor_only_back_and_refuses_bad_input(
    system: Custos, files: dict[str, Path]
) -> None:
    exporter = exporter_for(system)
    size = system.ledger.size()
    with pytest.raises(InvalidInput, match="may only move it back"):
        exporter.reset("a", ledger=size, alert=5)
    with pytest.raises(InvalidInput, match="past the ledger's size"):
        exporter.reset("a", ledger=size + 1)
    with pytest.raises(InvalidInput, match="must not be negative"):
        exporter.reset("a", ledger=-1)
    with pytest.raises(InvalidInput, match="no \\[\\[export\\]\\] destination named 'zz'"):
        exporter.reset("zz", ledger=0)
    assert system.ledger.size() == size  # nothing ledgered, nothing changed
    assert exporter.cursors.get("a").ledger == size
    # Back to 0: everything again, every repeat counted.
    exporter.reset("a", ledger=0)
    results = {r.name: r for r in exporter.run_once()}
    exporter.close()
    assert results["a"].sent == results["a"].redelivered == 10


def test_status_metrics_and_the_reset_command_show_a_stopped_destination(
    system: Custos, files: dict[str, Path]
) -> None:
    sql(system, "UPDATE export_cursors SET mac = NULL WHERE name = 'b'")
    done = run_cli("export", "run", "--once", "--json")
    assert done.returncode == 5, done.stderr
    # One JSON document: the error (exit code 5), each destination's outcome in it.
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "export_failed"
    by_name = {r["name"]: r for r in error["destinations"]}
    assert "its cursor does not verify" in by_name["b"]["error"]
    assert by_name["a"]["error"] is None

    status = run_cli("export", "status", "--json")
    rows = {r["name"]: r for r in json.loads(status.stdout)}
    assert rows["a"]["verified"]
    assert rows["a"]["queue_depth"] == 0
    assert not rows["b"]["verified"]
    assert rows["b"]["queue_depth"] is None
    assert rows["b"]["problem"] == "it carries no MAC"
    text = run_cli("export", "status").stdout
    assert "b (file): STOPPED, its cursor does not verify" in text

    app = create_app(Custos.open(system.settings.home))
    metrics = generate_latest(app.state.registry).decode()
    assert 'custos_export_cursor_verified{destination="a"} 1.0' in metrics
    assert 'custos_export_cursor_verified{destination="b"} 0.0' in metrics

    reset = run_cli("export", "reset", "b", "--from", "0", "--json")
    assert reset.returncode == 0, reset.stderr
    assert json.loads(reset.stdout) == {"name": "b", "ledger": 0, "alert": 0}
    again = run_cli("export", "run", "--once", "--json")
    assert again.returncode == 0, again.stderr
    forward = run_cli("export", "reset", "b", "--from", "0", "--alerts-from", "99")
    assert forward.returncode == InvalidInput.exit_code, forward.stdout
    assert "may only move it back" in forward.stdout + forward.stderr


def test_rows_from_before_the_upgrade_are_sealed_once_as_found_then_null_fails(
    system: Custos, tmp_path: Path
) -> None:
    """Right after migration 0090 the rows have no MAC and the home no export key: making
    the key seals them as they stand (ledgered). From then on a NULL MAC stops the
    destination, and only deleting ``keys/export.key`` on the host (not anything in the
    database) would open that window again."""
    db = system.db
    command.downgrade(db._alembic_config(), "0070_export")
    sql(
        system,
        "INSERT INTO export_cursors (name, ledger, alert, ledger_inflight, delivered, "
        "redelivered, failures) VALUES ('a', 3, 0, 7, 2, 0, 0)",
    )
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT mac FROM export_cursors")).scalar() is None
    out = tmp_path / "a.jsonl"
    write_config(system, FILE_CONFIG.format(name="a", path=out))
    load_org(system, APPROVALS_WORLD)
    decisions(system, 5)
    size = system.ledger.size()
    assert not (system.settings.keys_dir / KEY_FILE).exists()

    exporter = exporter_for(system)
    assert (system.settings.keys_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
    entry = read(system.ledger.entry(size))
    assert isinstance(entry, ExportCursorEntry)
    assert (entry.destination, entry.act, entry.ledger, entry.alert) == ("a", "sealed", 3, 0)
    state = exporter.cursors.get("a")
    assert (state.ledger, state.ledger_inflight) == (3, 7)
    (result,) = exporter.run_once()
    assert result.error is None
    assert sequences(out) == [i for i in decision_indexes(system) if i >= 3]
    exporter.close()

    sql(system, "UPDATE export_cursors SET mac = NULL WHERE name = 'a'")
    again = exporter_for(system)  # the key exists: no sealing window any more
    assert system.ledger.size() == size + 1
    (result,) = again.run_once()
    again.close()
    assert result.error is not None
    assert "carries no MAC" in result.error


def test_the_export_key_is_wrapped_by_the_homes_kek_and_bound_to_it(
    system: Custos, tmp_path: Path
) -> None:
    key, made = load_key(system.settings)
    same, made_again = load_key(system.settings)
    assert made
    assert not made_again
    assert key.id == same.id
    path = system.settings.keys_dir / KEY_FILE
    raw = path.read_text(encoding="ascii")
    assert len(raw.strip()) > 40  # wrapped: nonce, key and tag, not the key in clear
    # Another home's key-encryption key does not unwrap it.
    with (
        Custos.init(tmp_path / "other") as other,
        pytest.raises(ConfigurationError, match="not made with this home's vault"),
    ):
        load_key(system.settings, kek_provider(other.settings))
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable by others"):
        load_key(system.settings)
    path.chmod(0o600)
    path.write_text("not base64!\n", encoding="ascii")
    with pytest.raises(ConfigurationError, match="not an export key file"):
        load_key(system.settings)


def test_a_cursor_sealed_under_another_homes_key_names_the_keys(system: Custos) -> None:
    mine = Cursors(system.db, CursorKey(b"\x01" * 32))
    theirs = Cursors(system.db, CursorKey(b"\x02" * 32))
    theirs.get("d")
    with pytest.raises(CursorTampered, match="sealed under another export key"):
        mine.get("d")


_names = st.text(min_size=0, max_size=12)
_positions = st.integers(min_value=0, max_value=2**63 - 1)
_marks = st.none() | _positions
_rows = st.tuples(_names, _positions, _positions, _marks, _marks, _marks)
Row = tuple[str, int, int, int | None, int | None, int | None]


@given(_rows, _rows)
def test_distinct_rows_never_encode_alike(one: Row, two: Row) -> None:
    assert (encode(*one) == encode(*two)) == (one == two)


@given(_rows, st.integers(min_value=0, max_value=5), _positions)
def test_changing_any_sealed_value_breaks_the_mac(row: Row, which: int, value: int) -> None:
    key = CursorKey(bytes(range(32)))
    mac = key.seal(*row)
    assert key.problem(mac, *row) is None
    changed: list[Any] = list(row)
    if which == 0:
        changed[0] = row[0] + "x"
    else:
        changed[which] = value if value != row[which] else value + 1
    assert key.problem(mac, *changed) is not None
