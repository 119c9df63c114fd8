"""A real installation with every kind of event export sends, and real receivers on
loopback: a syslog listener (UDP and TCP sockets), an HTTP webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos
from custos.detect import Finding
from custos.policy import AccessRequest
from tests.factories import APPROVALS_WORLD, load_org, logins

ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """This process's environment, with this checkout's sources first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``custos ARGS`` in a process of its own (its home from ``$CUSTOS_HOME``)."""
    return subprocess.run(
        [sys.executable, "-m", "custos", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


#: A value that must never leave custos in an export: one of the ingested login IPs.
SECRET_IP = "198.51.100.3"


def populate(system: Custos) -> None:
    """Decisions (allowed, denied, approval required), a precise read and its release, a
    request approved into a grant, break-glass with its alert, and a detection alert."""
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=5), "logins.jsonl")
    opened = system.request_access(
        principal="emp-3001",
        subject="user-1",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-11",
        precision="precise",
        reason=f"takeover report from {SECRET_IP}",  # free text: never exported
    )
    system.approvals.approve(opened.id, "emp-3002", "matches the report")
    system.read(
        AccessRequest(
            "emp-3001", "user-1", "ip_history", "trust_safety", ticket="T-11", precision="precise"
        )
    )
    system.decide(AccessRequest("emp-6001", "user-42", "ip_history", "support"))
    system.break_glass(
        principal="emp-5001",
        subject="user-1",
        categories=["ip_history"],
        purpose="security_incident",
        ticket="T-12",
        reason="credential stuffing",
    )
    add_alert(system, "emp-2001", "user-42")


def add_alert(
    system: Custos, principal: str, subject: str, rule: str = "protected_subject_access"
) -> None:
    now = datetime.now(UTC)
    system.casebook.record(
        [
            Finding(
                rule=rule,
                severity="critical",
                principals=(principal,),
                subjects=(subject,),
                events=("ev-test",),
                first_seen=now,
                last_seen=now,
                explanation=f"{principal} looked at {subject}, a journalist",
                key=f"{principal}|{subject}|{rule}|{now.isoformat()}",
            )
        ]
    )


def later() -> datetime:
    """A clock past the alerts' settling time (the exporter waits for late commits)."""
    return datetime.now(UTC) + timedelta(seconds=30)


@pytest.fixture
def world(system: Custos) -> Custos:
    populate(system)
    return system


@dataclass
class SyslogListener:
    """A syslog receiver on 127.0.0.1: a UDP socket and a TCP socket reading RFC 6587
    octet-counted frames, keeping every message received in order."""

    udp: socket.socket
    tcp: socket.socket
    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    @property
    def tcp_port(self) -> int:
        return int(self.tcp.getsockname()[1])

    def received(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)

    def serve_udp(self) -> None:
        self.udp.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data, _ = self.udp.recvfrom(70000)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(data)

    def serve_tcp(self) -> None:
        self.tcp.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._read_frames, args=(conn,), daemon=True).start()

    def _read_frames(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        conn.settimeout(0.1)
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                frames = decoder.feed(data)
                with self.lock:
                    self.messages.extend(frames)


class FrameDecoder:
    """Splits a TCP byte stream into RFC 6587 octet-counted messages, whatever the reads."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out: list[bytes] = []
        while True:
            space = self.buffer.find(b" ")
            if space < 0:
                return out
            length_text = self.buffer[:space]
            if not length_text.isdigit() or length_text.startswith(b"0"):
                raise ValueError(f"bad frame length {length_text!r}")
            length = int(length_text)
            if len(self.buffer) < space + 1 + length:
                return out
            out.append(self.buffer[space + 1 : space + 1 + length])
            self.buffer = self.buffer[space + 1 + length :]


@pytest.fixture
def syslog() -> Iterator[SyslogListener]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    listener = SyslogListener(udp, tcp)
    threads = [
        threading.Thread(target=listener.serve_udp, daemon=True),
        threading.Thread(target=listener.serve_tcp, daemon=True),
    ]
    for t in threads:
        t.start()
    yield listener
    listener.stop.set()
    for t in threads:
        t.join()
    udp.close()
    tcp.close()


WEBHOOK_SECRET = "a webhook secret for tests"


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that checks each POST's HMAC signature and keeps the
    events of the batches it accepted; ``fail_next`` makes it answer 503 that many times."""

    server: ThreadingHTTPServer
    events: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    refused: int = 0
    fail_next: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers["X-Custos-Timestamp"]
            expected = (
                "sha256="
                + hmac.new(
                    WEBHOOK_SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256
                ).hexdigest()
            )
            with receiver.lock:
                if not hmac.compare_digest(expected, self.headers["X-Custos-Signature"]):
                    receiver.refused += 1
                    status = 401
                elif receiver.fail_next:
                    receiver.fail_next -= 1
                    status = 503
                else:
                    receiver.events.extend(json.loads(body))
                    receiver.deliveries.append(self.headers["X-Custos-Delivery"])
                    status = 204
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join()


def write_config(system: Custos, text: str) -> None:
    """Append ``text`` to the home's config.toml (the installation re-reads settings when
    it is opened again; tests build the exporter from freshly loaded settings)."""
    path = system.settings.config_path
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(before + "\n" + text, encoding="utf-8")
