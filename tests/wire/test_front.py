"""The wire front's protocol machinery: real psql and psycopg on loopback, real tokens and
accounts, hostile bytes. The guarded path here is a script that records what reached it
(end-to-end tests against Custos.query and real sources are in test_guarded.py)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from custos.access import Custos, QueryColumn, QueryRequest, QueryResult
from custos.errors import CustosError, QueryRefused, SqlRejected
from custos.wire import WireSettings
from tests.wire.client import Raw, cstr, error_fields, frame, startup_packet
from tests.wire.conftest import Running, start_front

PSQL = "/usr/bin/psql"
OPTIONS = "-c custos.purpose=support -c custos.ticket=T-9"


@dataclass
class Scripted:
    """Records each request; answers with ``result`` or raises ``error``."""

    error: CustosError | None = None
    requests: list[QueryRequest] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult:
        with self.lock:
            self.requests.append(request)
            self.tags.append(source_tag)
        if self.error is not None:
            raise self.error
        return QueryResult(
            columns=[
                QueryColumn("user_id", None, None),
                QueryColumn("ip", "ip_history", "coarse"),
                QueryColumn("seen", None, None),
            ],
            rows=[("user-42", "198.51.100.0/24", True), ("user-42", None, False)],
            truncated=False,
            decisions=[],
            release_index=17,
            sql_digest="0" * 64,
        )


@dataclass
class Harness:
    running: Running
    queries: Scripted
    tool: str  # a tool token acting as emp-3001
    monitor: str  # a token without the tool role

    def psql(
        self, *args: str, token: str | None = None, options: str | None = OPTIONS
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSWORD=token or self.tool, PGCONNECT_TIMEOUT="10")
        if options:
            env["PGOPTIONS"] = options
        command = [PSQL, "-h", "127.0.0.1", "-p", str(self.running.port), "-U", "tool", "-d"]
        return subprocess.run(
            [*command, "app", "-X", "-v", "ON_ERROR_STOP=1", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def connect(self, options: str | None = OPTIONS, **kw: object) -> psycopg.Connection:
        return psycopg.connect(self.running.dsn(self.tool, options=options), **kw)  # type: ignore[arg-type]


def _harness(system: Custos, settings: WireSettings, queries: Scripted) -> Iterator[Harness]:
    _, tool = system.accounts.create_token("ts-console", ["tool"], "emp-3001")
    _, monitor = system.accounts.create_token("monitor", ["auditor"])
    for running in start_front(queries, system, settings):
        yield Harness(running, queries, tool, monitor)


@pytest.fixture
def harness(system: Custos, wire_settings: WireSettings) -> Iterator[Harness]:
    yield from _harness(system, wire_settings, Scripted())


pytestmark = pytest.mark.skipif(not os.path.exists(PSQL), reason="needs psql (PostgreSQL client)")


# --- psql ------------------------------------------------------------------------------------


def test_psql_queries_with_purpose_and_ticket_from_pgoptions(harness: Harness) -> None:
    done = harness.psql("-c", "SELECT user_id, ip FROM logins WHERE user_id = 'user-42'")
    assert done.returncode == 0, done.stderr
    assert "198.51.100.0/24" in done.stdout
    assert "(2 rows)" in done.stdout
    # psql prints notices on stderr: how precise each column left, where it is logged.
    assert "ip: coarse (ip_history)" in done.stderr
    assert "ledger index 17" in done.stderr
    (request,) = harness.queries.requests
    assert request == QueryRequest(
        principal="emp-3001",
        source="app",
        sql="SELECT user_id, ip FROM logins WHERE user_id = 'user-42'",
        purpose="support",
        ticket="T-9",
    )
    assert harness.queries.tags == [f"wire:{harness.tool.split('_')[1]}"]


def test_psql_probes_are_answered_and_catalogs_refused(harness: Harness) -> None:
    done = harness.psql("-At", "-c", "SHOW server_version", "-c", "SELECT version()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "15.0",
        "PostgreSQL 15.0 (custos guarded SQL front; read-only)",
    ]
    catalog = harness.psql("-c", "\\d")
    assert catalog.returncode != 0
    assert "custos does not answer catalog queries" in catalog.stderr
    assert "data map (sources.yaml)" in catalog.stderr
    assert harness.queries.requests == []


def test_purpose_and_ticket_per_statement(harness: Harness) -> None:
    script = (
        "SET custos.purpose = 'trust_safety'; SET custos.ticket TO 'T-77';\n"
        "SHOW custos.ticket;\n"
        "SELECT ip FROM logins WHERE user_id = 'user-42';\n"
        "RESET custos.ticket;\n"
        "SELECT ip FROM logins WHERE user_id = 'user-42';\n"
    )
    done = harness.psql("-At", "-c", script.replace("\n", " "), options=None)
    assert done.returncode == 0, done.stderr
    first, second = harness.queries.requests
    assert (first.purpose, first.ticket) == ("trust_safety", "T-77")
    assert (second.purpose, second.ticket) == ("trust_safety", None)
    assert "T-77" in done.stdout


def test_a_query_without_purpose_says_how_to_give_one(harness: Harness) -> None:
    done = harness.psql("-c", "SELECT ip FROM logins WHERE user_id = 'user-42'", options=None)
    assert done.returncode != 0
    assert "no purpose given" in done.stderr
    assert "options='-c custos.purpose=support" in done.stderr
    assert "SET custos.purpose" in done.stderr
    assert harness.queries.requests == []


def test_wrong_token_is_refused(harness: Harness) -> None:
    started = time.monotonic()
    wrong = "cst_0123456789abcdef_" + "A" * 43
    done = harness.psql("-c", "SELECT 1", token=wrong)
    assert done.returncode == 2
    assert "password authentication failed" in done.stderr
    assert time.monotonic() - started >= 1.0  # each wrong guess costs a second
    not_a_token = harness.psql("-c", "SELECT 1", token="hunter2")
    assert "password authentication failed" in not_a_token.stderr
    assert harness.queries.requests == []


def test_a_token_without_the_tool_role_is_refused(harness: Harness) -> None:
    done = harness.psql("-c", "SELECT 1", token=harness.monitor)
    assert done.returncode == 2
    assert "needs the tool role and a principal" in done.stderr


def test_a_revoked_token_no_longer_connects(system: Custos, harness: Harness) -> None:
    token_id = harness.tool.split("_")[1]
    system.accounts.revoke_token(token_id)
    system.accounts._tokens.clear()  # the two-second cache of verified tokens, in this process
    done = harness.psql("-c", "SELECT 1")
    assert "password authentication failed" in done.stderr


# --- psycopg (extended protocol) ---------------------------------------------------------------


def test_psycopg_binds_parameters_as_literals(harness: Harness) -> None:
    with harness.connect() as conn:  # not autocommit: psycopg sends BEGIN first
        rows = conn.execute(
            "SELECT user_id, ip, seen FROM logins WHERE user_id = %s AND n < %s",
            ("it's user-42", 5),
        ).fetchall()
        assert rows == [("user-42", "198.51.100.0/24", "t"), ("user-42", None, "f")]
        statuses = [conn.info.transaction_status]
        conn.commit()
        statuses.append(conn.info.transaction_status)
        assert statuses == [psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.IDLE]
    (request,) = harness.queries.requests
    assert request.sql == (
        "SELECT user_id, ip, seen FROM logins WHERE user_id = 'it''s user-42' AND n < 5"
    )


def test_psycopg_prepared_statements_and_binary_parameters(harness: Harness) -> None:
    with harness.connect(autocommit=True) as conn:
        for _ in range(3):
            cur = conn.execute(
                "SELECT ip FROM logins WHERE n = %b", (7,), prepare=True
            )  # %b: binary int
            assert len(cur.fetchall()) == 2
        conn.execute("DEALLOCATE ALL")
    assert [r.sql for r in harness.queries.requests] == ["SELECT ip FROM logins WHERE n = 7"] * 3


def test_psycopg_sees_refusals_and_rejections_by_sqlstate(
    system: Custos, wire_settings: WireSettings
) -> None:
    queries = Scripted(QueryRefused("ticket T-9 is not about this subject", hint="use its ticket"))
    for harness in _harness(system, wire_settings, queries):
        with harness.connect(autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                conn.execute("SELECT ip FROM logins WHERE user_id = %s", ("user-42",))
            assert "query refused: ticket T-9 is not about this subject" in str(refused.value)
            assert refused.value.diag.message_hint == "use its ticket"
            queries.error = SqlRejected("only one SELECT is allowed (line 1, col 1: DELETE)")
            with pytest.raises(psycopg.errors.SyntaxError, match="only one SELECT"):
                conn.execute("DELETE FROM logins")
            # The connection carries on after both.
            assert conn.execute("SHOW custos.purpose").fetchone() == ("support",)


def test_psycopg_without_purpose_then_set(harness: Harness) -> None:
    with harness.connect(options=None, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute("SELECT ip FROM logins WHERE user_id = %s", ("user-42",))
        assert "SET custos.purpose" in (refused.value.diag.message_hint or "")
        conn.execute("SET custos.purpose = 'support'")
        assert len(conn.execute("SELECT ip FROM logins WHERE user_id = 'user-42'").fetchall()) == 2


def test_an_error_inside_a_transaction_block_needs_a_rollback(harness: Harness) -> None:
    with harness.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SHOW work_mem")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SHOW custos.purpose")
        conn.rollback()
        assert conn.execute("SHOW custos.purpose").fetchone() == ("support",)


# --- hostile bytes ---------------------------------------------------------------------------


def _still_serves(harness: Harness) -> None:
    done = harness.psql("-At", "-c", "SHOW server_version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "15.0"


def test_ssl_is_refused_with_n_then_plain_startup_works(harness: Harness) -> None:
    raw = Raw(harness.running.port)
    raw.send(struct.pack("!ii", 8, 80877103))
    assert raw.sock.recv(1) == b"N"
    messages = raw.sign_in(harness.tool, options="-c custos.purpose=support")
    kinds = [k for k, _ in messages]
    assert kinds[0] == b"R"
    assert kinds[-1] == b"Z"
    assert b"K" in kinds
    raw.send(frame(b"X"))
    assert raw.closed()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("!i", 3), "out of range"),
        (struct.pack("!i", 1 << 30), "out of range"),
        (struct.pack("!ii", 8, 0x00020000), "unsupported frontend protocol 2.0"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "out of range"),
        (startup_packet({"user": "a"})[:-1] + b"x", "not NUL-terminated"),
    ],
)
def test_garbage_startup_is_refused_and_closed(harness: Harness, data: bytes, message: str) -> None:
    raw = Raw(harness.running.port)
    raw.send(data)
    kind, body = raw.message()
    assert kind == b"E"
    fields = error_fields(body)
    assert fields["C"] == "08P01"
    assert fields["S"] == "FATAL"
    assert message in fields["M"]
    assert raw.closed()
    _still_serves(harness)


def test_bad_options_are_refused_at_startup(harness: Harness) -> None:
    raw = Raw(harness.running.port)
    raw.send(startup_packet({"user": "tool", "database": "app", "options": "-c work_mem=1GB"}))
    kind, body = raw.message()
    assert kind == b"E"
    assert 'unrecognized configuration parameter "work_mem"' in error_fields(body)["M"]
    assert raw.closed()


def test_a_huge_message_length_is_refused_without_reading_it(harness: Harness) -> None:
    raw = Raw(harness.running.port)
    raw.sign_in(harness.tool)
    raw.send(b"Q" + struct.pack("!i", 1 << 30))
    kind, body = raw.message()
    fields = error_fields(body)
    assert (kind, fields["C"]) == (b"E", "08P01")
    assert "exceeds the cap of 65536" in fields["M"]
    assert raw.closed()
    _still_serves(harness)


def test_truncated_and_malformed_messages(harness: Harness) -> None:
    cases = [
        frame(b"Q", b"SELECT 1"),  # no NUL
        frame(b"P", cstr("") + cstr("SELECT 1") + struct.pack("!h", 5)),  # 5 types, none sent
        frame(b"B", cstr("") + cstr("") + struct.pack("!hh", 1, 7)),  # format code 7
        frame(b"D", b"Z" + cstr("")),  # neither S nor P
        frame(b"E", cstr("")),  # no row limit
        frame(b"F", b"\x00" * 8),  # function call: not supported
        b"Q" + struct.pack("!i", 2),  # length under 4
    ]
    for data in cases:
        raw = Raw(harness.running.port)
        raw.sign_in(harness.tool)
        raw.send(data)
        kind, body = raw.message()
        assert kind == b"E", data
        assert error_fields(body)["C"] == "08P01", (data, error_fields(body))
        assert raw.closed()
    # A client that sends half a message and hangs up leaves nothing behind.
    raw = Raw(harness.running.port)
    raw.sign_in(harness.tool)
    raw.send(b"Q" + struct.pack("!i", 100) + b"SELECT")
    raw.close()
    _still_serves(harness)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(noise=s.binary(min_size=1, max_size=200))
def test_random_bytes_after_sign_in_never_harm_the_server(harness: Harness, noise: bytes) -> None:
    raw = Raw(harness.running.port)
    raw.sign_in(harness.tool)
    raw.send(noise)
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.closed()
    assert harness.running.front.connections <= 1


def test_hostile_bytes_leave_the_server_serving(harness: Harness) -> None:
    test_random_bytes_after_sign_in_never_harm_the_server(harness)
    _still_serves(harness)
    assert harness.queries.requests == []


def test_extended_protocol_by_hand(harness: Harness) -> None:
    raw = Raw(harness.running.port)
    raw.sign_in(harness.tool, options="-c custos.purpose=support")
    query = "SELECT ip FROM logins WHERE user_id = $1"
    raw.send(
        frame(b"P", cstr("s1") + cstr(query) + struct.pack("!h", 0))
        + frame(b"D", b"S" + cstr("s1"))
        + frame(
            b"B",
            cstr("p1")
            + cstr("s1")
            + struct.pack("!hhi", 0, 1, 7)
            + b"user-42"
            + struct.pack("!h", 0),
        )
        + frame(b"D", b"P" + cstr("p1"))
        + frame(b"E", cstr("p1") + struct.pack("!i", 1))
        + frame(b"E", cstr("p1") + struct.pack("!i", 0))
        + frame(b"C", b"S" + cstr("s1"))
        + frame(b"S")
    )
    kinds = [k for k, _ in raw.until(b"Z")]
    # Parse, parameters (one, text), no columns known before binding; bound: columns;
    # one row then suspended; the rest and the tag; closed; ready.
    assert kinds == [b"1", b"t", b"n", b"2", b"T", b"N", b"D", b"s", b"D", b"C", b"3", b"Z"]
    (request,) = harness.queries.requests
    assert request.sql == "SELECT ip FROM logins WHERE user_id = 'user-42'"
    # The portal ended with the (implicit) transaction at Sync.
    raw.send(frame(b"E", cstr("p1") + struct.pack("!i", 0)) + frame(b"S"))
    messages = raw.until(b"Z")
    assert "portal 'p1' does not exist" in error_fields(messages[0][1])["M"]
    # An error skips to Sync; the next Sync answers.
    raw.send(
        frame(b"B", cstr("") + cstr("nope") + struct.pack("!hhh", 0, 0, 0))
        + frame(b"E", cstr("") + struct.pack("!i", 0))
        + frame(b"S")
    )
    messages = raw.until(b"Z")
    assert [k for k, _ in messages] == [b"E", b"Z"]
    assert "does not exist" in error_fields(messages[0][1])["M"]


def test_connections_beyond_the_limit_are_refused(
    system: Custos, wire_settings: WireSettings
) -> None:
    for harness in _harness(system, replace(wire_settings, max_connections=2), Scripted()):
        held = [Raw(harness.running.port), Raw(harness.running.port)]
        for raw in held:
            raw.sign_in(harness.tool)
        extra = Raw(harness.running.port)
        kind, body = extra.message()
        assert (kind, error_fields(body)["C"]) == (b"E", "53300")
        for raw in held:
            raw.send(frame(b"X"))
            assert raw.closed()
        deadline = time.monotonic() + 10
        while harness.running.front.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        _still_serves(harness)


def test_idle_and_slow_sign_in_are_timed_out(system: Custos, wire_settings: WireSettings) -> None:
    quick = replace(wire_settings, idle_timeout=0.5, auth_timeout=0.5)
    for harness in _harness(system, quick, Scripted()):
        idle = Raw(harness.running.port)
        idle.sign_in(harness.tool)
        kind, body = idle.message()  # nothing sent: the server speaks first
        assert (kind, error_fields(body)["C"]) == (b"E", "57P05")
        assert idle.closed()
        slow = Raw(harness.running.port)
        slow.send(startup_packet({"user": "tool"}))
        assert slow.message()[0] == b"R"  # asked for a password, never given
        kind, body = slow.message()
        assert "signing in took too long" in error_fields(body)["M"]
        assert slow.closed()


@dataclass
class Bulky(Scripted):
    """Answers with ~20 MB of rows: more than the socket buffers hold."""

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult:
        result = super().query(request, source_tag=source_tag)
        result.rows = [("user-42", "x" * 200, True)] * 100_000
        return result


def test_a_client_that_stops_reading_loses_its_slot(
    system: Custos, wire_settings: WireSettings
) -> None:
    quick = replace(wire_settings, idle_timeout=1.0)
    for harness in _harness(system, quick, Bulky()):
        raw = Raw(harness.running.port)
        raw.sign_in(harness.tool, options="-c custos.purpose=support")
        raw.send(frame(b"Q", cstr("SELECT ip FROM logins WHERE user_id = 'user-42'")))
        deadline = time.monotonic() + 20
        while harness.running.front.connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert harness.running.front.connections == 0
        raw.close()
        _still_serves(harness)
