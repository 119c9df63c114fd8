"""pgaudit logs imported as access events: a throwaway PostgreSQL cluster of this test's own,
with Debian's pgaudit preloaded and its log written to files (csvlog and stderr), runs real
statements through psycopg; the real log files are then imported through a mapping file.

The machine's shared server on 5432 is not touched: the cluster lives in a temporary folder,
on a free port, and is stopped (which flushes its log) before the log is read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.detect import EventStore
from custos.detect.importers import import_log, parse_mapping, read_log
from custos.detect.importers.common import (
    ParametersNotLogged,
    TableTarget,
    Unparsed,
    statement_subjects_cached,
)
from custos.detect.importers.pgaudit import parse_time, prefix_pattern
from custos.errors import ValidationFailed
from custos.store.bulk import BulkAccessStore
from custos.textfiles import read_lines
from tests.factories import SUPPORT_WORLD, load_org

PREFIX = "%m [%p] %q%u@%d "
MAPPING = f"""
format: pgaudit
purpose: support
source: billing-db
log_line_prefix: "{PREFIX}"
principals:
  - role: support_ro
    principal: emp-1001
  - role: dba
    principal: emp-2001
tables:
  - table: public.users
    category: contact
    subject_column: id
  - table: public.payments
    category: payment
    subject_column: user_id
    subject_prefix: user-
  - table: public.logins
    category: ip_history
    subject_column: user_id
