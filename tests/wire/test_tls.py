"""TLS on the wire front: real certificates (made here with ``cryptography``), real psycopg
(libpq) verifying them with sslmode=verify-full, raw sockets for what a client should never
get away with, and the rule that keeps tokens off the network in clear."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

from custos.access import Custos
from custos.config import load_settings
from custos.errors import ConfigurationError
from custos.wire import SqlFront, WireSettings, token_authenticator
from custos.wire.tls import check_exposure, is_loopback
from tests.api.conftest import free_port
from tests.sql.world import sql_home
from tests.wire.certs import Authority, Pair, write_key
from tests.wire.client import error_fields, startup_packet
from tests.wire.conftest import SRC, Running, serve, start_front
from tests.wire.test_front import Scripted

OPTIONS = "-c custos.purpose=support -c custos.ticket=T-9"
SQL = "SELECT user_id, ip FROM logins WHERE user_id = 'user-42'"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


@pytest.fixture
def server_pair(ca: Authority) -> Pair:
    return ca.issue("server")


@pytest.fixture
def tls_settings(wire_settings: WireSettings, server_pair: Pair) -> WireSettings:
    return replace(wire_settings, tls_cert=server_pair.cert, tls_key=server_pair.key)


@pytest.fixture
def tool(system: Custos) -> str:
    return system.accounts.create_token("ts-console", ["tool"], "emp-3001")[1]


@pytest.fixture
def front(system: Custos, tls_settings: WireSettings) -> Iterator[Running]:
    yield from start_front(Scripted(), system, tls_settings)


def dsn(running: Running, token: str, **extra: str) -> str:
    parts = {
        "host": "127.0.0.1",
        "port": str(running.port),
        "dbname": "app",
        "user": "tool",
        "password": token,
        "connect_timeout": "10",
        "options": OPTIONS,
        **extra,
    }
    return psycopg.conninfo.make_conninfo(**parts)


def verified(ca: Authority) -> dict[str, str]:
    return {"sslmode": "verify-full", "sslrootcert": str(ca.path)}


# --- a real client, verifying the server ---------------------------------------------------------


def test_psycopg_verifies_the_server_and_queries_over_tls(
    front: Running, ca: Authority, tool: str
) -> None:
    with psycopg.connect(dsn(front, tool, **verified(ca)), autocommit=True) as conn:
        rows = conn.execute(SQL).fetchall()
        assert rows == [("user-42", "198.51.100.0/24", "t"), ("user-42", None, "f")]
        assert conn.pgconn.ssl_in_use


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_only_tls_1_2_and_later(front: Running, ca: Authority) -> None:
    modern = ssl.create_default_context(cafile=str(ca.path))
    assert _handshake(front.port, modern) == "TLSv1.3"
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(front.port, modern) == "TLSv1.2"
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(ca.path))
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as err:
        _handshake(front.port, old)
    # The server ends the handshake (an alert, or asyncio's plain close); a client that
    # could not even offer TLS 1.1 would fail with NO_PROTOCOLS_AVAILABLE instead.
    assert err.value.reason in (
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
        "UNEXPECTED_EOF_WHILE_READING",
    )


def test_psycopg_direct_tls_negotiation_with_alpn(front: Running, ca: Authority, tool: str) -> None:
    # libpq 17+ (psycopg-binary bundles 18): TLS from the first byte, no SSLRequest.
    if psycopg.pq.version() < 170000:
        pytest.skip("sslnegotiation=direct needs libpq 17")
    with psycopg.connect(
        dsn(front, tool, sslnegotiation="direct", **verified(ca)), autocommit=True
    ) as conn:
        assert conn.execute(SQL).fetchall()[0] == ("user-42", "198.51.100.0/24", "t")
        assert conn.pgconn.ssl_in_use


def test_direct_tls_without_alpn_is_refused(front: Running, ca: Authority) -> None:
    context = ssl.create_default_context(cafile=str(ca.path))  # no ALPN offered
    with (
        socket.create_connection(("127.0.0.1", front.port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(startup_packet({"user": "tool", "database": "app"}))
        reply = _until_closed(tls)
    assert reply[:1] == b"E"
    fields = error_fields(reply[5:])
    assert fields["C"] == "08P01"
    assert "ALPN protocol 'postgresql'" in fields["M"]
    assert b"R\x00\x00\x00\x08" not in reply  # no password was asked for


def test_a_client_that_does_not_trust_the_servers_ca_refuses_it(
    front: Running, tmp_path: Path, tool: str
) -> None:
    stranger = Authority(tmp_path / "other", "another CA")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn(front, tool, **verified(stranger)))


def test_verify_full_checks_the_host_name(
    system: Custos, wire_settings: WireSettings, ca: Authority, tool: str
) -> None:
    elsewhere = ca.issue("db", hosts=("db.example.org",))
    settings = replace(wire_settings, tls_cert=elsewhere.cert, tls_key=elsewhere.key)
    for running in start_front(Scripted(), system, settings):
        with pytest.raises(psycopg.OperationalError, match="does not match host name"):
            psycopg.connect(dsn(running, tool, **verified(ca)))
        # verify-ca checks the chain only: the same certificate is then accepted.
        with psycopg.connect(
            dsn(running, tool, sslmode="verify-ca", sslrootcert=str(ca.path))
        ) as conn:
            assert conn.pgconn.ssl_in_use


# --- fail closed ---------------------------------------------------------------------------------


def test_a_cleartext_startup_is_refused_before_the_password(front: Running, tool: str) -> None:
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as raw:
        raw.sendall(startup_packet({"user": "tool", "database": "app"}))
        reply = _until_closed(raw)
    kind, length = reply[:1], struct.unpack("!i", reply[1:5])[0]
    assert kind == b"E"
    assert len(reply) == 1 + length  # one ErrorResponse, then the connection closed
    fields = error_fields(reply[5:])
    assert (fields["S"], fields["C"]) == ("FATAL", "28000")
    assert "requires TLS" in fields["M"]
    with pytest.raises(psycopg.OperationalError, match="requires TLS"):
        psycopg.connect(dsn(front, tool, sslmode="disable"))


def test_bytes_sent_in_clear_after_sslrequest_are_never_read_as_encrypted(
    front: Running,
) -> None:
    # The startup packet rides along with the SSLRequest, before any handshake: it must be
    # taken as (broken) TLS, never as a startup that arrived through TLS.
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as raw:
        raw.sendall(SSL_REQUEST + startup_packet({"user": "tool", "database": "app"}))
        reply = _until_closed(raw)
    assert reply[:1] == b"S"
    rest = reply[1:]
    assert rest == b"" or rest[:1] == b"\x15"  # nothing, or a TLS alert record


def test_sslrequest_is_declined_without_tls(
    system: Custos, wire_settings: WireSettings, tool: str
) -> None:
    for running in start_front(Scripted(), system, wire_settings):
        with socket.create_connection(("127.0.0.1", running.port), timeout=20) as raw:
            raw.sendall(SSL_REQUEST)
            assert raw.recv(1) == b"N"
        with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
            psycopg.connect(dsn(running, tool, sslmode="require"))


def test_tls_inside_tls_is_a_protocol_violation(front: Running, ca: Authority) -> None:
    context = ssl.create_default_context(cafile=str(ca.path))
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S"
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(SSL_REQUEST)
            reply = _until_closed(tls)
    assert error_fields(reply[5:])["C"] == "08P01"


ASK_PASSWORD = b"R" + struct.pack("!ii", 8, 3)  # AuthenticationCleartextPassword


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    noise=s.one_of(
        s.binary(min_size=1, max_size=120),
        s.binary(max_size=60).map(lambda tail: SSL_REQUEST + tail),
        s.binary(max_size=60).map(lambda tail: b"\x16\x03\x01" + tail),
        s.dictionaries(s.sampled_from(["user", "database", "options"]), s.text(max_size=20)).map(
            lambda params: startup_packet({k: v.replace("\x00", "") for k, v in params.items()})
        ),
    )
)
def test_nothing_sent_in_clear_gets_a_password_prompt(front: Running, noise: bytes) -> None:
    with socket.create_connection(("127.0.0.1", front.port), timeout=20) as raw:
        raw.sendall(noise)
        raw.shutdown(socket.SHUT_WR)
        reply = _until_closed(raw)
    assert ASK_PASSWORD not in reply
    assert front.front.connections <= 1


def test_client_certificates_when_a_client_ca_is_set(
    system: Custos, tls_settings: WireSettings, tmp_path: Path, ca: Authority, tool: str
) -> None:
    clients = Authority(tmp_path / "clients", "client CA")
    laptop = clients.issue("laptop", server=False)
    settings = replace(tls_settings, tls_client_ca=clients.path)
    for running in start_front(Scripted(), system, settings):
        with psycopg.connect(
            dsn(running, tool, sslcert=str(laptop.cert), sslkey=str(laptop.key), **verified(ca)),
            autocommit=True,
        ) as conn:
            assert conn.execute(SQL).fetchall()[0] == ("user-42", "198.51.100.0/24", "t")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(running, tool, **verified(ca)))
        # A certificate from another CA (here the server's) is no way in either.
        stray = ca.issue("stray", server=False)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                dsn(running, tool, sslcert=str(stray.cert), sslkey=str(stray.key), **verified(ca))
            )
        assert _served(running, tool, ca, laptop)  # the failures harmed nothing


def test_no_token_reaches_the_logs(
    front: Running, ca: Authority, tool: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "cst_0123456789abcdef_" + "B" * 43
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as err:
        psycopg.connect(dsn(front, wrong, **verified(ca)))
    assert "tool role" in str(err.value)  # the same words whatever part was wrong
    with psycopg.connect(dsn(front, tool, **verified(ca))) as conn:
        conn.execute(SQL)
    assert "signed in" in caplog.text
    for secret in (wrong, tool, tool.split("_", 2)[2]):
        assert secret not in caplog.text


def _served(running: Running, tool: str, ca: Authority, pair: Pair) -> bool:
    with psycopg.connect(
        dsn(running, tool, sslcert=str(pair.cert), sslkey=str(pair.key), **verified(ca))
    ) as conn:
        return conn.pgconn.ssl_in_use


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data


# --- not in clear beyond loopback ----------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])  # noqa: S104 - refused, never bound
def test_a_non_loopback_address_without_tls_is_refused(
    system: Custos, wire_settings: WireSettings, listen: str
) -> None:
    front = SqlFront(
        Scripted(), token_authenticator(system.accounts), replace(wire_settings, listen=listen)
    )
    # In a thread of its own: a browser test earlier in the run (Playwright's sync API) may
    # keep an event loop running in this one.
    with ThreadPoolExecutor(1) as pool, pytest.raises(ConfigurationError) as err:
        pool.submit(lambda: asyncio.run(front.start())).result(timeout=60)
    message = err.value.message
    assert message.startswith("config.toml: [sql] listen (or --listen) is not a loopback")
    assert "tls_cert / tls_key are not set" in message
    assert "allow_cleartext = true" in (err.value.hint or "")
    assert listen not in message


def test_loopback_names_are_allowed_in_clear(system: Custos, wire_settings: WireSettings) -> None:
    for listen in ("localhost", "127.0.0.2", "::1"):
        settings = replace(wire_settings, listen=listen)
        for running in start_front(Scripted(), system, settings):
            assert running.port > 0


def test_exposure_rule() -> None:
    check_exposure(
        ["127.0.0.1", "::1", "::ffff:127.0.0.1"], tls=False, allow_cleartext=False, origin="c"
    )
    for allowed in (
        {"tls": True, "allow_cleartext": False},
        {"tls": False, "allow_cleartext": True},
    ):
        check_exposure(["0.0.0.0", "192.0.2.1"], origin="c", **allowed)  # noqa: S104
    with pytest.raises(ConfigurationError, match=r"c: \[sql\] listen"):
        check_exposure(["127.0.0.1", "192.0.2.1"], tls=False, allow_cleartext=False, origin="c")
    assert not is_loopback("localhost")  # names are resolved first, then their addresses checked


@given(s.ip_addresses())
def test_loopback_is_the_loopback_network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
    expected = address.ipv4_mapped.is_loopback if mapped else address.is_loopback  # type: ignore[union-attr]
    assert is_loopback(str(address)) == expected


# --- settings and files --------------------------------------------------------------------------


def test_tls_settings_from_config(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    config.write_text(
        '[sql]\ntls_cert = "tls/server.pem"\ntls_key = "/etc/custos/server.key"\n'
        'tls_client_ca = "tls/clients.pem"\n',
        encoding="utf-8",
    )
    found = WireSettings.from_settings(load_settings(home))
    root = load_settings(home).home
    assert found.tls_cert == root / "tls/server.pem"
    assert found.tls_key == Path("/etc/custos/server.key")
    assert found.tls_client_ca == root / "tls/clients.pem"
    assert (found.allow_cleartext, found.origin) == (False, str(config))
    cases = {
        '[sql]\ntls_cert = "a.pem"\n': "tls_cert and tls_key go together",
        '[sql]\ntls_key = "a.key"\n': "tls_cert and tls_key go together",
        '[sql]\ntls_client_ca = "ca.pem"\n': "tls_client_ca needs tls_cert and tls_key",
        '[sql]\ntls_cert = "a.pem"\ntls_key = "a.key"\nallow_cleartext = true\n': (
            "allow_cleartext = true contradicts tls_cert"
        ),
        '[sql]\nallow_cleartext = "yes"\n': "allow_cleartext must be true or false",
        "[sql]\ntls_cert = 5\n": "tls_cert must be the path of a PEM file",
        '[sql]\ntls_cert = " "\ntls_key = "a.key"\n': "tls_cert must be the path of a PEM file",
    }
    for text, words in cases.items():
        config.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigurationError, match=words) as err:
            WireSettings.from_settings(load_settings(home))
        assert err.value.message.startswith(f"{config}: [sql] ")
    config.write_text("[sql]\nallow_cleartext = true\n", encoding="utf-8")
    assert WireSettings.from_settings(load_settings(home)).allow_cleartext


def _bad(tmp: Path, ca: Authority, pair: Pair, case: str) -> dict[str, Path]:
    files = {"tls_cert": pair.cert, "tls_key": pair.key}
    if case == "missing cert":
        files["tls_cert"] = tmp / "nowhere.pem"
    elif case == "cert is a folder":
        files["tls_cert"] = tmp
    elif case == "cert not PEM":
        files["tls_cert"] = tmp / "junk.pem"
        files["tls_cert"].write_text("-----BEGIN CERTIFICATE-----\nnot base64\n", encoding="ascii")
    elif case == "key readable by others":
        pair.key.chmod(0o644)
    elif case == "missing key":
        files["tls_key"] = tmp / "nowhere.key"
    elif case == "key not PEM":
        pair.key.write_text("secret-ish", encoding="ascii")
    elif case == "encrypted key":
        write_key(ec.generate_private_key(ec.SECP256R1()), pair.key, password=b"pw-123456")
    elif case == "key of another certificate":
        files["tls_key"] = ca.issue("other").key
    elif case == "expired":
        past = datetime.now(UTC) - timedelta(days=3)
        files = vars(ca.issue("old", valid_from=past, valid_until=past + timedelta(days=1)))
        files = {"tls_cert": files["cert"], "tls_key": files["key"]}
    elif case == "not yet valid":
        later = datetime.now(UTC) + timedelta(days=1)
        issued = ca.issue("early", valid_from=later, valid_until=later + timedelta(days=1))
        files = {"tls_cert": issued.cert, "tls_key": issued.key}
    elif case == "client CA not PEM":
        files["tls_client_ca"] = pair.key  # a key is not a certificate
    return files


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing cert", r"\[sql\] tls_cert: no file at .*nowhere\.pem"),
        ("cert is a folder", r"\[sql\] tls_cert: cannot read"),
        ("cert not PEM", r"\[sql\] tls_cert: .*junk\.pem holds no PEM certificate"),
        ("missing key", r"\[sql\] tls_key: no file at .*nowhere\.key"),
        ("key readable by others", r"\[sql\] tls_key: key file .* must not be readable by others"),
        ("key not PEM", r"\[sql\] tls_key: .* holds no PEM private key"),
        ("encrypted key", r"\[sql\] tls_key: the key in .* is encrypted"),
        (
            "key of another certificate",
            r"\[sql\] tls_key: the key in .* is not the key of the cert",
        ),
        ("expired", r"\[sql\] tls_cert: the certificate in .*old\.pem expired on 20"),
        ("not yet valid", r"\[sql\] tls_cert: the certificate in .* is valid only from"),
        ("client CA not PEM", r"\[sql\] tls_client_ca: .* holds no PEM certificate"),
    ],
)
def test_bad_tls_files_are_refused_when_the_front_is_made(
    system: Custos,
    tmp_path: Path,
    ca: Authority,
    server_pair: Pair,
    case: str,
    words: str,
) -> None:
    files = _bad(tmp_path, ca, server_pair, case)
    settings = WireSettings(port=0, origin="/home/x/config.toml", **files)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=words) as err:
        SqlFront(Scripted(), token_authenticator(system.accounts), settings)
    assert err.value.message.startswith("/home/x/config.toml: [sql] tls_")
    assert "PRIVATE KEY" not in err.value.message
    assert "BEGIN" not in err.value.message


# --- custos sql serve ----------------------------------------------------------------------------

PSQL = "/usr/bin/psql"


def test_sql_serve_refuses_to_listen_beyond_loopback_in_clear(system: Custos) -> None:
    home = sql_home(system)
    (home / "config.toml").write_text('[sql]\nlisten = "0.0.0.0"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "CUSTOS_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "custos", "sql", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    output = " ".join((done.stdout + done.stderr).split())
    assert f"{home / 'config.toml'}: [sql] listen (or --listen) is not a loopback" in output
    assert "tls_cert" in output
    assert "allow_cleartext" in output


@pytest.mark.skipif(not os.path.exists(PSQL), reason="needs psql (PostgreSQL client)")
def test_sql_serve_with_tls_answers_psql_verify_full(system: Custos, ca: Authority) -> None:
    home = sql_home(system)
    pair = ca.issue("front")
    (home / "config.toml").write_text(
        f'[sql]\ntls_cert = "{pair.cert}"\ntls_key = "{pair.key}"\n', encoding="utf-8"
    )
    _, token = system.accounts.create_token("ts", ["tool"], "emp-1001")
    port = free_port()
    server = serve(home, port)
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert f"custos SQL front on 127.0.0.1:{port} (TLS only" in first, server.stderr
        client = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        client.update(
            PGPASSWORD=token,
            PGOPTIONS="-c custos.purpose=support -c custos.ticket=T-1",
            PGSSLMODE="verify-full",
            PGSSLROOTCERT=str(ca.path),
        )
        sql = "SELECT ip FROM logins WHERE user_id = 'user-1' LIMIT 1"
        command = [PSQL, "-h", "127.0.0.1", "-p", str(port), "-d", "app", "-XAt", "-c", sql]
        done = subprocess.run(command, env=client, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "198.51.100.0/24"
        client["PGSSLMODE"] = "disable"
        refused = subprocess.run(command, env=client, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert "requires TLS" in refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
