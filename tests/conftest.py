"""Shared fixtures: a real custos home per test on a real database, and a network guard.

The whole suite runs against SQLite (default) or PostgreSQL (``CUSTOS_TEST_DB=postgresql``;
that pass runs only the tests whose fixtures reach a database): with PostgreSQL, the run
creates its own database on the server named by ``CUSTOS_TEST_PG_URL`` (default: the local
server, user ``postgres``), gives every test its own schema in it, and drops the database at
the end.

Tests may talk to loopback (the real HTTP server, the real PostgreSQL) and to Unix sockets;
any other address fails the test at once, so no test can depend on the outside world.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from custos.access import Custos

BACKEND = os.environ.get("CUSTOS_TEST_DB", "sqlite")
PG_URL = os.environ.get("CUSTOS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")

_real_connect = socket.socket.connect


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # Unix socket path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


def pytest_report_header() -> str:
    return f"custos test database: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With PostgreSQL, run only the tests that can reach a database.

    The PostgreSQL pass exists to exercise the PostgreSQL store. A test whose fixtures never
    lead to ``pg_database`` (parsers, policy evaluation, ledger maths, the simulator) runs the
    very same code on both passes, so it runs once, in the SQLite pass.
    """
    if BACKEND != "postgresql":
        return
    keep, drop = [], []
    for item in items:
        (keep if "pg_database" in getattr(item, "fixturenames", ()) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """With PostgreSQL: a database of this run's own (dropped at the end); else None."""
    if BACKEND != "postgresql":
        yield None
        return
    name = f"custos_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_URL}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


_schemas = itertools.count()


def fresh_database_url(pg_database: str | None) -> str | None:
    """A new, empty schema of the run's PostgreSQL database, or None with SQLite."""
    if pg_database is None:
        return None
    schema = f"t{os.getpid()}_{next(_schemas)}"
    engine = sa.create_engine(pg_database)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture
def database_url(pg_database: str | None) -> str | None:
    """A fresh, empty database for one test: a new schema with PostgreSQL, None with SQLite
    (the home folder's own ``custos.db`` is used)."""
    return fresh_database_url(pg_database)


@pytest.fixture(scope="module")
def module_system(
    tmp_path_factory: pytest.TempPathFactory, pg_database: str | None
) -> Iterator[Custos]:
    """One initialised installation shared by a module's tests (for costly set-ups)."""
    url = fresh_database_url(pg_database)
    with pytest.MonkeyPatch.context() as patch:
        if url is None:
            patch.delenv("CUSTOS_DATABASE_URL", raising=False)
        else:
            patch.setenv("CUSTOS_DATABASE_URL", url)
        with Custos.init(tmp_path_factory.mktemp("module") / "home") as opened:
            yield opened


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """An empty home folder path, set as ``$CUSTOS_HOME`` (and ``CUSTOS_DATABASE_URL`` with
    PostgreSQL) for code and subprocesses that read them."""
    path = tmp_path / "home"
    monkeypatch.setenv("CUSTOS_HOME", str(path))
    if database_url is None:
        monkeypatch.delenv("CUSTOS_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("CUSTOS_DATABASE_URL", database_url)
    return path


@pytest.fixture
def system(home: Path) -> Iterator[Custos]:
    """An initialised custos installation on a real database."""
    with Custos.init(home) as opened:
        yield opened
