"""Detection over Parquet files (``attach_parquet``): the same findings as from the custos
database, and every malformed file refused up front with the table, file and column named —
never a value, never a crash half-way through the rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from custos.access import Custos
from custos.detect import EventStore, attach_parquet, connect, load_store
from custos.errors import InvalidInput
from tests.detect.office import Findings, Office, at, findings


@pytest.fixture
def office(system: Custos) -> Custos:
    office = Office()
    for n in range(1, 6):  # a convergence, colleague lookups, an export, refusal and retries
        office.access(f"emp-{n}", "user-7", at(4, 10 + n), "location")
    office.access("emp-3", "jour-1", at(3, 11), "ip_history")
    office.access("emp-5", "acct-2", at(2, 12), "contact", action="export", records=400)
    office.access("emp-6", "user-11", at(5, 10), decision="deny")
    office.access("emp-6", "user-11", at(5, 10.2), purpose="fraud")
    assert office.detect(system)
    return system


def _export(system: Custos, folder: Path, **replace: str) -> dict[str, Path]:
    """The office's tables as Parquet files; ``replace`` maps a table to the SELECT that
    writes it instead (from the loaded table of the same name)."""
    con = connect(1)
    try:
        load_store(con, EventStore(system.db), system.directory)
        files = {}
        for table in ("events", "principals", "subjects", "tickets"):
            files[table] = folder / f"{table}.parquet"
            select = replace.get(table, "SELECT * FROM " + table)
            target = str(files[table]).replace("'", "''")
            con.execute(f"COPY ({select}) TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return files


def _from_store(system: Custos) -> Findings:
    con = connect(1)
    try:
        load_store(con, EventStore(system.db), system.directory)
        return findings(con)
    finally:
        con.close()


def _from_parquet(files: dict[str, Path]) -> Findings:
    con = connect(1)
    try:
        attach_parquet(con, files)
        return findings(con)
    finally:
        con.close()


def _refusal(files: dict[str, Path]) -> str:
    con = connect(1)
    try:
        with pytest.raises(InvalidInput) as refused:
            attach_parquet(con, files)
        # Nothing was attached: no view of a half-checked set of files.
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (
            0,
        )
    finally:
        con.close()
    return refused.value.message


def test_parquet_files_give_the_findings_the_database_gives(office: Custos, tmp_path: Path) -> None:
    expected = _from_store(office)
    assert expected
    assert _from_parquet(_export(office, tmp_path)) == expected


def test_events_explained_as_decided_give_the_same_findings(office: Custos, tmp_path: Path) -> None:
    # The office's ticketed work is all covered by its tickets, as the guarded path saw it.
    explained = (
        "SELECT * REPLACE (CASE WHEN ticket IS NOT NULL AND decision = 'allow' "
        "AND action <> 'export' THEN 'ticket' END AS explained) FROM events"
    )
    files = _export(office, tmp_path, events=explained)
    con = connect(1)
    try:
        row = con.execute("SELECT count(explained) FROM read_parquet(?)", [str(files["events"])])
        assert (row.fetchone() or (0,))[0] > 200
    finally:
        con.close()
    assert _from_parquet(files) == _from_store(office)


def test_absent_optional_columns_read_as_null(office: Custos, tmp_path: Path) -> None:
    files = _export(
        office,
        tmp_path,
        events="SELECT * EXCLUDE (source, break_glass, granted) FROM events",
        principals="SELECT id, role, team, status FROM principals",
        tickets="SELECT * EXCLUDE (opened_by) FROM tickets",
    )
    assert _from_parquet(files) == _from_store(office)


def test_times_with_a_zone_and_narrower_integers_are_accepted(
    office: Custos, tmp_path: Path
) -> None:
    files = _export(
        office,
        tmp_path,
        events="SELECT * REPLACE (timezone('UTC', time) AS time, records::INTEGER AS records) "
        "FROM events",
    )
    con = connect(1)
    con.execute("SET TimeZone = 'Asia/Tokyo'")  # the stored instants, not the session's zone
    try:
        attach_parquet(con, files)
        assert findings(con) == _from_store(office)
    finally:
        con.close()


def test_an_event_without_a_time_is_refused_not_a_crash(office: Custos, tmp_path: Path) -> None:
    files = _export(
        office,
        tmp_path,
        events="SELECT * REPLACE (CASE WHEN subject = 'jour-1' THEN NULL ELSE time END AS time) "
        "FROM events",
    )
    message = _refusal(files)
    assert message == f"events: column 'time' of {files['events']} is empty in 1 rows"


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        ("SELECT * EXCLUDE (principal) FROM events", "has no column 'principal'"),
        (
            "SELECT * REPLACE (CAST(time AS VARCHAR) AS time) FROM events",
            "is VARCHAR, not TIMESTAMP",
        ),
        ("SELECT * REPLACE (records::DOUBLE AS records) FROM events", "is DOUBLE, not BIGINT"),
        (
            "SELECT * REPLACE (CASE WHEN subject = 'jour-1' THEN 'allowed' ELSE decision END "
            "AS decision) FROM events",
            "holds a value other than allow, approval_required, deny in 1 rows",
        ),
        (
            "SELECT * REPLACE (CASE WHEN subject = 'jour-1' THEN 'lookup' ELSE action END "
            "AS action) FROM events",
            "'action'",
        ),
        (
            "SELECT * REPLACE (CASE WHEN subject = 'jour-1' THEN 'yes' END AS explained) "
            "FROM events",
            "'explained' of",
        ),
        (
            # An export, a refusal: what the guarded path never calls explained.
            "SELECT * REPLACE (CASE WHEN action = 'export' OR decision = 'deny' THEN 'ticket' "
            "END AS explained) FROM events",
            "is set in 2 rows that are not allowed accesses citing a ticket",
        ),
    ],
)
def test_malformed_event_files_are_refused_by_column(
    office: Custos, tmp_path: Path, select: str, expected: str
) -> None:
    message = _refusal(_export(office, tmp_path, events=select))
    assert message.startswith("events: ")
    assert expected in message
    assert "jour-1" not in message  # never a value


def test_a_directory_record_without_an_id_is_refused(office: Custos, tmp_path: Path) -> None:
    files = _export(
        office,
        tmp_path,
        tickets="SELECT * REPLACE (CASE WHEN assignee = 'emp-3' THEN NULL ELSE id END AS id) "
        "FROM tickets",
    )
    assert "tickets: column 'id' of" in _refusal(files)


def test_missing_unreadable_and_unknown_files_are_refused(office: Custos, tmp_path: Path) -> None:
    files = _export(office, tmp_path)
    assert "no such Parquet file" in _refusal({**files, "events": tmp_path / "nowhere.parquet"})
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet at all, and long enough to have a footer of sorts")
    assert "subjects: " in _refusal({**files, "subjects": junk})
    assert "not a readable Parquet file" in _refusal({**files, "subjects": junk})
    assert "missing: tickets" in _refusal({k: v for k, v in files.items() if k != "tickets"})
    assert "unknown: logins" in _refusal({**files, "logins": files["events"]})


def test_a_quote_in_a_file_name_is_a_file_name(office: Custos, tmp_path: Path) -> None:
    folder = tmp_path / "it's here"
    folder.mkdir()
    files = _export(office, folder)
    assert _from_parquet(files) == _from_store(office)
