"""Policy test tables: policies tested as data.

A table is a YAML (or JSON) file::

    now: "2026-01-05T12:00:00Z"          # time of every request unless a case sets one
    directory: {principals: [...], subjects: [...], tickets: [...]}   # DESIGN.md format
    residency: {US: [US]}                 # optional, jurisdiction -> allowed countries
    grants:                               # optional approved grants
      - {id: G-1, principal: emp-1, subject: user-1, categories: [ip_history],
         purpose: trust_safety, precision: precise, approvals: 2,
         approver_groups: [privacy_office], starts: "...", ends: "...",
         actions: [read]}                 # optional, what was approved (default: read)
    cases:
      - name: the 2022 case is refused with source protection
        request: {principal: emp-9, subject: user-42, category: ip_history,
                  purpose: internal_investigation, ticket: T-1}
        expect: {decision: deny, reason: source-protection}
      - name: a data scientist may count devices to debug the product
        request: {principal: emp-7, action: aggregate, category: device,
                  purpose: product_debug}        # no subject: counting over many
        expect: {decision: allow}

``expect`` may hold ``decision`` (required), ``precision``, ``reason`` (the leading policy),
``reasons`` (policies that must all be among the reasons), ``approvals`` and ``groups``.
A table runs without a database: its directory and grants are the whole world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from custos.config import DEFAULT_RESIDENCY
from custos.directory import DirectoryDocument, parse_text
from custos.directory.files import parse_document
from custos.errors import (
    InvalidInput,
    UnknownPrincipal,
    UnknownSubject,
    UnknownTicket,
    ValidationFailed,
)
from custos.policy.engine import PolicyEngine
from custos.policy.model import (
    AccessRequest,
    AggregateDecision,
    AggregateRequest,
    Decision,
    Facts,
    GrantFacts,
)
from custos.textfiles import strict_yaml
from custos.timefields import UtcTime
from custos.vocabulary import DEFAULT_VOCABULARY, Action, Outcome, Precision, Vocabulary

Time = UtcTime
#: A category or purpose: a word of the pack's vocabulary, checked in :func:`parse_table`.
Word = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestSpec(_Strict):
    principal: str
    #: Required, except for ``aggregate`` (counting over many subjects names none).
    subject: str | None = None
    category: Word
    purpose: Word
    action: Action | Literal["aggregate"] = "read"
    ticket: str | None = None
    precision: Precision | None = None
    break_glass: bool = False
    time: Time | None = None

    @model_validator(mode="after")
    def _subject_unless_aggregate(self) -> RequestSpec:
        if self.action == "aggregate":
            if self.subject is not None or self.precision is not None or self.break_glass:
                raise ValueError("an aggregate request names no subject, precision or break-glass")
        elif self.subject is None:
            raise ValueError("a request names its subject (only aggregate requests do not)")
        return self


class Expectation(_Strict):
    decision: Outcome
    precision: Precision | None = None
    reason: str | None = None
    reasons: list[str] = []
    approvals: int | None = None
    groups: list[str] | None = None


class CaseSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    request: RequestSpec
    expect: Expectation


class GrantSpec(_Strict):
    id: str
    principal: str
    subject: str
    categories: list[Word]
    purpose: Word
    precision: Precision
    approvals: int = 0
    approver_groups: list[str] = []
    starts: Time
    ends: Time
    break_glass: bool = False
    revoked: bool = False
    actions: Annotated[list[Action], Field(min_length=1)] = ["read"]


class TableSpec(_Strict):
    now: Time
    directory: dict[str, Any] = {}
    residency: dict[str, list[str]] = {}
    grants: list[GrantSpec] = []
    cases: Annotated[list[CaseSpec], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One case's outcome: what was expected, what was decided, and what differed."""

    name: str
    passed: bool
    decision: Decision | AggregateDecision | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class PolicyTable:
    """A parsed table: a small world and the cases to decide in it."""

    source: str
    spec: TableSpec
    world: DirectoryDocument

    def facts(self, request: AccessRequest) -> Facts:
        principals = {p.id: p for p in self.world.principals}
        subjects = {s.id: s for s in self.world.subjects}
        tickets = {t.id: t for t in self.world.tickets}
        if request.principal not in principals:
            raise UnknownPrincipal(f"unknown principal {request.principal!r}")
        if request.subject not in subjects:
            raise UnknownSubject(f"unknown subject {request.subject!r}")
        if request.ticket is not None and request.ticket not in tickets:
            raise UnknownTicket(f"unknown ticket {request.ticket!r}")
        subject = subjects[request.subject]
        residency = {**DEFAULT_RESIDENCY, **{k: tuple(v) for k, v in self.spec.residency.items()}}
        grant = next(
            (
                GrantFacts(
                    id=g.id,
                    principal=g.principal,
                    subject=g.subject,
                    categories=tuple(g.categories),
                    purpose=g.purpose,
                    precision=g.precision,
                    approvals=g.approvals,
                    approver_groups=tuple(g.approver_groups),
                    starts=g.starts,
                    ends=g.ends,
                    break_glass=g.break_glass,
                    revoked=g.revoked,
                    actions=tuple(g.actions),
                )
                for g in self.spec.grants
                if g.principal == request.principal
                and g.subject == request.subject
                and request.category in g.categories
                and g.purpose == request.purpose
            ),
            None,
        )
        return Facts(
            principal=principals[request.principal],
            subject=subject,
            allowed_countries=residency.get(subject.jurisdiction, (subject.jurisdiction,)),
            ticket=tickets.get(request.ticket) if request.ticket else None,
            grant=grant,
        )


