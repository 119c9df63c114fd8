"""Migrations that rebuild or re-index tables keep every row, on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from custos.ledger import (
    Ledger,
    NoteVerifier,
    leaf_hash,
    read_key,
    verify_inclusion,
    verify_log,
    write_new_key,
)
from custos.store import Database
from custos.vault.vault import _RELEASE_SQL


@pytest.fixture
def old_database(tmp_path: Path, database_url: str | None) -> Database:
    """A database migrated only up to the revisions before this change's (0010 for the
    ledger, 0005 for the vault)."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0010_ledger_frontier")
    db.migrate("0005_vault")
    return db


def _ledger(db: Database, tmp_path: Path) -> Ledger:
    key = tmp_path / "log.key"
    write_new_key(key, "custos/migration-test")
    signer = read_key(key)
    return Ledger(db, signer, signer.name)


def test_ledger_entries_rebuilt_as_row_ids_keep_every_entry_and_proof(
    old_database: Database, tmp_path: Path
) -> None:
    ledger = _ledger(old_database, tmp_path)
    for i in range(37):
        ledger.append({"type": "test", "i": i, "note": "é ✓"})
    before = ledger.entries(0, 37)
    root = ledger.root()
    checkpoint = ledger.checkpoint()

    old_database.migrate()
    after = _ledger(old_database, tmp_path)
    assert after.entries(0, 37) == before
    assert after.root() == root
    proof = after.inclusion_proof(17)
    assert verify_inclusion(
        leaf_hash(after.entry(17)), proof.index, proof.size, list(proof.hashes), root
    )
    # Appends continue the same tree after the rebuild.
    receipt = after.append({"type": "test", "i": 37})
    assert receipt.index == 37
    assert json.loads(after.entry(37))["i"] == 37
    report = verify_log(after, NoteVerifier.parse(ledger.signer.verifier_key()))
    assert report.ok, report
    assert checkpoint.splitlines()[1] == "37"  # the checkpoint signed before still holds

    if old_database.is_sqlite:
        with old_database.engine.connect() as conn:
            plan = conn.execute(
                text("EXPLAIN QUERY PLAN SELECT entry FROM ledger_entries WHERE idx = 3")
            ).all()
        assert "INTEGER PRIMARY KEY" in " ".join(str(row[-1]) for row in plan)


def test_ledger_downgrade_and_upgrade_again_keep_the_entries(
    old_database: Database, tmp_path: Path
) -> None:
    ledger = _ledger(old_database, tmp_path)
    for i in range(9):
        ledger.append({"type": "test", "i": i})
    before = ledger.entries(0, 9)
    old_database.migrate()
    command.downgrade(old_database._alembic_config(), "0014_ledger_entries_rowid@-1")
    assert _ledger(old_database, tmp_path).entries(0, 9) == before
    old_database.migrate()
    assert _ledger(old_database, tmp_path).entries(0, 9) == before


def test_release_index_orders_records_without_a_sort(old_database: Database) -> None:
    old_database.migrate()
    if not old_database.is_sqlite:
        pytest.skip("reads SQLite's query plan")
    with old_database.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + _RELEASE_SQL, ("u", "c")).all()
    details = " ".join(str(row[-1]) for row in plan)
    assert "ix_vault_records_release" in details
    assert "TEMP B-TREE" not in details


