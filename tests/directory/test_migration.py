"""Revision 0018 stamps the directory's stored rows and keeps them, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from custos.directory import DirectoryStore, parse_text
from custos.store import Base, Database, UTCDateTime
from custos.store.directory import PrincipalRow, SubjectRow, TicketRow
from tests.directory.test_changes import TABLES, read_changes, stamps
from tests.factories import org

BEFORE = "0017_events_sequence"
JSON_COLUMNS = ("groups", "protected", "extra")


def _insert(db: Database, table: str, values: dict[str, Any]) -> None:
    def typed(key: str) -> sa.ColumnClause[Any]:
        if key in JSON_COLUMNS:
            return sa.column(key, sa.JSON())
        if isinstance(values[key], datetime):
            return sa.column(key, UTCDateTime())
        return sa.column(key)

    with db.engine.begin() as conn:
        conn.execute(sa.insert(sa.table(table, *(typed(k) for k in values))).values(**values))


def _old_directory(db: Database, version: int | None) -> None:
    """A directory stored before revision 0018: two principals, a subject, a ticket."""
    for name, manager in (("emp-1", None), ("emp-2", "emp-1")):
        _insert(
            db,
            "principals",
            {
                "id": name,
                "name": name,
                "kind": "employee",
                "role": "support_agent",
                "team": "support",
                "manager": manager,
                "country": "US",
                "status": "active",
                "groups": [],
                "role_since": datetime(2025, 3, 1, tzinfo=UTC),
                "extra": {},
            },
        )
    _insert(
        db,
        "subjects",
        {
            "id": "user-1",
            "handle": None,
            "jurisdiction": "US",
            "protected": ["journalist"],
            "employee": None,
            "extra": {},
        },
    )
    _insert(
        db,
        "tickets",
        {
            "id": "T-1",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-2",
            "status": "open",
            "opened": datetime(2026, 1, 5, 10, tzinfo=UTC),
            "closed": None,
            "opened_by": "subject",
            "extra": {},
        },
    )
    if version is not None:
        _insert(db, "directory_version", {"id": 1, "version": version})


@pytest.fixture
def old_database(tmp_path: Path, database_url: str | None) -> Database:
    """A database migrated up to the revision before 0018."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate(BEFORE)
    return db


EVERY_ROW = {"principals": {"emp-1", "emp-2"}, "subjects": {"user-1"}, "tickets": {"T-1"}}
NO_ROW: dict[str, set[str]] = {table: set() for table in TABLES}


def _ids(directory: DirectoryStore, folder: Path, after: int) -> dict[str, set[str]]:
    return {
        t: set(rows) for t, rows in read_changes(directory.write_changes(folder, after)).items()
    }


@pytest.mark.parametrize("version", [7, None])
def test_rows_stored_before_take_the_version_of_that_time(
    old_database: Database, tmp_path: Path, version: int | None
) -> None:
    _old_directory(old_database, version)
    old_database.migrate()
    current = version or 0
    assert stamps(old_database) == {
        table: dict.fromkeys(ids, current) for table, ids in EVERY_ROW.items()
    }

    directory = DirectoryStore(old_database)
    assert _ids(directory, tmp_path, -1) == EVERY_ROW  # a first copy takes them all
    assert _ids(directory, tmp_path, current) == NO_ROW
    if current:
        assert _ids(directory, tmp_path, current - 1) == EVERY_ROW

    # Writes go on from there, stamping only what they change.
    added = org(subjects=[{"id": "user-2", "jurisdiction": "US", "employee": "emp-1"}])
    directory.merge(parse_text(yaml.safe_dump(added), "after"))
    directory.set_ticket_status("T-1", "closed")
    assert directory.version() == current + 2
    assert _ids(directory, tmp_path, current) == {
        **NO_ROW,
        "subjects": {"user-2"},
        "tickets": {"T-1"},
    }
    assert directory.ticket("T-1").status == "closed"
    assert directory.principal("emp-2").manager == "emp-1"
    assert directory.subject("user-1").protected == ("journalist",)


def test_downgrade_and_upgrade_again_keep_the_directory(old_database: Database) -> None:
    _old_directory(old_database, 3)
    old_database.migrate()
    command.downgrade(old_database._alembic_config(), BEFORE)
    with old_database.engine.connect() as conn:
        for table in TABLES:
            assert "seq" not in {c["name"] for c in sa.inspect(conn).get_columns(table)}
    old_database.migrate()
    assert stamps(old_database) == {
        table: dict.fromkeys(ids, 3) for table, ids in EVERY_ROW.items()
    }
    assert DirectoryStore(old_database).ticket("T-1").assignee == "emp-2"


def test_a_new_database_has_the_tables_the_models_describe(
    tmp_path: Path, database_url: str | None
) -> None:
    """Schemas come from the migrations only: they must end where the models are."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'custos.db'}")
    db.migrate()
    mine = {PrincipalRow.__tablename__, SubjectRow.__tablename__, TicketRow.__tablename__}
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        inspector = sa.inspect(conn)
        for table in mine:
            seq = {c["name"]: c for c in inspector.get_columns(table)}["seq"]
            assert isinstance(seq["type"], sa.BigInteger)
            assert seq["nullable"] is False
            assert {"name": f"ix_{table}_seq", "column_names": ["seq"]}.items() <= {
                i["name"]: i for i in inspector.get_indexes(table)
            }[f"ix_{table}_seq"].items()

    assert [change for change in diff if _table_of(change) in mine] == []


def _table_of(change: Any) -> str:
    """The table one of Alembic's ``compare_metadata`` differences is about."""
    op = change[0] if isinstance(change, list) else change  # modify_* come as lists
    kind = op[0]
    if kind in ("add_table", "remove_table"):
        return str(op[1].name)
    if kind.endswith(("_index", "_constraint", "_fk")):
        return str(op[1].table.name)
    return str(op[2])  # (kind, schema, table, …): columns and their changes