"""


def _bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*") if (p / "lib" / "pgaudit.so").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


@dataclass(frozen=True)
class Cluster:
    csvlog: Path
    jsonlog: Path
    stderr: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    # initdb and the server refuse to run as root: run them as PostgreSQL's own user.
    return ["runuser", "-u", owner, "--", *command] if owner else command


def _workload(port: int) -> None:
    """Real statements, as a person would send them through a driver or psql."""
    url = f"host=127.0.0.1 port={port} dbname=postgres"
    with psycopg.connect(f"{url} user=postgres", autocommit=True) as admin:
        admin.execute("CREATE ROLE support_ro LOGIN")
        admin.execute("CREATE ROLE intruder LOGIN")
        admin.execute("CREATE ROLE dba LOGIN SUPERUSER")
        admin.execute("CREATE TABLE users (id text PRIMARY KEY, email text, city text)")
        admin.execute("CREATE TABLE payments (user_id text, amount int)")
        admin.execute("CREATE TABLE misc (note text)")
        admin.execute("CREATE TABLE logins (user_id text, ip inet, at timestamptz)")
        admin.execute("GRANT SELECT, UPDATE ON users, payments, misc TO support_ro, intruder")
        # Rows to read, inserted unaudited (the values must never reach custos's tables).
        admin.execute("SET pgaudit.log = 'none'")
        admin.execute(
            "INSERT INTO logins VALUES ('user-42', '203.0.113.77', now()),"
            " ('user-7', '198.51.100.23', now()), ('user-1', '203.0.113.9', now())"
        )
    with psycopg.connect(f"{url} user=support_ro", autocommit=True) as support:
        # 1: a parameter names the subject (pgaudit.log_parameter = on).
        support.execute("SELECT email FROM users WHERE id = %s", ("user-42",))
        # 2: a literal, in a statement over several lines, through an alias.
        support.execute(
            "SELECT u.email,\n       u.city\n  FROM public.users u\n WHERE u.id = 'user-7'"
        )
        # 3: two subjects at once.
        support.execute("SELECT * FROM users WHERE id IN (%s, %s)", ("user-1", "user-2"))
        # 4: a write.
        support.execute("UPDATE users SET city = %s WHERE id = %s", ("Lyon", "user-1"))
        # 5: every subject: not one subject's access, so reported, not guessed.
        support.execute("SELECT count(*) FROM users")
        # 6: another table, its ids made with a prefix.
        support.execute("SELECT amount FROM payments WHERE user_id = %s AND amount > %s", ("42", 0))
        # 7: a table the mapping does not know.
        support.execute("SELECT * FROM misc")
    with psycopg.connect(f"{url} user=intruder", autocommit=True) as intruder:
        # 8: a role the mapping does not know.
        intruder.execute("SELECT email FROM users WHERE id = %s", ("user-42",))
    with psycopg.connect(f"{url} user=dba", autocommit=True) as dba:
        # 9: the statement logged with the first of its two entries only.
        dba.execute("SET pgaudit.log_statement_once = on")
        dba.execute("SELECT a.email FROM users a JOIN users b ON a.id = b.id WHERE a.id = 'user-5'")
    with psycopg.connect(f"{url} user=dba", autocommit=True) as dba:
        # 10: parameters not logged in this session: the subject cannot be known.
        dba.execute("SET pgaudit.log_parameter = off")
        dba.execute("SELECT email FROM users WHERE id = %s", ("user-9",))
        # 11: DDL is audited too, and is no access to personal data.
        dba.execute("CREATE TABLE scratch (x int)")
    with psycopg.connect(f"{url} user=dba", autocommit=True) as dba:
        # 12: the 2022 pattern: everyone's IP addresses pulled straight from the table,
        # with the rows count logged (pgaudit.log_rows).
        dba.execute("SET pgaudit.log_rows = on")
        dba.execute("SELECT user_id, ip FROM logins").fetchall()
        # 13: some of them, by a pattern on the addresses (a range: the value never kept).
        dba.execute("SELECT user_id FROM logins WHERE host(ip) LIKE '203.0.113.%'").fetchall()
        # 14: only a count.
        dba.execute("SELECT count(*) FROM logins WHERE at > %s", ("2020-01-01",)).fetchall()
    # 15: a whole table copied out by a role the mapping does not know.
    with (
        psycopg.connect(f"{url} user=intruder", autocommit=True) as intruder,
        intruder.cursor() as cursor,
        cursor.copy("COPY users TO STDOUT") as copy,
    ):
        for _ in copy:
            pass


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL with pgaudit, after the workload ran and the server stopped."""
    binaries = _bin()
    if binaries is None:
        pytest.skip(
            "pgaudit is not installed: scripts/test.d/06-pgaudit.sh installs Debian's "
            "postgresql-<version>-pgaudit"
        )
    owner = None
    folder = Path(tempfile.mkdtemp(prefix="custos-pgaudit-"))
    if os.geteuid() == 0:
        owner = "postgres"
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip("running as root and there is no postgres account to run initdb as")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data, logs = folder / "data", folder / "log"
    port = _free_port()
    try:
        subprocess.run(
            _as_owner([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U",
                       "postgres", "--no-sync", "--no-instructions"], owner),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        settings_text = f"""
port = {port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{folder}'
shared_preload_libraries = 'pgaudit'
logging_collector = on
log_destination = 'csvlog,jsonlog,stderr'
log_directory = '{logs}'
log_filename = 'postgresql.log'
log_line_prefix = '{PREFIX}'
log_timezone = 'UTC'
pgaudit.log = 'read,write,ddl'
pgaudit.log_parameter = on
pgaudit.log_relation = on
fsync = off
shared_buffers = 16MB
max_connections = 10
"""
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(settings_text)
        pg_ctl = str(binaries / "pg_ctl")
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-l", str(folder / "start.log"), "-w", "-t",
                       "60", "start"], owner),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        try:
            _workload(port)
        finally:
            # Stopping flushes the logging collector: the files are complete afterwards.
            subprocess.run(
                _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], owner),
                check=False, capture_output=True, timeout=120,
            )  # fmt: skip
        yield Cluster(
            csvlog=logs / "postgresql.csv",
            jsonlog=logs / "postgresql.json",
            stderr=logs / "postgresql.log",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _accesses(system: Custos) -> set[tuple[str, str, str, str]]:
    return {
        (e.principal, e.action, e.subject, e.category)
        for e in EventStore(system.db).search(limit=1000)
    }


EXPECTED = {
    ("emp-1001", "read", "user-42", "contact"),
    ("emp-1001", "read", "user-7", "contact"),
    ("emp-1001", "read", "user-1", "contact"),
    ("emp-1001", "read", "user-2", "contact"),
    ("emp-1001", "modify", "user-1", "contact"),
    ("emp-1001", "read", "user-42", "payment"),
    ("emp-2001", "read", "user-5", "contact"),
}


def test_a_real_csvlog_becomes_events_with_subjects_from_the_parameters(
    system: Custos, cluster: Cluster
) -> None:
    lines = read_lines(cluster.csvlog, "a log")
    mapping = parse_mapping(MAPPING, "map.yaml")
    report = import_log(EventStore(system.db), lines, str(cluster.csvlog), mapping)
    assert _accesses(system) == EXPECTED
    # user-5's second entry carried only "<previously logged>": the first one's statement
    # named the subject for both.
    assert sum("<previously logged>" in line for line in lines) == 1
    assert (report.events, report.added, report.rejected) == (7, 7, 0)
    assert report.duplicates == 1  # user-5's second entry (the join's other alias)
    assert report.unmapped_by_reason() == {
        "not_access": 5,  # CREATE TABLE: users, payments, misc, logins, scratch
        "principal": 1,  # intruder, naming a subject
        "resource": 1,  # misc
        "subject": 1,  # a parameter not logged
    }
    # count(*) over every user, the three reads of logins, intruder's COPY: bulk accesses.
    assert (report.bulk, report.bulk_added) == (5, 5)
    details = {u.reason: u.detail for u in report.unmapped}
    assert details["principal"] == "role 'intruder'"
    assert details["resource"] == "table 'public.misc'"
    assert "log_parameter is off" in " ".join(u.detail for u in report.unmapped)
    # Each unmapped entry's line is the line its record starts on in the real file.
    for item in report.unmapped:
        assert lines[item.line - 1].count(",") >= 10
        assert "AUDIT: " in lines[item.line - 1]
    event = next(e for e in EventStore(system.db).search() if e.subject == "user-7")
    assert (event.purpose, event.ticket, event.decision, event.source) == (
        "support", None, "allow", "billing-db",
    )  # fmt: skip
    assert event.extras()["guarded"] is False
    assert event.extras()["object"] == "public.users"
    # Who the log said it was, and which mapping made that emp-1001: a mapping changed to
    # blame someone else shows in the events it made.
    assert event.extras()["log_principal"] == "support_ro"
    assert event.extras()["mapping"] == mapping.digest
    assert mapping.digest.startswith("sha256:")
    assert parse_mapping(MAPPING.replace("emp-1001", "emp-1002"), "m").digest != mapping.digest
    # The multi-line statement's record spans several lines of the file; its event names
    # the first.
    assert "AUDIT: SESSION" in lines[event.extras()["log_line"] - 1]
    assert not lines[event.extras()["log_line"]].startswith("20")
    again = import_log(EventStore(system.db), lines, str(cluster.csvlog), mapping)
    assert (again.added, again.unchanged) == (0, 7)
    assert (again.bulk_added, again.bulk_unchanged) == (0, 5)


@pytest.mark.parametrize("destination", ["stderr", "jsonlog"])
def test_the_other_logs_of_the_same_server_give_the_same_accesses(
    system: Custos, cluster: Cluster, destination: str
) -> None:
    csv_read = read_log(read_lines(cluster.csvlog, "a log"), parse_mapping(MAPPING, "m"))
    lines = read_lines(getattr(cluster, destination), "a log")
    if destination == "stderr":
        assert any(line.startswith("\t") for line in lines)  # the multi-line statement
    report = import_log(EventStore(system.db), lines, destination, parse_mapping(MAPPING, "m"))
    assert _accesses(system) == EXPECTED
    assert report.unmapped_by_reason() == csv_read.unmapped_by_reason()
    assert (report.events, report.duplicates) == (len(csv_read.events), csv_read.duplicates)
    assert report.bulk == len(csv_read.bulk) == 5
    assert {(b["time"], b["object"], b["scope"], b["rows"]) for b in csv_read.bulk} == {
        (b["time"], b["object"], b["scope"], b["rows"]) for b in BulkAccessStore(system.db).search()
    }
    assert {(e.subject, e.time) for e in csv_read.events} == {
        (e.subject, e.time) for e in EventStore(system.db).search()
    }


def test_the_cli_reports_unmapped_lines_and_refuses_a_broken_log(
    home: Path, cluster: Cluster, tmp_path: Path
) -> None:
    env = {**os.environ, "CUSTOS_HOME": str(home), "COLUMNS": "200"}

    def custos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "custos", *args],
            capture_output=True, text=True, env=env, timeout=180, check=False,
        )  # fmt: skip

    assert custos("init").returncode == 0
    mapping = tmp_path / "map.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    broken = tmp_path / "broken.csv"
    text = cluster.csvlog.read_text(encoding="utf-8")
    broken.write_text(text + '2026-01-05 10:00:00.000 UTC,"unterminated\n', encoding="utf-8")
    refused = custos("events", "import", "--format", "pgaudit", "--mapping", str(mapping),
                     str(broken))  # fmt: skip
    assert refused.returncode == 2
    assert "cannot be read; nothing was stored" in refused.stderr + refused.stdout
    assert "not a csvlog record" in refused.stderr + refused.stdout
    done = custos("events", "import", "--format", "pgaudit", "--mapping", str(mapping),
                  str(cluster.csvlog))  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "principal not mapped (role 'intruder')" in out
    assert (
        "imported 7 event(s) (7 stored, 0 already present, 1 repeat(s) of one); 5 bulk "
        "access(es) to many people (5 stored, 0 already present); unmapped 8" in out
    )
    assert "user-42" not in out  # what a statement read is not echoed
    # The bulk reads show in `custos detect` like any rule's alerts, without their values.
    found = custos("detect", "--json")
    assert found.returncode == 0, found.stderr
    bulk = [a for a in json.loads(found.stdout) if a["rule"] == "bulk_read"]
    assert {a["principals"][0]: a["severity"] for a in bulk} == {
        "emp-2001": "critical",
        "emp-1001": "medium",
        "unmapped:intruder": "high",
    }
    assert not [v for v in LITERALS if v in json.dumps(bulk)]


