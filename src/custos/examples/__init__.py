"""The README's example organisation, written by ``custos example``.

A small, coherent world whose ids are exactly those the README's commands use, so that every
command block can be run as written (and ``tests/cli/test_readme.py`` runs them, in order):

- ``directory.yaml``: principals, subjects and tickets (docs/formats.md, *Directory file*):
  a support agent and her lead, a trust-and-safety investigator and his lead, two privacy
  officers (the two-person rule needs two), a security responder, and the internal auditor of
  the 2022 case; a journalist with a linked second account, an employee's own account and an
  ordinary user; a ticket for every example.
- ``logins.jsonl``: vault records (*Vault records*): logins, a location and contact details.
- ``events.jsonl``: access events (*Access events*) from a tool that does not go through
  custos yet, including the 2022 pattern that ``custos detect`` explains.

Times are relative to ``now`` (the last few days), so records are within retention and
events within detection's windows whenever the example is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from custos.errors import InvalidInput

DIRECTORY_FILE = "directory.yaml"
RECORDS_FILE = "logins.jsonl"
EVENTS_FILE = "events.jsonl"
FILES = (DIRECTORY_FILE, RECORDS_FILE, EVENTS_FILE)

_PRINCIPALS: list[dict[str, Any]] = [
    {"id": "emp-1000", "name": "Sam Ortiz", "role": "support_agent", "team": "support"},
    {"id": "emp-1001", "name": "Dana Reyes", "role": "support_agent", "team": "support",
     "manager": "emp-1000"},
    {"id": "emp-2001", "name": "Alex Hale", "role": "internal_audit", "team": "internal-audit"},
    {"id": "emp-3000", "name": "Noor Aziz", "role": "trust_safety_investigator",
     "team": "trust-safety"},
    {"id": "emp-3001", "name": "Rae Chen", "role": "trust_safety_investigator",
     "team": "trust-safety", "manager": "emp-3000"},
    {"id": "emp-4001", "name": "Priya Nair", "role": "privacy_officer", "team": "privacy",
     "groups": ["privacy_office", "approvers"]},
    {"id": "emp-4002", "name": "Omar Haddad", "role": "privacy_officer", "team": "privacy",
     "groups": ["privacy_office", "approvers"]},
    {"id": "emp-5001", "name": "Ivy Cole", "role": "security_responder", "team": "security"},
]  # fmt: skip

_SUBJECTS: list[dict[str, Any]] = [
    {"id": "user-1", "handle": "@ordinary", "jurisdiction": "US", "protected": []},
    {"id": "user-42", "handle": "@jane_reports", "jurisdiction": "US",
     "protected": ["journalist"]},
    {"id": "user-43", "handle": "@jane_alt", "jurisdiction": "US", "protected": [],
     "linked": ["user-42"]},
    {"id": "user-77", "handle": "@dana_r", "jurisdiction": "US",
     "protected": ["employee_account"], "employee": "emp-1001"},
]  # fmt: skip

# (id, kind, subject, assignee, opened_by, days ago)
_TICKETS: list[tuple[str, str, str, str, str, int]] = [
    ("T-9001", "support", "user-42", "emp-1001", "subject", 3),
    ("T-9002", "support", "user-1", "emp-1001", "subject", 3),
    ("T-10", "trust_safety", "user-42", "emp-3001", "system", 2),
    ("T-7", "internal_investigation", "user-42", "emp-2001", "emp-2001", 2),
    ("INC-4", "security_incident", "user-1", "emp-5001", "system", 1),
]


@dataclass(frozen=True)
class Example:
    """The three example documents as text, ready to write."""

    files: Mapping[str, str]


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _flow(entry: Mapping[str, Any]) -> str:
    """One entry as a YAML flow mapping on one line, as docs/formats.md writes them."""
    text = yaml.safe_dump(dict(entry), default_flow_style=True, sort_keys=False, width=10_000)
    return "- " + text.strip()


def build(now: datetime) -> Example:
    """The example documents with times in the days before ``now`` (an aware datetime)."""
    day = now.replace(hour=9, minute=0, second=0, microsecond=0)
    if day > now:
        day -= timedelta(days=1)
    principals = [
        {**p, "kind": "employee", "country": "US", "status": "active"} for p in _PRINCIPALS
    ]
    tickets = [
        {"id": tid, "kind": kind, "subject": subject, "assignee": assignee, "status": "open",
         "opened": _time(day - timedelta(days=ago)), "opened_by": by}
        for tid, kind, subject, assignee, by, ago in _TICKETS
    ]  # fmt: skip
    directory = "\n".join(
        [
            "# The README's example organisation (custos example; docs/formats.md).",
            "principals:",
            *(_flow(p) for p in principals),
            "subjects:",
            *(_flow(s) for s in _SUBJECTS),
            "tickets:",
            *(_flow(t) for t in tickets),
            "",
        ]
    )
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    # Documentation addresses (RFC 5737, RFC 3849) and a made-up contact: nobody's data.
    records: list[dict[str, Any]] = [
        {"id": "l-1", "kind": "login", "subject": "user-1", "time": day - timedelta(days=3),
         "ip": "198.51.100.23", "user_agent": firefox},
        {"id": "l-2", "kind": "login", "subject": "user-1", "time": day - timedelta(days=2),
         "ip": "2001:db8:4:1::17"},
        {"id": "l-3", "kind": "login", "subject": "user-42", "time": day - timedelta(days=3),
         "ip": "203.0.113.77", "user_agent": iphone},
        {"id": "l-4", "kind": "login", "subject": "user-42", "time": day - timedelta(days=2),
         "ip": "203.0.113.80"},
        {"id": "l-5", "kind": "login", "subject": "user-43", "time": day - timedelta(days=2),
         "ip": "203.0.113.81"},
        {"id": "p-1", "kind": "location", "subject": "user-42", "time": day - timedelta(days=3),
         "lat": 40.7411, "lon": -73.9897, "accuracy": 25},
        {"id": "c-1", "kind": "contact", "subject": "user-42", "time": day - timedelta(days=3),
         "email": "jane@example.org", "phone": "+1 555 0100"},
    ]  # fmt: skip
    # A tool outside custos: Dana's ordinary support work, then the 2022 pattern — the
    # auditor pulling the journalist's and her second account's IP history at night.
    events: list[dict[str, Any]] = []
    for n, (ago, hour, principal, subject, purpose, ticket) in enumerate(
        [
            (3, 10, "emp-1001", "user-1", "support", "T-9002"),
            (3, 11, "emp-1001", "user-1", "support", "T-9002"),
            (2, 23, "emp-2001", "user-42", "internal_investigation", "T-7"),
            (2, 23, "emp-2001", "user-43", "internal_investigation", "T-7"),
            (1, 22, "emp-2001", "user-42", "internal_investigation", "T-7"),
        ],
        start=1,
    ):
        events.append(
            {"id": f"ev-{n}", "time": day - timedelta(days=ago) + timedelta(hours=hour - 9),
             "principal": principal, "action": "read", "subject": subject,
             "category": "ip_history", "purpose": purpose, "ticket": ticket,
             "decision": "allow", "precision": "precise", "records": 12,
             "source": "admin-console"}
        )  # fmt: skip
    return Example(
        {
            DIRECTORY_FILE: directory,
            RECORDS_FILE: _lines(records),
            EVENTS_FILE: _lines(events),
        }
    )


def _lines(rows: list[dict[str, Any]]) -> str:
    def value(v: Any) -> Any:
        return _time(v) if isinstance(v, datetime) else v

    return "".join(json.dumps({k: value(v) for k, v in row.items()}) + "\n" for row in rows)


def write(folder: Path, now: datetime, *, force: bool = False) -> list[Path]:
    """Write the example files into ``folder`` (created if missing); return their paths.

    Raises :class:`InvalidInput` naming the first file that exists already, unless ``force``,
    before writing anything; or naming a file that cannot be written.
    """
    example = build(now)
    paths = [folder / name for name in example.files]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise InvalidInput(
            f"{existing[0]} exists already; nothing was written",
            hint="use --force to replace the example files, or name another folder",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            path.write_text(example.files[path.name], encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"{folder}: cannot write the example ({exc.strerror})") from None
    return paths
