"""A small, hand-made office for rule tests: eight support agents with two weeks of ordinary,
fully explained work, plus whatever a test adds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from custos.access import Custos
from custos.detect import Alert, DetectConfig, Detector, EventStore, run_detection
from custos.detect.kept import (
    ACTIVITY_COLUMNS,
    RESIDUE_COLUMNS,
    Classification,
    activity_counts,
    first_pass,
)
from custos.directory.model import Ticket
from custos.times import utc_instant
from tests.factories import load_org

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def at(day: int, hour: float) -> datetime:
    return START + timedelta(days=day, hours=hour)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Office:
    principals: list[dict[str, Any]] = field(default_factory=list)
    subjects: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for n in range(1, 9):
            self.principals.append(
                {
                    "id": f"emp-{n}",
                    "name": f"Agent {n}",
                    "role": "support_agent",
                    "team": "support",
                    "country": "US",
                }
            )
        self.principals.append(
            {
                "id": "emp-20",
                "name": "Auditor",
                "role": "internal_audit",
                "team": "internal-audit",
                "country": "US",
            }
        )
        for n in range(1, 80):
            self.subjects.append({"id": f"user-{n}", "jurisdiction": "US"})
        self.subjects += [
            {"id": "jour-1", "jurisdiction": "US", "protected": ["journalist"]},
            {"id": "act-1", "jurisdiction": "US", "protected": ["activist"]},
            {"id": "minor-1", "jurisdiction": "US", "protected": ["minor"]},
            {
                "id": "acct-2",
                "jurisdiction": "US",
                "protected": ["employee_account"],
                "employee": "emp-2",
            },
        ]
        # Ordinary work: each agent, each weekday of two weeks, four explained reads.
        for n in range(1, 9):
            for day in [d for d in range(14) if d % 7 < 5]:
                for k in range(4):
                    subject = f"base-{n}-{day}-{k}"
                    self.subjects.append({"id": subject, "jurisdiction": "US"})
                    ticket = self.ticket(f"emp-{n}", subject, opened=at(day, 9))
                    self.access(f"emp-{n}", subject, at(day, 10 + k), ticket=ticket)

    def ticket(
        self,
        assignee: str,
        subject: str,
        kind: str = "support",
        opened: datetime | None = None,
        closed: datetime | None = None,
        opened_by: str = "subject",
    ) -> str:
        entry: dict[str, Any] = {
            "id": f"T-{len(self.tickets) + 1}",
            "kind": kind,
            "subject": subject,
            "assignee": assignee,
            "status": "closed" if closed else "open",
            "opened": iso(opened or START),
            "opened_by": opened_by,
        }
        if closed:
            entry["closed"] = iso(closed)
        self.tickets.append(entry)
        return str(entry["id"])

    def access(
        self,
        principal: str,
        subject: str,
        moment: datetime,
        category: str = "profile",
        purpose: str = "support",
        ticket: str | None = None,
        **extra: Any,
    ) -> str:
        event: dict[str, Any] = {
            "id": f"ev-{len(self.events) + 1}",
            "time": iso(moment),
            "principal": principal,
            "action": "read",
            "subject": subject,
            "category": category,
            "purpose": purpose,
            "decision": "allow",
            "precision": "coarse",
        }
        if ticket:
            event["ticket"] = ticket
        event.update(extra)
        self.events.append(event)
        return str(event["id"])

    def person(self, principal: str) -> dict[str, Any]:
        return next(p for p in self.principals if p["id"] == principal)

    def detect(self, system: Custos, section: dict[str, Any] | None = None) -> list[Alert]:
        load_org(
            system,
            {"principals": self.principals, "subjects": self.subjects, "tickets": self.tickets},
        )
        EventStore(system.db).append(self.events)
        return run_detection(system.db, system.directory, section).alerts


def rules_for(alerts: list[Alert], principal: str) -> set[str]:
    return {a.rule for a in alerts if principal in a.principals}


Findings = list[tuple[str, dict[str, object]]]


def findings(con: duckdb.DuckDBPyConnection, kept: Classification | None = None) -> Findings:
    """Every rule's findings over ``con``'s tables (or ``kept`` and the directory's), as
    comparable values in a fixed order."""
    found = Detector(con, DetectConfig()).run(kept)
    return sorted(((f.fingerprint, f.to_dict()) for f in found), key=lambda x: x[0])


def as_decided(event: dict[str, Any], tickets: dict[str, Ticket]) -> dict[str, Any]:
    """``event`` as custos's ledger would have held it: a decision, with the explanation the
    guarded path gives an allowed access whose ticket covered it then (the ticket open from
    its opened to its closed time)."""
    ticket = tickets.get(event.get("ticket") or "")
    entry = {**event, "type": "decision"}
    if (
        ticket is not None
        and event["decision"] == "allow"
        and event["action"] != "export"
        and not event.get("break_glass")
    ):
        moment: datetime = utc_instant(event["time"])
        if replace(ticket, status="open").covers(
            event["principal"], event["subject"], event["purpose"], moment
        ):
            entry["explained"] = (
                "own_ticket" if ticket.opened_by == event["principal"] else "ticket"
            )
    return entry


def assert_kept_holds_a_fresh_pass(con: duckdb.DuckDBPyConnection, kept: Classification) -> None:
    """The kept tables hold exactly what the passes over every event of ``events`` give."""
    for table, query, columns in (
        (kept.residue, first_pass("events", kept.config, few=False), RESIDUE_COLUMNS),
        (kept.activity, activity_counts("events", kept.config), ACTIVITY_COLUMNS),
    ):
        a = f"SELECT {', '.join(columns)} FROM {table}"
        b = f"SELECT {', '.join(columns)} FROM ({query})"
        differ = con.execute(
            f"SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a}))"
        ).fetchone()
        assert differ == (0,), table
