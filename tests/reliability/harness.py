"""Drive a real ``custos serve`` (worker processes) under load, kill it, restart it, and
check what it promised: shared by the reliability tests and ``bench/reliability.py``."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from custos.access import Custos
from custos.store.approvals import ApprovalRequestRow, GrantRow

READS = [
    {"subject": "user-1", "category": "ip_history", "purpose": "trust_safety", "ticket": "T-11"},
    {"subject": "user-1", "category": "profile", "purpose": "trust_safety", "ticket": "T-11"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Acknowledged:
    """Everything the service answered with success, to be found again after a crash."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    """``custos serve`` in its own process group, so that a kill takes every worker."""

    def __init__(self, home: Path, workers: int) -> None:
        self.home, self.workers = home, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, token: str, timeout: float = 60) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "custos",
                "--home",
                str(self.home),
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = httpx.get(
                    f"{self.url}/healthz", headers={"Authorization": f"Bearer {token}"}, timeout=2
                )
                if reply.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("custos serve exited during start-up")
            time.sleep(0.1)
        raise RuntimeError("custos serve did not start")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None


def load(url: str, token: str, seen: Acknowledged, stop: threading.Event, seed: int) -> None:
    """One client: guarded reads, checks, and now and then an approval request."""
    rng = random.Random(seed)
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        while not stop.is_set():
            try:
                if rng.random() < 0.05:
                    reply = client.post(
                        "/v1/approvals/requests",
                        json={
                            "subject": "user-42",
                            "categories": ["ip_history"],
                            "purpose": "trust_safety",
                            "ticket": "T-10",
                            "reason": f"load {rng.random()}",
                        },
                    )
                    if reply.status_code == 201:
                        with seen.lock:
                            seen.requests.append(reply.json()["id"])
                    continue
                reply = client.post("/v1/read", json=rng.choice(READS))
            except httpx.HTTPError:
                with seen.lock:
                    seen.errors += 1
                continue
            if reply.status_code == 200:
                body = reply.json()
                with seen.lock:
                    seen.decisions.append(body)
                    if body.get("release_ledger_index") is not None:
                        seen.releases.append(body)


def check_promises(system: Custos, seen: Acknowledged) -> dict[str, int]:
    """Everything acknowledged is in the ledger, in order; no approval is half-applied.

    Raises AssertionError naming what broke.
    """
    size = system.ledger.size()
    for body in seen.decisions:
        entry = json.loads(system.ledger.entry(body["ledger_index"]))
        assert entry["id"] == body["event_id"], f"decision {body['event_id']} not at its index"
    for body in seen.releases:
        release = json.loads(system.ledger.entry(body["release_ledger_index"]))
        assert release["type"] == "release"
        assert release["decision_id"] == body["event_id"]
        assert release["records"] == len(body["records"])
        assert body["release_ledger_index"] == body["ledger_index"] + 1
    with system.db.session() as session:
        requests = {r.id: r for r in session.query(ApprovalRequestRow)}
        grants = {g.id: g for g in session.query(GrantRow)}
    for request_id in seen.requests:
        assert request_id in requests, f"acknowledged request {request_id} lost"
    for request in requests.values():
        if request.status == "approved":
            assert request.grant_id in grants, f"approved {request.id} has no grant"
    for grant in grants.values():
        if grant.request_id is not None:
            assert requests[grant.request_id].grant_id == grant.id
    return {
        "ledger_size": size,
        "decisions": len(seen.decisions),
        "releases": len(seen.releases),
        "requests": len(seen.requests),
    }


def verify_log(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "custos", "--home", str(home), "log", "verify", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=os.environ.copy(),
    )
