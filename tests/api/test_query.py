"""POST /v1/query over real HTTP on loopback: a tool token acts for its own principal only,
rows come back after the release is logged, refusals and rejections in the one error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from custos.access import Custos
from tests.api.conftest import Service, run_service
from tests.sql.world import sql_home

SUPPORT = {
    "source": "app",
    "sql": "SELECT ip, email FROM logins WHERE user_id = 'user-1'",
    "purpose": "support",
    "ticket": "T-1",
}


@pytest.fixture
def service(system: Custos) -> Iterator[Service]:
    sql_home(system)
    tokens = {}
    for name, roles, principal in (
        ("support-tool", ["tool"], "emp-1001"),
        ("audit-tool", ["tool"], "emp-2001"),
        ("monitor", ["auditor"], None),
    ):
        _, tokens[name] = system.accounts.create_token(name, roles, principal)
    for url, app in run_service(system):
        yield Service(system, url, app, tokens)


def test_a_tool_queries_as_its_own_principal(service: Service) -> None:
    with service.client(service.tokens["support-tool"]) as tool:
        reply = tool.post("/v1/query", json=SUPPORT)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["row_count"] == 3
        assert {tuple(row) for row in body["rows"]} == {("198.51.100.0/24", "user-1@example.org")}
        assert body["columns"][0] == {"name": "ip", "category": "ip_history", "precision": "coarse"}
        entry = service.system.ledger.entry(body["release_ledger_index"])
        release = json.loads(entry)
        assert release["type"] == "sql_release"
        assert release["source"].startswith("api:")
        assert release["principal"] == "emp-1001"
        # Acting for someone else is refused before anything is decided.
        other = tool.post("/v1/query", json={**SUPPORT, "principal": "emp-1002"})
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "forbidden"


def test_refusals_and_rejections_have_the_one_error_shape(service: Service) -> None:
    with service.client(service.tokens["audit-tool"]) as audit:
        hunt = {
            "source": "app",
            "sql": "SELECT ip FROM logins WHERE user_id = 'user-42'",
            "purpose": "internal_investigation",
            "ticket": "T-7",
        }
        refused = audit.post("/v1/query", json=hunt)
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "query_refused"
        assert "source protection" in error["message"]
        rejected = audit.post("/v1/query", json={**hunt, "sql": "DROP TABLE logins"})
        assert rejected.status_code == 400
        assert rejected.json()["error"]["code"] == "sql_rejected"
        unknown = audit.post("/v1/query", json={**hunt, "source": "nowhere"})
        assert unknown.status_code == 422
        invalid = audit.post("/v1/query", json={**hunt, "purpose": "curiosity"})
        assert invalid.status_code == 422
        assert invalid.json()["error"]["code"] == "invalid_input"


def test_only_tools_may_query(service: Service) -> None:
    with service.client(service.tokens["monitor"]) as monitor:
        assert monitor.post("/v1/query", json=SUPPORT).status_code == 403
    with service.client() as anonymous:
        assert anonymous.post("/v1/query", json=SUPPORT).status_code == 401
