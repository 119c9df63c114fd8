"""Change stamps on the stored directory, and the export of the rows changed after a version,
on a real database (SQLite file or PostgreSQL)."""

from __future__ import annotations

import csv
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from custos.access import Custos
from custos.directory import DIRECTORY_EXPORTS, DirectoryChanges, DirectoryStore
from custos.errors import UnknownPrincipal, UnknownTicket
from custos.store import Database, WrittenRows
from custos.store.directory import PrincipalRow, SubjectRow, TicketRow
from tests.factories import SUPPORT_WORLD, load_org, org

TABLES = ("principals", "subjects", "tickets")
MODELS: dict[str, Any] = {"principals": PrincipalRow, "subjects": SubjectRow, "tickets": TicketRow}


def stamps(db: Database) -> dict[str, dict[str, int]]:
    """``seq`` of every stored row, per table and id."""
    with db.session() as session:
        return {
            table: dict(session.execute(select(model.id, model.seq)).all())
            for table, model in MODELS.items()
        }


def read_rows(rows: WrittenRows) -> dict[str, tuple[str | None, ...]]:
    """The rows of one written file by id, every value as text or None (PostgreSQL's CSV
    writes NULL as an empty field; no exported value is an empty string)."""
    found: dict[str, tuple[str | None, ...]] = {}
    with rows.path.open(encoding="utf-8", newline="") as file:
        if rows.format == "csv":
            records: list[list[Any]] = [list(record) for record in csv.reader(file)]
        else:
            records = [json.loads(line) for line in file if line.strip()]
    for record in records:
        values = tuple(None if v in (None, "") else str(v) for v in record)
        assert values[0] is not None
        found[values[0]] = values
    assert len(found) == rows.count == len(records)
    return found


def read_changes(changes: DirectoryChanges) -> dict[str, dict[str, tuple[str | None, ...]]]:
    return {table: read_rows(getattr(changes, table)) for table in TABLES}


def everything(db: Database, folder: Path) -> dict[str, dict[str, tuple[str | None, ...]]]:
    """Every stored row as detection's full load exports it (no filter)."""
    folder.mkdir(exist_ok=True)
    return {
        table: read_rows(
            db.write_rows(
                folder / table,
                sqlite=sqlite.format(where=""),
                postgresql=postgresql.format(where=""),
            )
        )
        for table, (sqlite, postgresql) in DIRECTORY_EXPORTS.items()
    }


def ids(found: dict[str, dict[str, tuple[str | None, ...]]]) -> dict[str, set[str]]:
    return {table: set(rows) for table, rows in found.items()}


CHANGES = org(
    principals=[{"id": "emp-1001", "role": "support_agent", "manager": "emp-1000"}],  # as is
    subjects=[{"id": "user-9", "jurisdiction": "US", "protected": ["journalist", "minor"]}],
    tickets=[
        {  # T-1, closed
            "id": "T-1",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1001",
            "status": "closed",
            "opened": "2026-01-05T10:00:00Z",
            "opened_by": "subject",
        },
        {
            "id": "T-9",
            "kind": "support",
            "subject": "user-9",
            "assignee": "emp-1002",
            "status": "open",
            "opened": "2026-01-06T08:30:00.25Z",
        },
    ],
)