def test_grants_made_before_actions_were_named_cover_reading_only(
    tmp_path: Path, database_url: str | None
) -> None:
    """Rows approved before requests named their actions were approved with no action in
    view: after the migration they cover ``read`` alone (fail closed), and stay readable."""
    import sqlalchemy as sa

    from custos.store.approvals import ApprovalRequestRow, GrantRow
    from custos.store.base import UTCDateTime

    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0006_approvals")
    now = datetime.now(UTC)
    common = {
        "principal": "emp-1",
        "subject": "user-42",
        "categories": ["contact"],
        "purpose": "support",
        "ticket": "T-1",
        "precision": "precise",
        "reason": "approved long ago",
    }
    json_cols = ("categories", "approver_groups", "approvers", "groups_needed", "policies")

    def table(name: str, values: dict[str, object]) -> sa.TableClause:
        def typed(key: str) -> sa.ColumnClause[object]:
            if key in json_cols:
                return sa.column(key, sa.JSON())
            if isinstance(values[key], datetime):
                return sa.column(key, UTCDateTime())
            return sa.column(key)

        return sa.table(name, *(typed(k) for k in values))

    grant = {
        **common,
        "id": "grant-old",
        "request_id": "req-old",
        "approvals": 2,
        "approver_groups": ["privacy_office"],
        "approvers": ["emp-2", "emp-3"],
        "starts": now,
        "ends": now + timedelta(hours=8),
        "break_glass": False,
        "review": "none",
        "logged": True,
        "end_notified": False,
        "lock": 0,
    }
    request = {
        **common,
        "id": "req-old",
        "duration_s": 28800,
        "approvals_needed": 2,
        "groups_needed": ["privacy_office"],
        "policies": ["protected-two-person"],
        "status": "approved",
        "created": now,
        "expires": now + timedelta(hours=12),
        "grant_id": "grant-old",
        "lock": 0,
    }
    with db.engine.begin() as conn:
        conn.execute(sa.insert(table("grants", grant)).values(**grant))
        conn.execute(sa.insert(table("approval_requests", request)).values(**request))

    db.migrate()
    with db.session() as session:
        old_grant = session.get(GrantRow, "grant-old")
        old_request = session.get(ApprovalRequestRow, "req-old")
        assert old_grant is not None
        assert old_request is not None
        assert (old_grant.actions, old_request.actions) == (["read"], ["read"])
        assert old_grant.categories == ["contact"]


def test_events_stored_before_explanations_were_kept_are_checked_against_the_tickets(
    tmp_path: Path, database_url: str | None
) -> None:
    """Events stored before ``explained`` existed have none after the migration (so detection
    checks each against the tickets, as before), and new ones from the ledger keep theirs."""
    import sqlalchemy as sa

    from custos.detect import EventStore, connect, load_store
    from custos.directory import DirectoryStore

    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0011_ledger_feed")
    columns = ("id", "time", "principal", "action", "subject", "category", "purpose")
    old = {
        "id": "ev-old",
        "time": "2026-01-05 10:00:00.000000",
        "principal": "emp-1",
        "action": "read",
        "subject": "user-1",
        "category": "profile",
        "purpose": "support",
    }
    with db.engine.begin() as conn:
        rows = sa.table("access_events", *(sa.column(c) for c in (*columns, "decision", "extra")))
        values = {
            **old,
            "decision": "allow",
            "extra": '{"type": "decision", "explained": "ticket"}',
        }
        if not db.is_sqlite:
            values["time"] = datetime(2026, 1, 5, 10, tzinfo=UTC)
        conn.execute(sa.insert(rows).values(**values))

    db.migrate()
    store = EventStore(db)
    entry = {**old, "id": "ev-new", "time": "2026-01-05T11:00:00Z", "decision": "allow"}
    store.append(
        [{**entry, "ticket": "T-1", "type": "decision", "explained": "ticket"}], from_ledger=True
    )
    con = connect(1)
    try:
        load_store(con, store, DirectoryStore(db))
        found = dict(con.execute("SELECT id, explained FROM events").fetchall())
    finally:
        con.close()
    assert found == {"ev-old": None, "ev-new": "ticket"}


