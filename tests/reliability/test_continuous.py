"""``custos serve --workers 2`` detecting by itself, and the worker holding the detection
lease killed with SIGKILL in the middle of a run: the other takes over once the lease
expires, and no alert is lost, raised twice or announced twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from custos.access import Custos
from custos.detect.continuous import DetectionLease
from custos.store.approvals import NotificationRow
from tests.api.conftest import populate
from tests.api.test_housekeeping import wait_for
from tests.approvals.test_notify import Receiver
from tests.detect.test_continuous import misuse
from tests.reliability.harness import Server

LEASE = 2.0


def test_killing_the_lease_holder_loses_and_doubles_nothing(home: Path, system: Custos) -> None:
    tokens = populate(system)
    receiver = Receiver()
    (home / "config.toml").write_text(
        f"[detect]\ninterval = 0.5\nlease_seconds = {LEASE}\n\n"
        f'[approvals]\nwebhook_url = "{receiver.url}"\n'
    )
    lease = DetectionLease(system.db, LEASE)
    server = Server(home, workers=2)
    server.start(tokens["monitor"])
    # A new connection per request: a kept one may lead to the worker about to be killed.
    siem = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {tokens['siem']}"},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )

    def get_alerts() -> list[dict[str, Any]]:
        for _ in range(5):
            try:
                found: list[dict[str, Any]] = siem.get("/v1/alerts").json()
            except httpx.TransportError:  # answered by the killed worker
                continue
            return found
        raise AssertionError("the service does not answer")

    def alerted(principal: str) -> bool:
        return any(
            principal in a["principals"] and a["rule"] == "protected_subject_access"
            for a in get_alerts()
        )

    try:
        wait_for(lambda: lease.status().runs >= 2, 60)
        assert siem.post("/v1/events", json={"events": misuse(1)}).status_code == 201
        wait_for(lambda: alerted("emp-2001"), 30)
        # New evidence, and the worker that takes it in is killed while it holds the lease.
        assert siem.post("/v1/events", json={"events": misuse(2, "emp-3009")}).status_code == 201
        holder = None
        deadline = time.monotonic() + 30
        while holder is None and time.monotonic() < deadline:
            holder = lease.status().holder
        assert holder is not None, "no run started"
        os.kill(int(holder.split(":")[1]), signal.SIGKILL)
        killed = lease.status()
        # A run can end between seeing its holder and the kill (runs take milliseconds).
        # Then the worker died holding nothing, and what must hold is the rest: no alert
        # lost, raised twice or announced twice.
        mid_run = killed.holder == holder
        if mid_run:
            assert killed.expires is not None
        # Detection goes on: the lease expires, the other worker runs and files what the
        # killed run may or may not have filed.
        wait_for(lambda: alerted("emp-3009"), 30)
        wait_for(lambda: lease.status().runs >= killed.runs + 2, 30)
        after = lease.status()
        assert after.holder != holder
        if mid_run:
            # Nobody ran while the dead worker's lease lasted.
            assert after.started is not None
            assert killed.expires is not None
            assert after.started >= killed.expires
        assert siem.post("/v1/events", json={"events": misuse(3, "emp-5001")}).status_code == 201
        wait_for(lambda: alerted("emp-5001"), 30)
        alerts = get_alerts()
        wait_for(lambda: len(receiver.received) >= len(alerts), 60)
        time.sleep(1.0)  # a few more runs and deliveries, which must add nothing
        alerts = get_alerts()
    finally:
        siem.close()
        server.kill()
        receiver.server.shutdown()
    keys = [(a["rule"], tuple(a["principals"]), tuple(a["subjects"])) for a in alerts]
    assert len(keys) == len(set(keys)), "an alert was raised twice"
    for principal in ("emp-2001", "emp-3009", "emp-5001"):
        assert any(k[0] == "protected_subject_access" and principal in k[1] for k in keys)
    with system.db.session() as session:
        notes = [n for n in session.query(NotificationRow) if n.kind == "alert"]
    assert sorted(n.id for n in notes) == sorted(f"alert-{a['id']}" for a in alerts)
    delivered = [m["headers"]["X-Custos-Delivery"] for m in receiver.received]
    assert sorted(delivered) == sorted(n.id for n in notes), "announced twice or not at all"