def test_a_log_line_that_cannot_be_read_refuses_the_file(
    system: Custos, cluster: Cluster, tmp_path: Path
) -> None:
    lines = read_lines(cluster.stderr, "a log")
    lines.insert(3, "garbage that is no log line")
    store = EventStore(system.db)
    with pytest.raises(ValidationFailed) as caught:
        import_log(store, lines, "postgresql.log", parse_mapping(MAPPING, "m"))
    assert caught.value.problems == [
        f"postgresql.log: line 4: does not start with the log line prefix {PREFIX!r}"
    ]
    assert store.count() == 0
    # A csvlog record over several lines is set aside whole: every line of it.
    rows = read_lines(cluster.csvlog, "a log")
    start = next(n for n, line in enumerate(rows) if "'user-7'" not in line and "u.city" in line)
    broken = [*rows[: start - 1], "x" + rows[start - 1], *rows[start:]]  # not a time
    rejects = tmp_path / "rejects.csv"
    report = import_log(store, broken, "broken.csv", parse_mapping(MAPPING, "m"), rejects=rejects)
    assert (report.added, report.rejected) == (6, 1)
    aside = rejects.read_text(encoding="utf-8").splitlines()
    assert len(aside) == 4
    assert aside[0].startswith("x20")
    assert "'user-7'" in aside[-1]


