"""Shared fixtures: a real custos home per test, and a guard against network use.

Tests may talk to loopback (the real HTTP server, the real PostgreSQL) and to Unix sockets;
any other address fails the test at once, so no test can depend on the outside world.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos

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


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home folder path, also set as ``$CUSTOS_HOME`` for code that reads it."""
    path = tmp_path / "home"
    monkeypatch.setenv("CUSTOS_HOME", str(path))
    monkeypatch.delenv("CUSTOS_DATABASE_URL", raising=False)
    return path


@pytest.fixture
def system(home: Path) -> Iterator[Custos]:
    """An initialised custos installation on a real SQLite file."""
    with Custos.init(home) as opened:
        yield opened
