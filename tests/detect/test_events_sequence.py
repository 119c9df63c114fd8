"""The access events' change sequence: every row stored or changed takes the next number, and
``write_changes`` hands a copy exactly the rows numbered above the last number it saw."""

from __future__ import annotations

import csv
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from custos.access import Custos
from custos.detect import ChangedRows, EventStore
from custos.store import Database, WrittenRows
from tests.detect.test_events import FLAG_VALUES, event, lines

#: Where ``seq`` and ``folded`` are in a row of ``write_changes``: after the fifteen columns
#: of ``EVENT_COLUMNS``.
SEQ, FOLDED = 15, 16


def read_rows(written: WrittenRows) -> list[list[Any]]:
    """The rows of a written file as lists (SQLite's JSON arrays; PostgreSQL's CSV, where an
    empty field is null)."""
    if written.format == "json_arrays":
        text_lines = written.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in text_lines]
    with written.path.open(newline="", encoding="utf-8") as handle:
        return [[value if value != "" else None for value in row] for row in csv.reader(handle)]


def changes(store: EventStore, folder: Path, after: int) -> tuple[ChangedRows, dict[str, Any]]:
    """``write_changes(after)`` and its rows by id as ``(seq, folded)``."""
    result = store.write_changes(folder / f"changes-{after}", after)
    rows = read_rows(result.rows)
    assert len(rows) == result.rows.count
    assert all(row[FOLDED] in ("true", "false") for row in rows)
    found = {row[0]: (int(row[SEQ]), row[FOLDED] == "true") for row in rows}
    assert len(found) == len(rows)
    return result, found