def test_log_times_and_prefixes() -> None:
    assert (
        parse_time("2026-01-05 10:03:00.123 UTC").isoformat() == "2026-01-05T10:03:00.123000+00:00"
    )
    assert parse_time("2026-01-05 11:03:00 +01").isoformat() == "2026-01-05T10:03:00+00:00"
    assert parse_time("2026-01-05 11:03:00 CET").isoformat() == "2026-01-05T10:03:00+00:00"
    with pytest.raises(ValueError, match="log_timezone"):
        parse_time("2026-01-05 11:03:00 Nowhere/Atlantis")
    found = prefix_pattern("%t [%p]: [%l-1] user=%u,db=%d,app=%a,client=%h ").match(
        "2026-01-05 10:03:00 UTC [77]: [3-1] user=alice,db=shop,app=psql,client=10.0.0.1 "
        "LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,select 1,<none>"
    )
    assert found is not None
    assert (found["user"], found["database"], found["pid"]) == ("alice", "shop", "77")
    assert found["message"].startswith("AUDIT: ")


@pytest.mark.parametrize(
    ("statement", "params", "subjects"),
    [
        ("SELECT * FROM users WHERE id = $1", ["u-1"], {"u-1"}),
        ("SELECT * FROM users WHERE (id = 'a' OR id = 'b') AND city = $1", ["x"], {"a", "b"}),
        ("SELECT * FROM users WHERE id = 'a' OR city = 'Lyon'", [], None),  # not restricted
        ("SELECT * FROM users WHERE id IN (SELECT id FROM users)", [], None),  # a subquery
        ("SELECT * FROM users WHERE id = $3", ["a"], None),  # a parameter the log lacks
        ("SELECT * FROM public.users u, misc m WHERE m.id = 'a'", [], None),  # another table's
        ("INSERT INTO users (email, id) VALUES ($1,$2), ('e', 'b')", ["e", "a"], {"a", "b"}),
        ("INSERT INTO users VALUES ('a', 'e')", [], None),  # no column list
        ("DELETE FROM users WHERE id = 'a'::text", [], {"a"}),
        ("WITH x AS (SELECT * FROM users WHERE id = 'a') SELECT * FROM x", [], {"a"}),
        ("SELECT * FROM users WHERE id = 'a' UNION SELECT * FROM users", [], None),
        ("SELECT * FROM other.users WHERE id = 'a'", [], None),  # another schema's table
        ("SELECT 1; SELECT * FROM users WHERE id = 'a'", [], {"a"}),  # several statements
        # A bulk INSERT longer than what is kept is analysed all the same.
        (
            "INSERT INTO users (id) VALUES " + ", ".join(f"('u{i}')" for i in range(9000)),
            [],
            {f"u{i}" for i in range(9000)},
        ),
    ],
)
def test_the_subjects_a_statement_names(
    statement: str, params: list[str], subjects: set[str] | None
) -> None:
    found = statement_subjects_cached(
        statement, "postgres", TableTarget("public", "users"), "id", params
    )
    assert found == subjects
    with pytest.raises(ParametersNotLogged):
        statement_subjects_cached(
            "SELECT * FROM users WHERE id = $1", "postgres", TableTarget("public", "users"),
            "id", None,
        )  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120), st.lists(st.text(max_size=8), max_size=3))
