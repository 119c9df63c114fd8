"""Webhook notifications over real HTTP on loopback: signed, retried with back-off, and never
in the way of an approval."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from custos.access import Custos
from custos.approvals import Outbox, WebhookNotifier
from tests.factories import APPROVALS_WORLD, ask, load_org

SECRET = b"s3cret-for-tests"


class Receiver:
    """A loopback webhook receiver that can be told to fail."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append({"headers": dict(self.headers), "body": body})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def world(system: Custos, receiver: Receiver) -> Custos:
    load_org(system, APPROVALS_WORLD)
    system.approvals.outbox = Outbox(system.db, WebhookNotifier(receiver.url, SECRET, timeout=2.0))
    return system


def test_notifications_are_signed_and_describe_the_event(world: Custos, receiver: Receiver) -> None:
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "ok")
    world.approvals.approve(request_id, "emp-4001", "ok")
    report = world.approvals.outbox.deliver()
    assert (report.delivered, report.pending) == (2, 0)
    kinds = [m["headers"]["X-Custos-Event"] for m in receiver.received]
    assert kinds == ["request", "grant"]
    for message in receiver.received:
        headers, body = message["headers"], message["body"]
        expected = hmac.new(
            SECRET, headers["X-Custos-Timestamp"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Custos-Signature"] == f"sha256={expected}"
        assert json.loads(body)["request"] == request_id
    # A tampered body no longer matches its signature.
    first = receiver.received[0]
    forged = hmac.new(
        SECRET, first["headers"]["X-Custos-Timestamp"].encode() + b"." + b"{}", hashlib.sha256
    ).hexdigest()
    assert first["headers"]["X-Custos-Signature"] != f"sha256={forged}"


def test_a_failing_receiver_neither_blocks_nor_loses_anything(
    world: Custos, receiver: Receiver
) -> None:
    receiver.status = 500
    request_id = ask(world)
    world.approvals.approve(request_id, "emp-3002", "ok")
    approved = world.approvals.approve(request_id, "emp-4001", "ok")
    assert approved.status == "approved"  # the approval went through regardless
    now = datetime.now(UTC)
    first = world.approvals.outbox.deliver(now)
    assert (first.delivered, first.failed, first.pending) == (0, 2, 2)
    # Not due again before the back-off has passed.
    assert world.approvals.outbox.deliver(now + timedelta(seconds=5)).failed == 0
    receiver.status = 200
    later = world.approvals.outbox.deliver(now + timedelta(seconds=31))
    assert (later.delivered, later.pending) == (2, 0)
    events = [m["headers"]["X-Custos-Event"] for m in receiver.received]
    assert events.count("request") == 2  # one failed attempt, one delivery
    states = {
        n["kind"]: (n["status"], n["attempts"]) for n in world.approvals.outbox.notifications()
    }
    assert states == {"request": ("delivered", 2), "grant": ("delivered", 2)}


def test_an_unreachable_receiver_is_retried_with_doubling_delays(world: Custos) -> None:
    outbox = Outbox(world.db, WebhookNotifier("http://127.0.0.1:9/", SECRET, timeout=0.5))
    assert [outbox.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert outbox.backoff(30) == timedelta(hours=1)
    world.approvals.outbox = outbox
    ask(world)
    report = outbox.deliver()
    assert (report.failed, report.pending) == (1, 1)
    (queued,) = outbox.notifications()
    assert queued["last_error"].startswith("webhook unreachable")


def test_delivery_gives_up_after_the_maximum_attempts_but_keeps_the_record(
    world: Custos, receiver: Receiver
) -> None:
    receiver.status = 503
    world.approvals.outbox.max_attempts = 3
    ask(world)
    now = datetime.now(UTC)
    for hour in range(3):
        world.approvals.outbox.deliver(now + timedelta(hours=hour * 2))
    (record,) = world.approvals.outbox.notifications()
    assert (record["status"], record["attempts"]) == ("failed", 3)
    assert record["last_error"] == "webhook answered HTTP 503"