def test_each_append_numbers_the_rows_it_stores_after_the_last(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    first, rows = changes(store, tmp_path, 0)
    assert (first.count, first.high, rows) == (0, 0, {})
    assert re.fullmatch("[0-9a-f]{32}", first.store)

    store.append([event(id="ev-1"), event(id="ev-2"), event(id="ev-3")])
    second, rows = changes(store, tmp_path, 0)
    assert sorted(seq for seq, _ in rows.values()) == [1, 2, 3]
    assert (second.count, second.high, second.store) == (3, 3, first.store)

    store.append([event(id="ev-4"), event(id="ev-2"), event(id="ev-5")])
    third, rows = changes(store, tmp_path, second.high)
    assert {key: seq for key, (seq, _) in rows.items()} == {"ev-4": 4, "ev-5": 5}
    assert (third.count, third.high, third.store) == (5, 5, first.store)
    assert changes(store, tmp_path, third.high)[1] == {}


def test_importing_the_same_file_again_hands_out_no_number(system: Custos, tmp_path: Path) -> None:
    store = EventStore(system.db)
    data = lines(event(), event(id="ev-2"), event(id="ev-3"))
    store.import_lines(data, "log.jsonl")
    before, _ = changes(store, tmp_path, 0)
    assert store.import_lines(data, "log.jsonl").added == 0
    after, rows = changes(store, tmp_path, before.high)
    assert (after.count, after.high, rows) == (3, 3, {})


def test_a_count_folded_in_from_a_release_renumbers_its_decision(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    store.append(
        [
            event(id="ev-d", records=...),
            event(id="ev-counted", records=4),
        ]
    )
    before, _ = changes(store, tmp_path, 0)
    store.append(
        [
            event(id="ev-d:release", type="release", decision_id="ev-d", records=3),
            # Its decision has a count of its own: it keeps it, and keeps its number.
            event(id="ev-counted:release", type="release", decision_id="ev-counted", records=9),
        ]
    )
    after, rows = changes(store, tmp_path, before.high)
    assert rows == {
        "ev-d:release": (3, True),
        "ev-counted:release": (4, True),
        "ev-d": (5, False),
    }
    assert (after.count, after.high) == (4, 5)
    written = {row[0]: row for row in read_rows(after.rows)}
    assert int(written["ev-d"][10]) == 3  # records, as folded in


def test_a_release_stored_before_its_decision_is_renumbered_as_folded_when_it_arrives(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    store.append(
        [
            event(id="ev-d:release", type="release", decision_id="ev-d", records=3),
            # About another subject than its decision will be: never folded.
            event(
                id="ev-x:release", type="release", decision_id="ev-x", subject="user-7", records=1
            ),
        ]
    )
    before, rows = changes(store, tmp_path, 0)
    assert rows == {"ev-d:release": (1, False), "ev-x:release": (2, False)}
    store.append([event(id="ev-d", records=...), event(id="ev-x", records=...)])
    after, rows = changes(store, tmp_path, before.high)
    assert rows == {"ev-d": (3, False), "ev-x": (4, False), "ev-d:release": (5, True)}
    assert (after.count, after.high) == (4, 5)
    # The release and its decision arriving together: numbered once each, as stored.
    store.append(
        [
            event(id="ev-e:release", type="release", decision_id="ev-e", records=2),
            event(id="ev-e", records=...),
        ]
    )
    last, rows = changes(store, tmp_path, after.high)
    # 7 went to ev-e as stored, 8 when the release's count was folded into it.
    assert rows == {"ev-e:release": (6, True), "ev-e": (8, False)}
    assert (last.count, last.high) == (6, 8)


def test_changes_from_nothing_are_what_write_rows_writes_and_the_folded_releases(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    events = [
        event(id=f"ev-{n}", break_glass=flag, grant=flag, records=...)
        for n, flag in enumerate(FLAG_VALUES)
    ]
    events += [
        event(id="ev-0:release", type="release", decision_id="ev-0", records=7),
        event(id="ev-1:release", type="release", decision_id="ev-1", subject="user-7", records=1),
        event(id="ev-typed", type="release", decision_id=7),
        event(id="ev-quoted", source='a "quoted", comma\nand newline — é'),
    ]
    store.append(events)
    every = {row[0]: row for row in read_rows(store.write_rows(tmp_path / "all"))}
    result = store.write_changes(tmp_path / "changes", 0)
    changed = {row[0]: row for row in read_rows(result.rows)}
    assert set(changed) == {e["id"] for e in events}
    assert {key for key, row in changed.items() if row[FOLDED] == "true"} == {"ev-0:release"}
    assert {key: row[:SEQ] for key, row in changed.items() if key != "ev-0:release"} == every
    # Numbered as stored, then ev-0 once more for the count folded into it.
    numbers = {key: int(row[SEQ]) for key, row in changed.items()}
    assert sorted(numbers.values()) == list(range(2, len(events) + 2))
    assert numbers["ev-0"] == len(events) + 1
    assert (result.count, result.high) == (len(events), len(events) + 1)


def test_a_lost_sequence_row_is_made_again_under_a_new_identity(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    store.append([event(id="ev-1"), event(id="ev-2")])
    before, _ = changes(store, tmp_path, 0)
    with system.db.engine.begin() as conn:
        conn.execute(text("DELETE FROM event_sequence"))
    lost, rows = changes(store, tmp_path, 0)
    assert (lost.store, lost.count, lost.high, len(rows)) == ("", 2, 2, 2)
    store.append([event(id="ev-3")])
    again, rows = changes(store, tmp_path, lost.high)
    assert rows == {"ev-3": (3, False)}
    assert (again.count, again.high) == (3, 3)
    assert again.store not in ("", before.store)


def test_concurrent_writers_never_commit_a_number_below_what_a_reader_has_seen(
    system: Custos, tmp_path: Path
) -> None:
    """Two writers, each with a database handle of its own (as two processes would have),
    append batches that fold releases into decisions stored by the other, while a reader
    keeps asking for the rows above the highest number it has seen: when the writers are
    done, one more read leaves it with every row as stored, each at its last number."""
    url = system.db.url
    batches = 30
    failures: list[BaseException] = []

    def write(name: str, other: str) -> None:
        db = Database(url)
        try:
            store = EventStore(db)
            for n in range(batches):
                store.append(
                    [
                        *(event(id=f"{name}-{n}-{k}", records=...) for k in range(8)),
                        # The other writer's decision of this round, stored already or not.
                        event(
                            id=f"{other}-{n}-0:release",
                            type="release",
                            decision_id=f"{other}-{n}-0",
                            records=n,
                        ),
                    ]
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            db.dispose()

    writers = [
        threading.Thread(target=write, args=("a", "b")),
        threading.Thread(target=write, args=("b", "a")),
    ]
    reader_db = Database(url)
    reader = EventStore(reader_db)
    seen: dict[str, tuple[int, bool]] = {}
    high, reads = 0, 0
    try:
        for thread in writers:
            thread.start()
        while any(thread.is_alive() for thread in writers) or reads == 0:
            result, rows = changes(reader, tmp_path, high)
            assert all(seq > high for seq, _ in rows.values())
            assert all(seq <= result.high for seq, _ in rows.values())
            seen.update(rows)
            high, reads = result.high, reads + 1
        for thread in writers:
            thread.join()
        assert not failures, failures
        final, rows = changes(reader, tmp_path, high)
        seen.update(rows)
        _, everything = changes(reader, tmp_path, 0)
    finally:
        reader_db.dispose()
    assert len(everything) == final.count == 2 * batches * 9
    assert len({seq for seq, _ in everything.values()}) == len(everything)
    assert seen == everything
    assert final.high == max(seq for seq, _ in everything.values())
    assert sum(folded for _, folded in everything.values()) == 2 * batches
    assert reads > 1


def test_a_changes_file_that_cannot_be_written_is_an_os_error_and_changes_nothing(
    system: Custos, tmp_path: Path
) -> None:
    store = EventStore(system.db)
    store.append([event()])
    with pytest.raises(FileNotFoundError):
        store.write_changes(tmp_path / "missing" / "changes", 0)
    assert changes(store, tmp_path, 0)[0].count == 1  # the store's connection still works
