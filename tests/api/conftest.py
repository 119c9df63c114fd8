"""A real custos service on loopback (uvicorn in a thread) over a real database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from custos.access import Custos
from custos.api import create_app
from tests.factories import APPROVALS_WORLD, load_org, logins

PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    system: Custos
    url: str
    app: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)
    last_set_cookie: str = ""

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def session(self, username: str) -> httpx.Client:
        """A signed-in browser-like client; its CSRF token sent as a header."""
        client = httpx.Client(base_url=self.url, timeout=30)
        reply = client.post("/login", data={"username": username, "password": PASSWORD})
        assert reply.status_code == 303, reply.text
        # The cookie is Secure; browsers send it to loopback over http, httpx does not.
        secret = reply.cookies["custos_session"]
        client.cookies.clear()
        client.headers["Cookie"] = f"custos_session={secret}"
        self.last_set_cookie = reply.headers["set-cookie"]
        page = client.get("/")
        marker = '"X-CSRF-Token": "'
        start = page.text.index(marker) + len(marker)
        client.headers["X-CSRF-Token"] = page.text[start : page.text.index('"', start)]
        return client


def run_service(system: Custos) -> Iterator[tuple[str, FastAPI]]:
    port = free_port()
    app = create_app(system, housekeeping_seconds=3600)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def populate(system: Custos) -> dict[str, str]:
    """The 2022 world, its people's accounts and tools' tokens."""
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-42") + logins("user-1", net="203.0.113"), "logins.jsonl")
    accounts = system.accounts
    accounts.add("ana", PASSWORD, ["approver"], "emp-3002")
    accounts.add("priya", PASSWORD, ["privacy_officer"], "emp-4001")
    accounts.add("pete", PASSWORD, ["privacy_officer"], "emp-4002")
    accounts.add("max", PASSWORD, ["approver"], "emp-3000")  # the requester's manager
    accounts.add("root", PASSWORD, ["admin"])
    accounts.add("ivy", PASSWORD, ["investigator"], "emp-5001")
    accounts.add("aud", PASSWORD, ["auditor"])
    tokens = {}
    for name, roles, principal in (
        ("ts-tool", ["tool"], "emp-3001"),
        ("audit-tool", ["tool"], "emp-2001"),
        ("soc-tool", ["tool"], "emp-5001"),
        ("monitor", ["auditor"], None),
        ("siem", ["investigator"], None),
    ):
        _, tokens[name] = accounts.create_token(name, roles, principal)
    return tokens


@pytest.fixture
def service(system: Custos) -> Iterator[Service]:
    tokens = populate(system)
    for url, app in run_service(system):
        yield Service(system, url, app, tokens)
