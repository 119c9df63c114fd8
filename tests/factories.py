"""Small real worlds for tests: directory documents written in the DESIGN.md format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from custos.access import Custos
from custos.approvals import Grant
from custos.directory import parse_text


def org(
    principals: list[dict[str, Any]] | None = None,
    subjects: list[dict[str, Any]] | None = None,
    tickets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A directory mapping with sensible defaults for omitted fields."""
    people = []
    for p in principals or []:
        people.append({"name": p["id"], "team": "support", "country": "US", **p})
    return {"principals": people, "subjects": subjects or [], "tickets": tickets or []}


def write_org(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_org(system: Custos, data: dict[str, Any]) -> None:
    system.directory.merge(parse_text(yaml.safe_dump(data), "test org"), source="test org")


SUPPORT_WORLD = org(
    principals=[
        {"id": "emp-1000", "role": "support_agent"},
        {"id": "emp-1001", "role": "support_agent", "manager": "emp-1000"},
        {"id": "emp-1002", "role": "support_agent", "manager": "emp-1000"},
        {"id": "emp-1004", "role": "support_agent", "status": "terminated"},
        {"id": "emp-2001", "role": "internal_audit", "team": "internal-audit"},
    ],
    subjects=[
        {"id": "user-1", "jurisdiction": "US"},
        {"id": "user-2", "jurisdiction": "US"},
        {"id": "user-42", "jurisdiction": "US", "protected": ["journalist"]},
        {
            "id": "user-77",
            "jurisdiction": "US",
            "protected": ["employee_account"],
            "employee": "emp-1002",
        },
    ],
    tickets=[
        {
            "id": "T-1",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1001",
            "status": "open",
            "opened": "2026-01-05T10:00:00Z",
            "opened_by": "subject",
        },
        {
            "id": "T-2",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1002",
            "status": "open",
        },
        {
            "id": "T-3",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1001",
            "status": "closed",
        },
        {
            "id": "T-4",
            "kind": "support",
            "subject": "user-2",
            "assignee": "emp-1001",
            "status": "open",
        },
        {
            "id": "T-5",
            "kind": "support",
            "subject": "user-1",
            "assignee": "emp-1004",
            "status": "open",
        },
        {
            "id": "T-6",
            "kind": "support",
            "subject": "user-77",
            "assignee": "emp-1001",
            "status": "open",
        },
        {
            "id": "T-7",
            "kind": "internal_investigation",
            "subject": "user-42",
            "assignee": "emp-2001",
            "status": "open",
            "opened_by": "emp-2001",
        },
    ],
)


#: The 2022 case: an internal-audit team, a trust-and-safety team with its manager, the
#: privacy office, an incident responder, and a journalist among the subjects.
APPROVALS_WORLD = org(
    principals=[
        {"id": "emp-2001", "role": "internal_audit", "team": "internal-audit"},
        {
            "id": "emp-3000",
            "role": "trust_safety_investigator",
            "team": "ts",
            "groups": ["approvers"],
        },
        {
            "id": "emp-3001",
            "role": "trust_safety_investigator",
            "team": "ts",
            "manager": "emp-3000",
            "groups": ["approvers"],
        },
        {
            "id": "emp-3002",
            "role": "trust_safety_investigator",
            # A sibling team under the same manager: independent of emp-3001 (rule same-team
            # refuses teammates; tests/approvals/test_independence.py adds one).
            "team": "ts-escalations",
            "manager": "emp-3000",
            "groups": ["approvers"],
        },
        {
            "id": "emp-3003",
            "role": "trust_safety_investigator",
            "team": "ts",
            "manager": "emp-3001",
            "groups": ["approvers"],
        },
        {
            "id": "emp-3009",
            "role": "trust_safety_investigator",
            "team": "ts",
            "groups": ["approvers"],
            "status": "leaving",
        },
        {
            "id": "emp-4001",
            "role": "privacy_officer",
            "team": "privacy",
            "groups": ["privacy_office"],
        },
        {
            "id": "emp-4002",
            "role": "privacy_officer",
            "team": "privacy",
            "groups": ["privacy_office"],
        },
        {"id": "emp-5001", "role": "security_responder", "team": "security"},
        {"id": "emp-6001", "role": "support_agent", "team": "support"},
    ],
    subjects=[
        {"id": "user-1", "jurisdiction": "US"},
        {"id": "user-42", "jurisdiction": "US", "protected": ["journalist"]},
        {
            "id": "user-77",
            "jurisdiction": "US",
            "protected": ["employee_account"],
            "employee": "emp-3002",
        },
    ],
    tickets=[
        {
            "id": "T-7",
            "kind": "internal_investigation",
            "subject": "user-42",
            "assignee": "emp-2001",
            "status": "open",
            "opened_by": "emp-2001",
        },
        {
            "id": "T-10",
            "kind": "trust_safety",
            "subject": "user-42",
            "assignee": "emp-3001",
            "status": "open",
            "opened_by": "system",
        },
        {
            "id": "T-11",
            "kind": "trust_safety",
            "subject": "user-1",
            "assignee": "emp-3001",
            "status": "open",
            "opened_by": "subject",
        },
        {
            "id": "T-12",
            "kind": "security_incident",
            "subject": "user-1",
            "assignee": "emp-5001",
            "status": "open",
            "opened_by": "system",
        },
        {
            "id": "T-13",
            "kind": "trust_safety",
            "subject": "user-42",
            "assignee": "emp-3002",
            "status": "open",
            "opened_by": "system",
        },
        {
            "id": "T-14",
            "kind": "trust_safety",
            "subject": "user-77",
            "assignee": "emp-3001",
            "status": "open",
            "opened_by": "system",
        },
    ],
)


REASON = "abuse report R-77 names this account as the origin of coordinated harassment"


def ask(system: Custos, principal: str = "emp-3001", ticket: str = "T-10", **kw: Any) -> str:
    """Open an approval request in :data:`APPROVALS_WORLD` (by default: precise
    ``ip_history`` of user-42 for trust and safety, on T-10); returns its id."""
    request = system.request_access(
        principal=principal,
        subject=kw.pop("subject", "user-42"),
        categories=kw.pop("categories", ["ip_history"]),
        purpose=kw.pop("purpose", "trust_safety"),
        ticket=ticket,
        precision=kw.pop("precision", "precise"),
        reason=kw.pop("reason", REASON),
        **kw,
    )
    return request.id


def take_break_glass(system: Custos, reason: str = "live incident") -> Grant:
    """Break glass in :data:`APPROVALS_WORLD` (and the API tests' world): the security
    responder emp-5001 on user-1's ``ip_history``, incident ticket T-12."""
    return system.break_glass(
        principal="emp-5001",
        subject="user-1",
        categories=["ip_history"],
        purpose="security_incident",
        ticket="T-12",
        reason=reason,
    )


def logins(subject: str, count: int = 3, net: str = "198.51.100") -> list[str]:
    """Login records (JSON Lines) for ``subject`` from ``net``.1, .2, …, this month."""
    import json
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) - timedelta(days=count + 1)
    return [
        json.dumps(
            {
                "id": f"{subject}-login-{n}",
                "kind": "login",
                "subject": subject,
                "time": (start + timedelta(days=n)).isoformat().replace("+00:00", "Z"),
                "ip": f"{net}.{n}",
            }
        )
        for n in range(1, count + 1)
    ]


def hr_source(home: Path) -> None:
    """A DuckDB source of HR notes, mapped with the pack's category ``health``."""
    import duckdb

    with duckdb.connect(str(home / "hr.duckdb")) as con:
        con.execute("CREATE TABLE notes (user_id VARCHAR, seen TIMESTAMP, diagnosis VARCHAR)")
        con.execute("INSERT INTO notes VALUES ('user-5', '2026-01-05 10:00', 'flu')")
    (home / "sources.yaml").write_text(
        "sources:\n  hr:\n    url: duckdb:hr.duckdb\n    tables:\n      notes:\n"
        "        subject: user_id\n        columns:\n          seen: plain\n"
        "          diagnosis: {category: health, coarse: none}\n",
        encoding="utf-8",
    )