def test_any_statement_text_is_analysed_or_called_unparsed(text: str, params: list[str]) -> None:
    try:
        found = statement_subjects_cached(
            text, "postgres", TableTarget("public", "users"), "id", params
        )
    except Unparsed:
        return
    assert found is None or isinstance(found, set)


MAPPED = parse_mapping(MAPPING, "m")


def _csv_line(fields: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


AUDITS = st.builds(
    lambda kind, cls, obj, stmt, params: "AUDIT: " + _csv_line(
        [kind, "1", "1", cls, "SELECT", "TABLE", obj, stmt, params]
    ),
    st.sampled_from(["SESSION", "OBJECT", "X"]),
    st.sampled_from(["READ", "WRITE", "DDL"]),
    st.sampled_from(["public.users", "public.payments", "", "x.y"]),
    st.one_of(
        st.text(max_size=80),
        st.sampled_from([
            "select * from users where id = $1", "update users set a=$2 where id in ($1,$3)",
            "select * from users where id = 'a' or id = $9", "insert into users(id) values ($1)",
            "select * from users u join payments p on p.user_id = u.id where u.id = $1",
        ]),
    ),
    st.one_of(st.text(max_size=20), st.sampled_from(["<none>", "<not logged>", "user-1,2"])),
)  # fmt: skip
CSV_RECORDS = st.builds(
    lambda user, message: _csv_line(
        ["2026-01-05 10:00:00.000 UTC", user, "db", "7", "", "5f.1", "1", "SELECT", "", "",
         "0", "LOG", "00000", message, *[""] * 12]
    ),
    st.sampled_from(["support_ro", "dba", "nobody", ""]),
    st.one_of(AUDITS, st.text(max_size=40)),
)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(CSV_RECORDS, st.text(max_size=60)), min_size=1, max_size=8))
def test_garbage_in_a_csvlog_never_crashes_and_is_reported(lines: list[str]) -> None:
    lines = [
        line
        for record in lines
        for line in (record.replace("\r", "").split("\n") if record else [record])
    ]
    read = read_log(lines, MAPPED)
    assert len(read.events) <= 3 * max(read.entries, 1)
    for rejected in read.rejected:
        assert all(1 <= n <= len(lines) for n in rejected.lines)
        assert rejected.problem.startswith(f"line {rejected.lines[0]}:")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.builds(lambda m: f"2026-01-05 10:00:00.000 UTC [9] support_ro@db LOG:  {m}", AUDITS),
    st.text(max_size=60).map(lambda t: "\t" + t),
    st.text(max_size=60),
), min_size=1, max_size=8))  # fmt: skip
def test_garbage_in_a_stderr_log_never_crashes_and_is_reported(lines: list[str]) -> None:
    lines = [part for line in lines for part in line.replace("\r", "").split("\n")]
    read = read_log(lines, MAPPED)
    assert read.entries <= read.records
    numbered = {r.lines[0] for r in read.rejected} | {u.line for u in read.unmapped}
    assert all(1 <= n <= len(lines) for n in numbered)


#: Values the workload's rows and predicates held: never in custos's tables or alerts.
LITERALS = ("203.0.113", "198.51.100", "2020-01-01", "user-42")