def test_a_merge_stamps_only_the_rows_it_adds_or_changes(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    first = system.directory.version()
    before = stamps(system.db)
    assert {seq for rows in before.values() for seq in rows.values()} == {first}

    load_org(system, CHANGES)
    second = system.directory.version()
    assert second == first + 1  # one bump per write
    after = stamps(system.db)
    newer = {
        table: {i for i, seq in rows.items() if seq == second} for table, rows in after.items()
    }
    assert newer == {"principals": set(), "subjects": {"user-9"}, "tickets": {"T-1", "T-9"}}
    for table, rows in after.items():
        unchanged = {i: s for i, s in before[table].items() if i not in newer[table]}
        assert {i: s for i, s in rows.items() if i not in newer[table]} == unchanged


def test_merging_again_stamps_nothing_and_keeps_the_version(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    load_org(system, CHANGES)
    version, before = system.directory.version(), stamps(system.db)
    load_org(system, SUPPORT_WORLD | {"tickets": []})
    load_org(system, CHANGES)
    assert system.directory.version() == version
    assert stamps(system.db) == before


def test_status_changes_stamp_their_row_with_the_new_version(system: Custos) -> None:
    load_org(system, SUPPORT_WORLD)
    before = stamps(system.db)

    system.directory.set_ticket_status("T-4", "closed")
    version = system.directory.version()
    expected = {**before, "tickets": {**before["tickets"], "T-4": version}}
    assert stamps(system.db) == expected

    # Setting the status it already has is still a write: stamped again, one version more.
    system.directory.set_principal_status("emp-1004", "terminated")
    assert system.directory.version() == version + 1
    expected["principals"] = {**before["principals"], "emp-1004": version + 1}
    assert stamps(system.db) == expected

    with pytest.raises(UnknownTicket):
        system.directory.set_ticket_status("T-404", "closed")
    with pytest.raises(UnknownPrincipal):
        system.directory.set_principal_status("emp-404", "leaving")
    assert (system.directory.version(), stamps(system.db)) == (version + 1, expected)


def test_write_changes_exports_exactly_the_rows_changed_after_a_version(
    system: Custos, tmp_path: Path
) -> None:
    empty = system.directory.write_changes(tmp_path, after=-1)
    assert empty.version == 0
    assert ids(read_changes(empty)) == {table: set() for table in TABLES}

    load_org(system, SUPPORT_WORLD)
    v1 = system.directory.version()
    load_org(system, CHANGES)
    system.directory.set_principal_status("emp-1002", "leaving")
    latest = system.directory.version()
    full = everything(system.db, tmp_path / "full")

    first = system.directory.write_changes(tmp_path, after=-1)
    assert first.version == latest
    assert read_changes(first) == full  # same rows, same columns, same formats
    assert ids(read_changes(system.directory.write_changes(tmp_path, after=0))) == ids(full)

    since = system.directory.write_changes(tmp_path, after=v1)
    assert since.version == latest
    found = read_changes(since)
    assert ids(found) == {
        "principals": {"emp-1002"},
        "subjects": {"user-9"},
        "tickets": {"T-1", "T-9"},
    }
    for table, rows in found.items():
        assert rows == {i: full[table][i] for i in rows}
    assert found["subjects"]["user-9"] == ("user-9", "journalist|minor", None, None)
    assert found["tickets"]["T-9"][5] == "2026-01-06 08:30:00.250000"
    assert found["principals"]["emp-1002"][6] == "leaving"

    nothing = system.directory.write_changes(tmp_path, after=latest)
    assert (nothing.version, ids(read_changes(nothing))) == (latest, {t: set() for t in TABLES})
    with pytest.raises(TypeError):
        system.directory.write_changes(tmp_path, after="0")  # type: ignore[arg-type]


def test_a_reader_tailing_concurrent_writers_never_misses_a_row(
    system: Custos, tmp_path: Path
) -> None:
    """Two threads merge (adding tickets and changing their own older ones) and set ticket
    statuses while a third copies the changes after the version it last read. Every write's
    rows must be in the first copy whose version reaches the write's stamp, and the copy kept
    from the changes alone must end equal to the stored directory."""
    rounds = 25
    # (stamp, ids) of every write, from the writer that alone touches those tickets.
    written: list[tuple[int, set[str]]] = []
    failures: list[BaseException] = []

    def ticket(name: str, opened_by: str) -> dict[str, str]:
        return {
            "id": name,
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1",
            "status": "open",
            "opened_by": opened_by,
        }

    # Tickets both threads change, by merge and by status: rows then counter in every write,
    # so PostgreSQL never finds a deadlock between them.
    shared = [ticket(f"shared-{k}", "subject") for k in range(3)]
    load_org(
        system,
        org(
            principals=[{"id": "emp-1", "role": "support_agent"}],
            subjects=[{"id": "user-1", "jurisdiction": "US"}],
            tickets=shared,
        ),
    )

    def writer(prefix: str) -> None:
        store = DirectoryStore(system.db)
        try:
            for n in range(rounds):
                new = [ticket(f"{prefix}-{n}-{k}", "subject") for k in range(4)]
                again = [ticket(f"{prefix}-{m}-0", f"round-{n}") for m in range(max(0, n - 3), n)]
                mine = new + again
                both = [ticket(t["id"], f"{prefix}-{n}") for t in shared]
                store.merge(_document(org(tickets=mine + both)), source=prefix)
                touched = {t["id"] for t in mine}
                written.append((_seq(system.db, next(iter(touched))), touched))
                store.set_ticket_status(f"shared-{n % 3}", "pending" if n % 2 else "open")
                if n % 3 == 0:
                    name = f"{prefix}-{n}-1"
                    store.set_ticket_status(name, "closed")
                    written.append((_seq(system.db, name), {name}))
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    copies: list[tuple[int, int, set[str]]] = []  # (after, version, ticket ids got)
    mirror: dict[str, dict[str, tuple[str | None, ...]]] = {table: {} for table in TABLES}

    def copy(after: int) -> int:
        changes = system.directory.write_changes(tmp_path / "tail", after=after)
        found = read_changes(changes)
        for table, rows in found.items():
            mirror[table].update(rows)
        copies.append((after, changes.version, set(found["tickets"])))
        return changes.version

    (tmp_path / "tail").mkdir()
    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    last = -1
    while any(thread.is_alive() for thread in threads):
        last = copy(last)
    for thread in threads:
        thread.join()
    assert not failures, failures
    copy(last)

    assert mirror == everything(system.db, tmp_path / "full")
    assert len(copies) > 2
    assert copies[0][0] == -1
    for (_, version, _), (after, _, _) in itertools.pairwise(copies):
        assert after == version  # each copy starts where the one before ended
    for stamp, names in written:
        # The first copy that covers the stamp holds every row of that write (possibly as
        # changed again later: its stamp then is higher, still above that copy's ``after``).
        covering = [got for after, version, got in copies if after < stamp <= version]
        assert len(covering) == 1, (stamp, names)
        assert names <= covering[0], (stamp, names - covering[0])


def test_a_copy_reading_every_id_after_its_changes_drops_every_removed_row(
    system: Custos, tmp_path: Path
) -> None:
    """A writer adds tickets and removes older ones while a reader copies the changes after
    the version it last read and, whenever that version moved, drops every row the ids
    (:meth:`DirectoryStore.write_ids`, read after the changes) do not name. Each copy at
    version V holds no ticket removed at V or before, and the last equals the directory."""
    rounds = 30

    def ticket(name: str) -> dict[str, str]:
        return {
            "id": name,
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1",
            "status": "open",
            "opened_by": "subject",
        }

    load_org(
        system,
        org(
            principals=[{"id": "emp-1", "role": "support_agent"}],
            subjects=[{"id": "user-1", "jurisdiction": "US"}],
        ),
    )
    removed: list[tuple[int, str]] = []  # (the version its removal made, ticket id)
    failures: list[BaseException] = []

    def writer() -> None:
        store = DirectoryStore(system.db)  # the only writer: its version is its own
        try:
            for n in range(rounds):
                store.merge(_document(org(tickets=[ticket(f"T-{n}-{k}") for k in range(3)])))
                if n >= 2:
                    store.remove_ticket(f"T-{n - 2}-{n % 3}", "test")
                    removed.append((store.version(), f"T-{n - 2}-{n % 3}"))
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    mirror: dict[str, dict[str, tuple[str | None, ...]]] = {table: {} for table in TABLES}
    copies: list[tuple[int, set[str]]] = []  # (version, ticket ids held)

    def copy(after: int) -> int:
        changes = system.directory.write_changes(tmp_path / "tail", after=after)
        for table, rows in read_changes(changes).items():
            mirror[table].update(rows)
        if changes.version != after:
            present = system.directory.write_ids(tmp_path / "tail")
            for table in TABLES:
                named = set(read_rows(present[table]))
                mirror[table] = {k: v for k, v in mirror[table].items() if k in named}
        copies.append((changes.version, set(mirror["tickets"])))
        return changes.version

    (tmp_path / "tail").mkdir()
    thread = threading.Thread(target=writer)
    thread.start()
    last = -1
    while thread.is_alive():
        last = copy(last)
    thread.join()
    assert not failures, failures
    copy(last)

    assert mirror == everything(system.db, tmp_path / "full")
    assert len(removed) == rounds - 2
    assert len(copies) > 2
    for version, held in copies:
        assert not {name for stamp, name in removed if stamp <= version} & held, version


def _document(data: dict[str, Any]) -> Any:
    import yaml

    from custos.directory import parse_text

    return parse_text(yaml.safe_dump(data), "test")


def _seq(db: Database, ticket_id: str) -> int:
    with db.session() as session:
        return int(session.scalar(select(TicketRow.seq).where(TicketRow.id == ticket_id)) or 0)