def parse_table(text: str, source: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> PolicyTable:
    """Parse a policy test table whose words are ``vocabulary``'s (the pack's it tests).
    Raises :class:`InvalidInput` / :class:`ValidationFailed` naming the file, the case and
    the field."""
    try:
        data = strict_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise InvalidInput(
            f"{source}: not valid YAML{where}" + (f": {problem}" if problem else "")
        ) from None
    except RecursionError:
        raise InvalidInput(f"{source}: nested too deeply") from None
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{source}: a policy test table must be a mapping with `cases`")
    try:
        spec = TableSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{source}: {_where(err['loc'], data)}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        ]
        raise ValidationFailed(f"{source}: invalid policy test table", problems) from None
    problems = _unknown_words(spec, data, source, vocabulary)
    if problems:
        raise ValidationFailed(f"{source}: invalid policy test table", problems)
    world = parse_document(spec.directory, f"{source}: directory", vocabulary)
    return PolicyTable(source, spec, world)


def _unknown_words(
    spec: TableSpec, data: Mapping[str, Any], source: str, vocabulary: Vocabulary
) -> list[str]:
    """Where a case or grant uses a category or purpose ``vocabulary`` does not know."""
    found: list[str] = []
    for i, case in enumerate(spec.cases):
        for name in ("category", "purpose"):
            value = getattr(case.request, name)
            if not vocabulary.knows(name, value):
                where = _where(("cases", i, "request", name), data)
                found.append(f"{source}: {where}: {vocabulary.unknown(name, value)}")
    for i, grant in enumerate(spec.grants):
        checks = [*(("category", c) for c in grant.categories), ("purpose", grant.purpose)]
        found.extend(
            f"{source}: field 'grants.{i}': {message}" for message in vocabulary.problems(checks)
        )
    return found


def _where(loc: Sequence[Any], data: Mapping[str, Any]) -> str:
    parts = [str(p) for p in loc]
    if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
        cases = data.get("cases") or []
        name = (
            cases[loc[1]].get("name")
            if loc[1] < len(cases) and isinstance(cases[loc[1]], Mapping)
            else None
        )
        head = f"cases[{loc[1]}]" + (f" ({name!r})" if name else "")
        return head + ("" if len(parts) == 2 else f" field '{'.'.join(parts[2:])}'")
    return f"field '{'.'.join(parts)}'"


def read_table(path: Path, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> PolicyTable:
    """Read and parse a table file (see :func:`parse_table`). Raises :class:`InvalidInput`
    when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read ({exc})") from None
    return parse_table(text, str(path), vocabulary)


def run_table(table: PolicyTable, engine: PolicyEngine) -> list[CaseResult]:
    """Decide every case of ``table`` with ``engine`` and compare with its expectations."""
    results: list[CaseResult] = []
    principals = {p.id: p for p in table.world.principals}
    for case in table.spec.cases:
        spec = case.request
        if spec.action == "aggregate":
            if spec.principal not in principals:
                message = f"unknown principal {spec.principal!r}"
                results.append(CaseResult(case.name, False, None, (message,)))
                continue
            asked = AggregateRequest(
                principal=spec.principal,
                category=spec.category,
                purpose=spec.purpose,
                dataset="cases",
                ticket=spec.ticket,
                time=spec.time or table.spec.now,
            )
            counted = engine.decide_aggregate([(asked, principals[spec.principal])])[0]
            results.append(CaseResult(case.name, *_compare(case.expect, counted)))
            continue
        assert spec.subject is not None  # the spec's validator requires it
        request = AccessRequest(
            principal=spec.principal,
            subject=spec.subject,
            category=spec.category,
            purpose=spec.purpose,
            action=spec.action,
            ticket=spec.ticket,
            precision=spec.precision,
            break_glass=spec.break_glass,
            time=spec.time or table.spec.now,
        )
        try:
            decision = engine.decide(request, table.facts(request))
        except (UnknownPrincipal, UnknownSubject, UnknownTicket) as exc:
            results.append(CaseResult(case.name, False, None, (exc.message,)))
            continue
        results.append(CaseResult(case.name, *_compare(case.expect, decision)))
    return results


def _compare(
    expect: Expectation, decision: Decision | AggregateDecision
) -> tuple[bool, Decision | AggregateDecision, tuple[str, ...]]:
    problems: list[str] = []
    got = [r.policy for r in decision.reasons]
    if decision.outcome != expect.decision:
        problems.append(f"decision: expected {expect.decision}, got {decision.outcome}")
    if expect.precision is not None and decision.precision != expect.precision:
        problems.append(f"precision: expected {expect.precision}, got {decision.precision}")
    if expect.reason is not None and (not got or got[0] != expect.reason):
        problems.append(f"leading reason: expected {expect.reason}, got {got[0] if got else None}")
    missing = [r for r in expect.reasons if r not in got]
    if missing:
        problems.append(f"reasons: missing {', '.join(missing)} (got {', '.join(got) or 'none'})")
    needed = decision.approvals
    if expect.approvals is not None and (needed is None or needed.approvals != expect.approvals):
        problems.append(
            f"approvals: expected {expect.approvals}, got {needed.approvals if needed else None}"
        )
    if expect.groups is not None and (
        needed is None or sorted(needed.groups) != sorted(expect.groups)
    ):
        problems.append(
            f"groups: expected {sorted(expect.groups)}, "
            f"got {list(needed.groups) if needed else None}"
        )
    return (not problems, decision, tuple(problems))


__all__ = ["CaseResult", "PolicyTable", "parse_table", "parse_text", "read_table", "run_table"]