def test_events_stored_before_the_change_sequence_are_numbered_in_id_order(
    tmp_path: Path, database_url: str | None
) -> None:
    """Rows stored before ``seq`` existed are numbered 1..n by id, the sequence row counts
    them, and appends and copies carry on from there; taken down and up again, the rows stay."""
    import sqlalchemy as sa

    from custos.detect import EventStore

    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0016_events_explained")
    old = {
        "principal": "emp-1",
        "action": "read",
        "subject": "user-1",
        "category": "profile",
        "purpose": "support",
    }
    table = sa.table(
        "access_events", *(sa.column(c) for c in (*old, "id", "time", "decision", "extra"))
    )
    stored_time = (
        "2026-01-05 10:00:00.000000" if db.is_sqlite else datetime(2026, 1, 5, 10, tzinfo=UTC)
    )
    with db.engine.begin() as conn:
        for key in ("ev-c", "ev-a", "ev-b"):
            conn.execute(
                sa.insert(table).values(
                    **old, id=key, time=stored_time, decision="allow", extra="{}"
                )
            )

    def numbered() -> dict[str, int]:
        with db.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, seq FROM access_events")).all())

    db.migrate("0017_events_sequence")
    assert numbered() == {"ev-a": 1, "ev-b": 2, "ev-c": 3}
    with db.engine.connect() as conn:
        ((value, rows, store),) = conn.execute(
            sa.text("SELECT value, rows, store FROM event_sequence")
        ).all()
    assert (value, rows, len(store)) == (3, 3, 32)

    db.migrate("0025_detect_continuous")  # today's EventStore also stores arrival times
    events = EventStore(db)
    events.append([{**old, "id": "ev-d", "time": "2026-01-05T11:00:00Z", "decision": "allow"}])
    changed = events.write_changes(tmp_path / "changes", 0)
    assert (changed.store, changed.count, changed.high) == (store, 4, 4)
    assert changed.rows.count == 4
    assert numbered() == {"ev-a": 1, "ev-b": 2, "ev-c": 3, "ev-d": 4}
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE access_events SET seq = 1 WHERE id = 'ev-b'"))

    command.downgrade(db._alembic_config(), "0016_events_explained")
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM access_events")).scalar() == 4
    db.migrate("0017_events_sequence")
    assert numbered() == {"ev-a": 1, "ev-b": 2, "ev-c": 3, "ev-d": 4}
    again = events.write_changes(tmp_path / "changes", 4)
    # Numbered afresh, so under a new identity: a copy made before starts again.
    assert (again.count, again.high, again.rows.count) == (4, 4, 0)
    assert again.store != store
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.execute(
            sa.insert(table).values(**old, id="ev-e", time=stored_time, decision="deny", extra="{}")
        )
    db.dispose()


def test_entries_about_subjects_from_before_links_seed_the_chain(
    tmp_path: Path, database_url: str | None
) -> None:
    """The heads start from the entries already there: the first linked entry about a subject
    names the last unlinked one, and the whole log still verifies, links included."""
    from custos.reports import LINKS, SUBJECT_CHAIN

    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0014_ledger_entries_rowid")
    old = _ledger(db, tmp_path)
    for i in range(25):
        old.append({"type": "decision", "subject": f"user-{i % 3}", "i": i})
    old.append({"type": "policy_version"})
    db.migrate()
    key = read_key(tmp_path / "log.key")
    ledger = Ledger(db, key, key.name, chain=SUBJECT_CHAIN)
    assert ledger.chain_head("user-1") == 22
    assert ledger.chain_head("user-7") is None
    receipt = ledger.append({"type": "decision", "subject": "user-1"})
    assert json.loads(ledger.entry(receipt.index))[LINKS] == {"user-1": 22}
    first = ledger.append({"type": "decision", "subject": "user-7"})
    assert json.loads(ledger.entry(first.index))[LINKS] == {"user-7": None}
    report = verify_log(ledger, NoteVerifier.parse(key.verifier_key()))
    assert report.ok, report.problems
    db.dispose()


def test_the_subject_index_keeps_its_rows_and_takes_several_subjects_per_entry(
    tmp_path: Path, database_url: str | None
) -> None:
    """0023 rekeys report_subject_entries by (idx, subject) without losing a row, and its
    downgrade keeps one row per entry."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate("0008_reports")
    rows = [(i, f"user-{i % 4}", "decision") for i in range(30)]
    insert = text("INSERT INTO report_subject_entries (idx, subject, type) VALUES (:i, :s, :t)")
    with db.engine.begin() as conn:
        for i, s, t in rows:
            conn.execute(insert, {"i": i, "s": s, "t": t})
    db.migrate()
    select_all = text("SELECT idx, subject, type FROM report_subject_entries ORDER BY idx, subject")
    with db.engine.begin() as conn:
        assert [tuple(r) for r in conn.execute(select_all)] == rows
        conn.execute(insert, {"i": 30, "s": "user-1", "t": "oversight_view"})
        conn.execute(insert, {"i": 30, "s": "user-2", "t": "oversight_view"})
    command.downgrade(db._alembic_config(), "0008_reports")
    with db.engine.begin() as conn:
        kept = [tuple(r) for r in conn.execute(select_all)]
    assert kept == [*rows, (30, "user-1", "oversight_view")]
    db.dispose()
