"""The service detects by itself: events posted over the API are alerted on within an
interval, announced once through the webhook (not again after a restart), and the run's
time, duration and lag are on /metrics."""

from __future__ import annotations

import contextlib
import json
import time

import httpx

from custos.access import Custos
from custos.detect.continuous import DetectionLease
from tests.api.conftest import populate, run_service
from tests.api.test_housekeeping import configured, wait_for
from tests.approvals.test_notify import Receiver
from tests.detect.test_continuous import misuse

INTERVAL = 0.5
serving = contextlib.contextmanager(run_service)


def runs(system: Custos) -> int:
    return DetectionLease(system.db, 1).status().runs


def alerts_of(receiver: Receiver) -> list[str]:
    return [
        m["headers"]["X-Custos-Delivery"]
        for m in receiver.received
        if m["headers"]["X-Custos-Event"] == "alert"
    ]


def test_events_posted_are_alerted_within_an_interval_and_announced_once(
    system: Custos,
) -> None:
    tokens = populate(system)
    receiver = Receiver()
    custos = configured(
        system,
        detect={"interval": INTERVAL, "lease_seconds": 5},
        approvals={"webhook_url": receiver.url},
    )
    try:
        with serving(custos) as (url, _app):
            wait_for(lambda: runs(custos) >= 1, 30)  # the first run, over nothing
            with _client(url, tokens["siem"]) as c:
                posted = time.monotonic()
                assert c.post("/v1/events", json={"events": misuse(1)}).status_code == 201
                found: list[dict[str, object]] = []

                def alerted() -> bool:
                    found[:] = [
                        a
                        for a in c.get("/v1/alerts").json()
                        if a["rule"] == "protected_subject_access"
                    ]
                    return bool(found)

                took = wait_for(alerted, 30)
                (alert,) = found
                status = DetectionLease(custos.db, 1).status()
                # Raised by the first run to start after the events arrived: within one
                # interval of waiting plus that run (and the poll's half interval).
                assert isinstance(alert["time_to_alert"], float)
                assert alert["time_to_alert"] <= 1.5 * INTERVAL + 2 * (status.duration or 0) + 1
                assert took <= time.monotonic() - posted
                wait_for(lambda: f"alert-{alert['id']}" in alerts_of(receiver), 10)
                before = runs(custos)
                wait_for(lambda: runs(custos) >= before + 3, 30)  # runs that find it again
                with _client(url, tokens["monitor"]) as monitor:
                    values = _gauges(monitor.get("/metrics").text)
                assert values["custos_detect_runs"] >= before + 3
                assert values["custos_detect_last_run_timestamp_seconds"] > time.time() - 30
                assert values["custos_detect_last_run_duration_seconds"] > 0
                assert values["custos_detect_lag_seconds"] >= 0
                assert values["custos_detect_failed_runs"] == 0
        # Started again: the runs find the same alert, and announce nothing more.
        with serving(custos):
            after = runs(custos)
            wait_for(lambda: runs(custos) >= after + 3, 30)
    finally:
        receiver.server.shutdown()
    announced = alerts_of(receiver)
    assert announced.count(f"alert-{alert['id']}") == 1
    assert len(announced) == len(set(announced))
    body = json.loads(
        next(m["body"] for m in receiver.received if m["headers"]["X-Custos-Event"] == "alert")
    )
    assert body["event"] == "alert"
    assert body["id"].startswith("al-")


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _gauges(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line.startswith("custos_detect_"):
            name, value = line.split()
            values[name] = float(value)
    return values
