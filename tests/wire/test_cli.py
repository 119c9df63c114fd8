"""``custos sql serve`` as people run it: a process of its own, reached by psql."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from custos.access import Custos
from custos.config import load_settings
from custos.errors import ConfigurationError
from custos.wire import WireSettings
from tests.api.conftest import free_port
from tests.sql.world import sql_home
from tests.wire.conftest import SRC, serve

PSQL = "/usr/bin/psql"


@pytest.mark.skipif(not os.path.exists(PSQL), reason="needs psql (PostgreSQL client)")
def test_sql_serve_answers_psql_until_stopped(system: Custos) -> None:
    home = sql_home(system)
    _, token = system.accounts.create_token("ts", ["tool"], "emp-1001")
    port = free_port()
    server = serve(home, port)
    try:
        assert server.stdout is not None
        assert f"custos SQL front on 127.0.0.1:{port}" in server.stdout.readline()
        client = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        client.update(PGPASSWORD=token, PGOPTIONS="-c custos.purpose=support -c custos.ticket=T-1")
        sql = "SELECT ip FROM logins WHERE user_id = 'user-1' LIMIT 1"
        done = subprocess.run(
            [PSQL, "-h", "127.0.0.1", "-p", str(port), "-d", "app", "-XAt", "-c", sql],
            env=client,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "198.51.100.0/24"
    finally:
        # SIGTERM, as a service manager stops it: a SIGINT may be inherited as ignored (the
        # test process may run under a shell's background job), and then stops nothing.
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = server.wait(timeout=30)
    assert code == 0, server.stderr.read() if server.stderr else ""
    assert time.monotonic() - started < 30


def test_sql_serve_stops_on_ctrl_c(system: Custos) -> None:
    home = sql_home(system)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC), "CUSTOS_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "custos", "sql", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal sends it, whatever this test process inherited.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert server.stdout is not None
        assert f"custos SQL front on 127.0.0.1:{port}" in server.stdout.readline()
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=30)
    assert code == 0, server.stderr.read() if server.stderr else ""


def test_wire_settings_from_config(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        '[sql]\nlisten = "127.0.0.2"\nport = 6543\nmax_connections = 5\nidle_timeout = 2.5\n',
        encoding="utf-8",
    )
    found = WireSettings.from_settings(load_settings(home))
    assert (found.listen, found.port, found.max_connections, found.idle_timeout) == (
        "127.0.0.2",
        6543,
        5,
        2.5,
    )
    (home / "config.toml").write_text("[sql]\nport = 70000\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"\[sql\] port must be at most 65535"):
        WireSettings.from_settings(load_settings(home))
    (home / "config.toml").write_text("[sql]\nmax_conections = 5\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="did you mean max_connections"):
        load_settings(home)
