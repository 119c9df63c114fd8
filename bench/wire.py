"""The SQL wire front against ``Custos.query`` called in-process, same query, same run.

A 100-row individual query (DuckDB file, the set-up of ``bench/sql.py``) through psycopg on
loopback to ``custos sql serve``'s server (running in a thread of this process), against the
same ``Custos.query`` called directly: what the protocol, the text encoding and the thread
hop add. Also: sign-in time (startup, token check, parameters) per connection, and both
figures again through a second front with TLS (a certificate made here, psycopg verifying it
with sslmode=verify-full) against the front in clear, in the same run. Prints times and
ratios; asserts nothing. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
from pathlib import Path

import duckdb
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.wire.certs import Authority

from custos.access import QueryRequest
from custos.wire import SqlFront, WireSettings, token_authenticator
from sql import COLUMNS, MAP, ROWS, build, rows, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    n = 20 if parser.parse_args().quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        system = build(home)
        with duckdb.connect(str(home / "app.duckdb")) as con:
            con.execute(f"CREATE TABLE logins ({COLUMNS})")
            con.executemany("INSERT INTO logins VALUES (?, ?, ?, ?, ?)", rows(20))
        (home / "sources.yaml").write_text(
            MAP.format(name="app", url="duckdb:app.duckdb", table="logins"), encoding="utf-8"
        )
        _, token = system.accounts.create_token("bench", ["tool"], "emp-1")
        sql = "SELECT login_at, ip, email FROM logins WHERE user_id = 'user-1'"
        request = QueryRequest("emp-1", "app", sql, "support", ticket="T-1")

        ca = Authority(Path(tmp) / "pki")
        pair = ca.issue("front")
        loop = asyncio.new_event_loop()
        plain = SqlFront(system, token_authenticator(system.accounts), WireSettings(port=0))
        secured = SqlFront(
            system,
            token_authenticator(system.accounts),
            WireSettings(port=0, tls_cert=pair.cert, tls_key=pair.key),
        )
        loop.run_until_complete(plain.start())
        loop.run_until_complete(secured.start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        common = (
            f"host=127.0.0.1 dbname=app password={token} "
            "options='-c custos.purpose=support -c custos.ticket=T-1'"
        )
        dsn = f"{common} port={plain.port} sslmode=disable"
        tls_dsn = f"{common} port={secured.port} sslmode=verify-full sslrootcert={ca.path}"
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert len(conn.execute(sql).fetchall()) == ROWS
                wire = timed(lambda: conn.execute(sql).fetchall(), n)
            with psycopg.connect(tls_dsn, autocommit=True) as conn:
                assert conn.pgconn.ssl_in_use
                assert len(conn.execute(sql).fetchall()) == ROWS
                wire_tls = timed(lambda: conn.execute(sql).fetchall(), n)
            direct = timed(lambda: system.query(request), n)
            connect = timed(lambda: psycopg.connect(dsn, autocommit=True).close(), max(5, n // 4))
            connect_tls = timed(
                lambda: psycopg.connect(tls_dsn, autocommit=True).close(), max(5, n // 4)
            )
        finally:
            for front in (plain, secured):
                asyncio.run_coroutine_threadsafe(front.close(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            system.close()
    print(
        f"{ROWS}-row individual query: through the wire front {wire * 1e3:.2f} ms, "
        f"Custos.query in-process {direct * 1e3:.2f} ms; front/direct {wire / direct:.2f}x "
        f"(+{(wire - direct) * 1e3:.2f} ms)"
    )
    print(
        f"same query over TLS (verify-full): {wire_tls * 1e3:.2f} ms; "
        f"TLS/clear {wire_tls / wire:.2f}x (+{(wire_tls - wire) * 1e3:.2f} ms)"
    )
    print(
        f"sign-in (startup, token, parameters, ready): clear {connect * 1e3:.2f} ms, "
        f"TLS with handshake {connect_tls * 1e3:.2f} ms; TLS/clear {connect_tls / connect:.2f}x "
        f"(+{(connect_tls - connect) * 1e3:.2f} ms)"
    )


if __name__ == "__main__":
    main()
