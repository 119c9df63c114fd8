"""The service fails closed when its database cannot be written, and resumes by itself."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from tests.access.test_read import _make_ledger_read_only
from tests.api.conftest import Service

READ = {
    "subject": "user-1",
    "category": "ip_history",
    "purpose": "trust_safety",
    "ticket": "T-11",
}


def test_an_unwritable_ledger_means_503_and_nothing_released_then_recovery(
    service: Service,
) -> None:
    with service.client(service.tokens["ts-tool"]) as tool:
        assert tool.post("/v1/read", json=READ).status_code == 200
        _make_ledger_read_only(service.system)
        for path in ("/v1/read", "/v1/check"):
            reply = tool.post(path, json=READ)
            assert reply.status_code == 503, reply.text
            body = reply.json()
            assert body["error"]["code"] in ("ledger_unavailable", "store_unavailable")
            assert "records" not in body
            assert "203.0.113" not in reply.text
        with service.system.db.engine.begin() as conn:
            if service.system.db.is_sqlite:
                conn.execute(text("DROP TRIGGER ro"))
            else:
                conn.execute(text("DROP TRIGGER ro ON ledger_entries"))
        recovered = tool.post("/v1/read", json=READ)
        assert recovered.status_code == 200
        assert [r["network"] for r in recovered.json()["records"]] == ["203.0.113.0/24"] * 3


def test_looking_at_the_access_log_is_refused_when_it_cannot_be_logged(
    service: Service,
) -> None:
    # Oversight is watched too: a search of who accessed someone is shown only once the
    # ledger holds the record of the search.
    with service.client(service.tokens["siem"]) as siem:
        assert siem.get("/v1/events", params={"subject": "user-1"}).status_code == 200
        _make_ledger_read_only(service.system)
        try:
            reply = siem.get("/v1/events", params={"subject": "user-1"})
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["code"] in ("ledger_unavailable", "store_unavailable")
            assert "emp-" not in reply.text  # nothing of the log was shown
        finally:
            with service.system.db.engine.begin() as conn:
                if service.system.db.is_sqlite:
                    conn.execute(text("DROP TRIGGER ro"))
                else:
                    conn.execute(text("DROP TRIGGER ro ON ledger_entries"))
        assert siem.get("/v1/events", params={"subject": "user-1"}).status_code == 200


def test_readiness_says_unavailable_and_nothing_else_while_the_ledger_cannot_be_opened(
    service: Service,
) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as probe:
        assert probe.get("/readyz").json() == {"status": "ok"}
        with service.system.db.engine.begin() as conn:
            conn.execute(text("ALTER TABLE ledger_state RENAME TO ledger_state_gone"))
        try:
            down = probe.get("/readyz")
            alive = probe.get("/healthz")
        finally:
            with service.system.db.engine.begin() as conn:
                conn.execute(text("ALTER TABLE ledger_state_gone RENAME TO ledger_state"))
        assert (down.status_code, down.json()) == (503, {"status": "unavailable"})
        # Liveness is the process, not its database: a restart would not help.
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        assert probe.get("/readyz").status_code == 200