def test_bulk_reads_are_kept_without_their_values_and_raise_bulk_read(
    system: Custos, cluster: Cluster
) -> None:
    from sqlalchemy import text

    from custos.api.detection import ContinuousDetection

    load_org(system, SUPPORT_WORLD)
    lines = read_lines(cluster.csvlog, "a log")
    report = import_log(EventStore(system.db), lines, "postgresql.csv", parse_mapping(MAPPING, "m"))
    assert (report.bulk, report.bulk_added) == (5, 5)
    # The per-subject reads still land as events, one per subject, as before.
    assert _accesses(system) == EXPECTED
    found = {(r["actor"], r["object"], r["scope"]): r for r in BulkAccessStore(system.db).search()}
    assert set(found) == {
        ("support_ro", "public.users", "aggregate"),  # count(*) over every user
        ("dba", "public.logins", "table"),  # everyone's IP addresses
        ("dba", "public.logins", "range"),  # a pattern on the addresses
        ("dba", "public.logins", "aggregate"),  # a count
        ("intruder", "public.users", "table"),  # COPY out, by an unmapped role
    }
    pull = found[("dba", "public.logins", "table")]
    assert (pull["principal"], pull["category"], pull["action"], pull["rows"]) == (
        "emp-2001", "ip_history", "read", 3,
    )  # fmt: skip
    assert pull["columns"] == ["ip", "user_id"]
    assert pull["shape"] == "SELECT user_id, ip FROM logins"
    assert "AUDIT: " in lines[pull["log_line"] - 1]
    assert found[("dba", "public.logins", "range")]["shape"] == (
        "SELECT user_id FROM logins WHERE HOST(ip) LIKE ?"
    )
    assert found[("dba", "public.logins", "aggregate")]["shape"].endswith("at > $1")
    copied = found[("intruder", "public.users", "table")]
    assert (copied["principal"], copied["action"], copied["columns"]) == (None, "export", ["*"])
    # No literal anywhere in the stored rows (read back raw, every column).
    with system.db.session() as session:
        stored = [tuple(r) for r in session.execute(text("SELECT * FROM bulk_accesses"))]
    assert len(stored) == 5
    assert not [v for v in LITERALS if v in repr(stored)]

    alerts = {a.principals[0]: a for a in system.detect().alerts if a.rule == "bulk_read"}
    assert set(alerts) == {"emp-2001", "emp-1001", "unmapped:intruder"}
    hunt = alerts["emp-2001"]
    assert hunt.severity == "critical"
    assert not hunt.subjects
    assert sorted(hunt.events) == sorted(r["id"] for k, r in found.items() if k[0] == "dba")
    words = hunt.explanation
    assert "emp-2001 (internal_audit, internal-audit) read ip_history of many people" in words
    assert "3 statements on public.logins" in words
    assert "5 rows as logged" in words
    assert "No custos decision, ticket or stated purpose" in words
    assert not [v for v in LITERALS if v in words]
    assert alerts["emp-1001"].severity == "medium"  # only a count
    assert "Only aggregates were read" in alerts["emp-1001"].explanation
    assert alerts["unmapped:intruder"].severity == "high"
    assert "'intruder', which the log mapping names no one for" in (
        alerts["unmapped:intruder"].explanation
    )
    assert "1 copied out" in alerts["unmapped:intruder"].explanation
    # Filed like any rule's alerts: each in a case of its principal.
    assert all(a.case is not None for a in alerts.values())

    # Importing the log again adds nothing, and detection raises nothing new.
    again = import_log(EventStore(system.db), lines, "postgresql.csv", parse_mapping(MAPPING, "m"))
    assert (again.bulk_added, again.bulk_unchanged) == (0, 5)
    assert system.detect().raised == 0

    # Continuous detection: a bulk access imported after a run makes the next one due (it
    # takes no number of the events' sequence), and the run takes it in.
    detection = ContinuousDetection(system)
    detection.config = replace(detection.config, burst_events=1)
    detection.step()
    status = detection.lease.status()
    assert detection.pending(status) == 0
    newer = {**BulkAccessStore(system.db).search()[0], "id": "pgb-later", "time": datetime.now(UTC)}
    del newer["arrived"]
    BulkAccessStore(system.db).append([newer])
    assert detection.pending(detection.lease.status()) == 1
    assert detection.step().ran
