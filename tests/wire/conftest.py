"""A real SQL front on loopback, in a thread with its own event loop, over a real custos."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest

from custos.access import Custos
from custos.wire import GuardedQueries, SqlFront, WireSettings, token_authenticator


@dataclass
class Running:
    front: SqlFront
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.front.port

    def dsn(self, token: str, source: str = "app", options: str | None = None) -> str:
        dsn = f"host=127.0.0.1 port={self.port} dbname={source} user=tool password={token}"
        dsn += " sslmode=prefer connect_timeout=10"
        return dsn + (f" options='{options}'" if options else "")


def start_front(
    queries: GuardedQueries, system: Custos, settings: WireSettings
) -> Iterator[Running]:
    loop = asyncio.new_event_loop()
    front = SqlFront(queries, token_authenticator(system.accounts), settings)
    ready: Future[None] = Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            # start_server serves as soon as it is bound: the loop only has to keep running.
            loop.run_until_complete(front.start())
        except Exception as exc:  # noqa: BLE001 - handed to the waiting test
            ready.set_exception(exc)
            return
        ready.set_result(None)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.result(timeout=20)
    try:
        yield Running(front, loop)
    finally:
        asyncio.run_coroutine_threadsafe(front.close(), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=20)
        loop.close()


@pytest.fixture
def wire_settings() -> WireSettings:
    return WireSettings(port=0, max_connections=8, max_message_bytes=64 * 1024, idle_timeout=30)


SRC = Path(__file__).resolve().parents[2] / "src"


def serve(home: Path, port: int) -> subprocess.Popen[str]:
    """``custos sql serve --port PORT`` on ``home``, a process of its own (its first line of
    output says where it listens); the caller stops it."""
    return subprocess.Popen(
        [sys.executable, "-m", "custos", "sql", "serve", "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(SRC), "CUSTOS_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
