"""The authority state re-derived from the ledger alone, and what it says about the tables and
the decisions.

An :class:`AuthorityProjection` follows the ledger in index order (a ledger ``Follower``, like
the subject index and the event feed): every entry that sets facts (``authority``, ``grant``,
``break_glass``) makes them the latest for their row, ``grant_revoked`` ends a grant, and every
decision that names the entries it used (``authority``) is checked against the state at that
point: each named entry must still have been the latest for its row, and a grant must not have
been revoked. A decision that used a superseded entry is how a row put back to an older genuine
state (a grant before its revocation, a subject before its protected flag) shows, even after the
row was restored.

:meth:`AuthorityProjection.compare` then holds the tables to the state: a row whose facts or
entry differ from the ledger's latest, a row the ledger never set, and a row the ledger set that
the table lacks are each named by table and id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from custos.authority.entries import facts_set
from custos.errors import shown_id
from custos.ledger.entries import (
    BrokenEntry,
    CaseAssignedEntry,
    CaseClosedEntry,
    DecisionEntry,
    Entry,
    GrantRevokedEntry,
)

#: The table that holds each kind of authority row.
TABLES = {
    "principal": "principals",
    "subject": "subjects",
    "ticket": "tickets",
    "grant": "grants",
    "account": "accounts",
    "token": "api_tokens",
    "session": "sessions",
}

#: Entry types whose facts count: a broken one of these is a finding.
_SETS_FACTS = ("authority", "grant", "break_glass")


@dataclass(frozen=True, slots=True)
class AuthorityFinding:
    """One thing the ledger does not vouch for: ``index`` is the ledger index it was found at
    (a decision), or None for a table row; ``table`` and ``key`` name the row."""

    index: int | None
    table: str
    key: str
    problem: str

    def __str__(self) -> str:
        return self.problem


@dataclass
class AuthorityProjection:
    """The latest ledgered facts of every authority row, built by :meth:`follow`."""

    latest: dict[tuple[str, str], tuple[int, Mapping[str, Any]]] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)
    findings: list[AuthorityFinding] = field(default_factory=list)
    followed: int = 0
    decisions_checked: int = 0
    _position: int = 0
    #: Triage as the ledger tells it, per case id: ``assignee``, ``closed``,
    #: ``disposition``, ``suppress_days`` (from ``case_assigned`` and ``case_closed``).
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def position(self) -> int:
        """The next index this projection needs (it lives in memory: it starts at 0)."""
        return self._position

    def persist(self, end: int) -> None:
        """Nothing to write: the projection is rebuilt on each run."""
        self._position = max(self._position, end)

    def follow(self, index: int, entry: Entry) -> None:
        """Take in the entry at ``index`` (entries must come in index order)."""
        self.followed += 1
        self._position = index + 1
        match entry:
            case DecisionEntry():
                self._check_decision(index, entry)
            case CaseAssignedEntry(case=case_id, assignee=assignee):
                case = self.cases.setdefault(case_id, {"assignee": None, "closed": False})
                case["assignee"] = assignee
            case CaseClosedEntry(case=case_id):
                case = self.cases.setdefault(case_id, {"assignee": None, "closed": False})
                case.update(
                    closed=True,
                    disposition=entry.disposition,
                    suppress_days=entry.suppress_days,
                )
            case GrantRevokedEntry(grant=grant):
                self.revoked.setdefault(grant, index)
            case BrokenEntry(problem=problem) if entry.type in _SETS_FACTS:
                self._malformed(index, problem)
            case _:
                try:
                    sets = facts_set(entry)
                except ValueError as exc:
                    self._malformed(index, str(exc))
                    return
                for key, facts in sets.items():
                    self.latest[key] = (index, facts)

    def _malformed(self, index: int, problem: str) -> None:
        self.findings.append(
            AuthorityFinding(index, "ledger_entries", str(index), f"entry {index}: {problem}")
        )

    def _check_decision(self, index: int, entry: DecisionEntry) -> None:
        used = entry.authority
        if used is None:
            return
        self.decisions_checked += 1
        named: list[tuple[str, Any, Any]] = []
        for kind, at in used.items():
            if kind == "linked" and isinstance(at, dict):
                # The other accounts of the subject's link group, each by id: subjects too.
                named.extend(("subject", name, set_by) for name, set_by in at.items())
            else:
                member: dict[str, str | None] = {
                    "principal": entry.principal,
                    "subject": entry.subject,
                    "ticket": entry.ticket,
                    "grant": entry.grant,
                }
                named.append((kind, member.get(kind), at))
        for kind, name, at in named:
            if not isinstance(name, str) or not isinstance(at, int):
                self.findings.append(
                    AuthorityFinding(
                        index,
                        "ledger_entries",
                        str(index),
                        f"decision at index {index} names {kind} authority it cannot have used",
                    )
                )
                continue
            latest = self.latest.get((kind, name))
            shown = f"{kind} {shown_id(name)}"
            if latest is None or latest[0] != at:
                now = "no entry" if latest is None else f"entry {latest[0]}"
                self.findings.append(
                    AuthorityFinding(
                        index,
                        TABLES[kind],
                        name,
                        f"decision at index {index} used {shown} as set by entry {at}, but the "
                        f"ledger's latest for it was {now}: the row was not what custos had set",
                    )
                )
            elif kind == "grant" and name in self.revoked and self.revoked[name] < index:
                self.findings.append(
                    AuthorityFinding(
                        index,
                        "grants",
                        name,
                        f"decision at index {index} used {shown}, revoked at entry "
                        f"{self.revoked[name]}",
                    )
                )

    def compare(
        self, kind: str, rows: Iterable[tuple[str, int | None, Mapping[str, Any], bool]]
    ) -> list[AuthorityFinding]:
        """Hold the table of ``kind`` to the ledger: ``rows`` gives each stored row's id, its
        ``auth_idx``, its facts and (for grants) whether it is revoked. Returns the rows that
        differ, in the order given, then the ledgered rows the table lacks."""
        table = TABLES[kind]
        found: list[AuthorityFinding] = []
        seen: set[str] = set()
        for key, at, facts, revoked in rows:
            seen.add(key)
            shown = f"{table} row {shown_id(key)}"
            latest = self.latest.get((kind, key))
            if latest is None:
                problem = f"{shown} was never set through custos (no ledger entry sets it)"
            elif latest[1].get("removed") is True:
                problem = f"{shown} was removed by ledger entry {latest[0]} and is back"
            elif at != latest[0]:
                problem = f"{shown} names entry {at}; the ledger's latest for it is {latest[0]}"
            elif any(latest[1].get(name) != value for name, value in facts.items()):
                problem = f"{shown} differs from what ledger entry {at} set for it"
            elif kind == "grant" and revoked != (key in self.revoked):
                problem = (
                    f"{shown} says {'revoked' if revoked else 'not revoked'}; "
                    f"the ledger says {'revoked' if key in self.revoked else 'not revoked'}"
                )
            else:
                continue
            found.append(AuthorityFinding(None, table, key, problem))
        for (other, key), (_, latest_facts) in self.latest.items():
            # A row whose latest entry removed it (``org import --prune``) belongs nowhere.
            if other == kind and key not in seen and latest_facts.get("removed") is not True:
                found.append(
                    AuthorityFinding(
                        None,
                        table,
                        key,
                        f"{table} row {shown_id(key)} is set in the ledger but missing from "
                        "the table",
                    )
                )
        return found

    def compare_cases(
        self,
        cases: Iterable[tuple[str, str, str | None, str | None]],
        suppressions: Iterable[tuple[int, str | None]],
    ) -> list[AuthorityFinding]:
        """Hold triage to the ledger: ``cases`` gives each case's id, status, assignee and
        disposition; ``suppressions`` each suppression's row id and the case it came from.
        A case closed, reopened, reassigned or given another disposition by hand, and an
        alert suppression no ledgered closing made, are named. (Closing a case is what
        silences alerts, so it is authority over oversight.)"""
        found: list[AuthorityFinding] = []
        for key, status, assignee, disposition in cases:
            told = self.cases.get(key, {"assignee": None, "closed": False})
            if (status == "closed") != told["closed"]:
                problem = f"cases row {key} is {status}; the ledger has " + (
                    "a case_closed entry for it" if told["closed"] else "no case_closed entry"
                )
            elif told["closed"] and disposition != told.get("disposition"):
                problem = f"cases row {key} has another disposition than its case_closed entry"
            elif assignee != told["assignee"]:
                problem = f"cases row {key} has another assignee than the ledger's latest"
            else:
                continue
            found.append(AuthorityFinding(None, "cases", key, problem))
        for row, case in suppressions:
            told = self.cases.get(case or "", {})
            if not told.get("closed") or not told.get("suppress_days"):
                found.append(
                    AuthorityFinding(
                        None,
                        "suppressions",
                        str(row),
                        f"suppressions row {row} was made by no ledgered case closing",
                    )
                )
        return found


__all__ = ["TABLES", "AuthorityFinding", "AuthorityProjection"]
