"""Deciding requests with Cedar, and reading the decision's obligations from the policies.

Cedar answers allow or deny. custos turns that into ``allow`` / ``deny`` /
``approval_required`` with a precision, using only what the pack says:

1. Ask at the request's precision (or, when none was given, the best the pack suggests:
   precise under a precise grant or for categories not marked ``@coarse_by_default``,
   coarse otherwise).
2. If a precision was not demanded and precise was refused, ask again at coarse.
3. If still refused and every forbid that refused it carries ``@remedy("approval")``, ask
   once more with a hypothetical grant meeting those policies' ``@approvals`` and
   ``@approver_groups``; if that would be allowed, the outcome is ``approval_required``.

Any evaluation error is a deny (fail closed): Cedar skips a policy that errors, and a skipped
forbid must never turn into an allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cedarpy

from custos.directory.model import Principal
from custos.policy.model import (
    AccessRequest,
    AggregateDecision,
    AggregateRequest,
    ApprovalsNeeded,
    Decision,
    Facts,
    GrantFacts,
    Reason,
    check_words,
    ticket_explanation,
)
from custos.policy.pack import PolicyInfo, PolicyPack

NS = "Custos::"
_PRINCIPAL = NS + "Principal"
_SUBJECT = NS + "Subject"
_DATA = NS + "Data"
_DATASET = NS + "Dataset"
_JURISDICTION = NS + "Jurisdiction"
_ACTION = NS + "Action"
#: Forbids whose explanation should lead when several refuse a request (most telling first).
_DEFAULT_PRIORITY = 50


def _uid(kind: str, id_: str) -> dict[str, str]:
    return {"type": kind, "id": id_}


def _ref(kind: str, id_: str) -> dict[str, dict[str, str]]:
    return {"__entity": {"type": kind, "id": id_}}


def _epoch(value: datetime) -> int:
    return math.floor(value.timestamp())


def _principal_entity(principal: Principal) -> dict[str, Any]:
    return {
        "uid": _uid(_PRINCIPAL, principal.id),
        "attrs": {
            "kind": principal.kind,
            "role": principal.role,
            "team": principal.team,
            "country": principal.country,
            "status": principal.status,
            "groups": list(principal.groups),
        },
        "parents": [],
    }


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


class _Fields(dict[str, str]):
    """Placeholders for explanations; an unknown placeholder is left as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(slots=True)
class _Asked:
    """One Cedar evaluation of a request at a given precision, with its entities."""

    precision: str
    request: dict[str, Any]
    entities: list[dict[str, Any]]
    result: Any = None


class PolicyEngine:
    """Decides :class:`AccessRequest` s against a loaded :class:`PolicyPack`."""

    def __init__(self, pack: PolicyPack, *, validate_requests: bool = False) -> None:
        """``validate_requests`` re-checks every request and entity against the schema.

        The policies are validated against the schema when the pack loads, and the requests
        and entities are built here in one fixed shape (tests check that shape against the
        schema), so per-request validation is off by default: it costs about 15 % of a
        decision and can only fail on a bug in this module.
        """
        self.pack = pack
        self._schema = pack.schema if validate_requests else None
        self._priority = {
            pid: int(info.annotations.get("priority", _DEFAULT_PRIORITY))
            for pid, info in pack.policies.items()
        }

    # -- public --------------------------------------------------------------------------

    def decide(self, request: AccessRequest, facts: Facts) -> Decision:
        """Decide one request given its facts. Never raises for a policy outcome."""
        return self.decide_many([(request, facts)])[0]

    def decide_many(self, items: Sequence[tuple[AccessRequest, Facts]]) -> list[Decision]:
        """Decide many requests with as few Cedar calls as possible (at most three batches).

        Raises :class:`InvalidInput`, deciding nothing, when a request's category or purpose
        is not a word of the pack's vocabulary."""
        check_words((request for request, _ in items), self.pack.vocabulary)
        first = [self._ask(req, facts, self._first_precision(req, facts)) for req, facts in items]
        self._evaluate(first)
        decisions: list[Decision | None] = [None] * len(items)
        retry: list[tuple[int, _Asked]] = []
        for i, ((req, facts), asked) in enumerate(zip(items, first, strict=True)):
            if self._allowed(asked):
                decisions[i] = self._allow(req, facts, asked)
            elif req.precision is None and asked.precision == "precise":
                retry.append((i, self._ask(req, facts, "coarse")))
        self._evaluate([asked for _, asked in retry])
        final: dict[int, _Asked] = {i: first[i] for i in range(len(items)) if decisions[i] is None}
        for i, asked in retry:
            req, facts = items[i]
            if self._allowed(asked):
                decisions[i] = self._allow(req, facts, asked)
                del final[i]
            else:
                final[i] = asked
        # Which refusals could an approval lift?
        hypothetical: list[tuple[int, _Asked, ApprovalsNeeded, list[str]]] = []
        for i, asked in final.items():
            req, facts = items[i]
            forbids = self._determining(asked)
            if not asked.result.diagnostics.errors and forbids:
                infos = [self.pack.policies[p] for p in forbids if p in self.pack.policies]
                if infos and all(info.remedy == "approval" for info in infos):
                    needed = ApprovalsNeeded(
                        approvals=max(info.approvals for info in infos),
                        groups=tuple(sorted({g for info in infos for g in info.approver_groups})),
                    )
                    probe = self._ask(req, facts, asked.precision, hypothetical=needed)
                    hypothetical.append((i, probe, needed, forbids))
        self._evaluate([probe for _, probe, _, _ in hypothetical])
        for i, probe, needed, forbids in hypothetical:
            if self._allowed(probe):
                req, facts = items[i]
                decisions[i] = self._approval_required(req, facts, final[i], needed, forbids)
                del final[i]
        for i, asked in final.items():
            req, facts = items[i]
            decisions[i] = self._deny(req, facts, asked)
        return [d for d in decisions if d is not None]

    def decide_aggregate(
        self, items: Sequence[tuple[AggregateRequest, Principal]]
    ) -> list[AggregateDecision]:
        """Decide aggregate requests (each with its principal's facts) in one Cedar call.

        No subject, ticket or grant takes part: a ``Dataset`` resource with the category.
        Allowed or denied, never ``approval_required`` (no grant covers counting). Never
        raises for a policy outcome; an evaluation error is a deny (fail closed).
        """
        batch = [self._ask_aggregate(req, principal) for req, principal in items]
        self._evaluate(batch)
        out: list[AggregateDecision] = []
        for (req, principal), asked in zip(items, batch, strict=True):
            fields = _Fields(
                principal=principal.id,
                role=principal.role.replace("_", " "),
                status=principal.status,
                country=principal.country,
                category=req.category.replace("_", " "),
                purpose=req.purpose.replace("_", " "),
                action=req.action,
            )
            errors = tuple(str(e) for e in asked.result.diagnostics.errors)
            if self._allowed(asked):
                permits = sorted(self._policy_ids(asked), key=self._order)
                reasons = tuple(self._reason(pid, fields) for pid in permits)
                because = reasons[0].explanation if reasons else "a policy permits it"
                out.append(
                    AggregateDecision(
                        request=req,
                        outcome="allow",
                        reasons=reasons,
                        explanation=f"Allowed in aggregate: {because}.",
                        policy_version=self.pack.digest,
                    )
                )
                continue
            if errors:
                reasons = (Reason("evaluation-error", "forbid", "a policy could not be evaluated"),)
            elif forbids := self._determining(asked):
                reasons = tuple(self._reason(pid, fields) for pid in forbids)
            else:
                reasons = (
                    Reason(
                        "default-deny",
                        "forbid",
                        f"no policy lets {_article(fields['role'])} count "
                        f"{fields['category']} for {fields['purpose']}",
                    ),
                )
            out.append(
                AggregateDecision(
                    request=req,
                    outcome="deny",
                    reasons=reasons,
                    explanation=f"Denied: {reasons[0].explanation}.",
                    policy_version=self.pack.digest,
                    errors=errors,
                )
            )
        return out

    # -- building Cedar requests --------------------------------------------------------

    def _ask_aggregate(self, req: AggregateRequest, principal: Principal) -> _Asked:
        # The dataset's id names source and category, so that in a batch two sources'
        # datasets of one category are never one entity.
        data_id = f"{req.dataset}/{req.category}"
        entities: list[dict[str, Any]] = [
            _principal_entity(principal),
            {"uid": _uid(_DATASET, data_id), "attrs": {"category": req.category}, "parents": []},
        ]
        context: dict[str, Any] = {
            "purpose": req.purpose,
            "precision": "coarse",
            "now": _epoch(req.at()),
            "break_glass": False,
        }
        request = {
            "principal": _uid(_PRINCIPAL, principal.id),
            "action": _uid(_ACTION, req.action),
            "resource": _uid(_DATASET, data_id),
            "context": context,
        }
        return _Asked("coarse", request, entities)

    def _first_precision(self, req: AccessRequest, facts: Facts) -> str:
        if req.precision is not None:
            return req.precision
        if facts.grant is not None:
            return facts.grant.precision  # as approved: policy grant-scope refuses more
        return "coarse" if req.category in self.pack.coarse_by_default else "precise"

    def _ask(
        self,
        req: AccessRequest,
        facts: Facts,
        precision: str,
        *,
        hypothetical: ApprovalsNeeded | None = None,
    ) -> _Asked:
        principal, subject = facts.principal, facts.subject
        # A linked account is seen as its whole group: every member's protection, and the
        # group's jurisdictions as one entity whose allowed countries are those every member's
        # allow (the caller's ``allowed_countries``). Its id names them all, so that in a
        # batch it is never confused with a lone member's jurisdiction.
        jurisdiction = "+".join(facts.jurisdictions)
        subject_attrs: dict[str, Any] = {
            "jurisdiction": _ref(_JURISDICTION, jurisdiction),
            "protected": list(facts.protected),
        }
        employee = subject.employee or next((s.employee for s in facts.linked if s.employee), None)
        if employee:
            subject_attrs["employee"] = _ref(_PRINCIPAL, employee)
        data_id = f"{subject.id}/{req.category}"
        entities: list[dict[str, Any]] = [
            _principal_entity(principal),
            {
                "uid": _uid(_JURISDICTION, jurisdiction),
                "attrs": {"allowed_countries": list(facts.allowed_countries)},
                "parents": [],
            },
            {"uid": _uid(_SUBJECT, subject.id), "attrs": subject_attrs, "parents": []},
            {
                "uid": _uid(_DATA, data_id),
                "attrs": {"subject": _ref(_SUBJECT, subject.id), "category": req.category},
                "parents": [],
            },
        ]
        now = req.at()
        context: dict[str, Any] = {
            "purpose": req.purpose,
            "precision": precision,
            "now": _epoch(now),
            "break_glass": bool(req.break_glass or (facts.grant and facts.grant.break_glass)),
        }
        ticket = facts.ticket
        if ticket is not None:
            context["ticket"] = {
                "id": ticket.id,
                "kind": ticket.kind,
                "subject": _ref(_SUBJECT, ticket.subject),
                "assignee": _ref(_PRINCIPAL, ticket.assignee),
                "status": ticket.status,
                "opened_by": ticket.opened_by or "",
            }
        grant = facts.grant
        if hypothetical is not None:
            grant = GrantFacts(
                id="hypothetical",
                principal=principal.id,
                subject=subject.id,
                categories=(req.category,),
                purpose=req.purpose,
                precision=precision,
                approvals=hypothetical.approvals,
                approver_groups=hypothetical.groups,
                starts=now,
                ends=now + timedelta(days=366),  # not replace(year=…): no 29 February next year
                actions=(req.action,),
            )
        if grant is not None:
            context["grant"] = {
                "id": grant.id,
                "principal": _ref(_PRINCIPAL, grant.principal),
                "subject": _ref(_SUBJECT, grant.subject),
                "categories": list(grant.categories),
                "actions": [_ref(_ACTION, a) for a in grant.actions],
                "purpose": grant.purpose,
                "precision": grant.precision,
                "approvals": grant.approvals,
                "approver_groups": list(grant.approver_groups),
                "break_glass": grant.break_glass,
                "starts": _epoch(grant.starts),
                "ends": _epoch(grant.ends),
                "revoked": grant.revoked,
            }
        request = {
            "principal": _uid(_PRINCIPAL, principal.id),
            "action": _uid(_ACTION, req.action),
            "resource": _uid(_DATA, data_id),
            "context": context,
        }
        return _Asked(precision, request, entities)

    def _evaluate(self, batch: list[_Asked]) -> None:
        if not batch:
            return
        if len(batch) == 1:
            one = batch[0]
            one.result = cedarpy.is_authorized(
                one.request, self.pack.policy_set, one.entities, self._schema
            )
            return
        # One Cedar call for the batch. Entities shared by several requests (a principal,
        # a subject) are the same facts, so one copy serves all; per-request facts (ticket,
        # grant) travel in each request's own context.
        entities: dict[tuple[str, str], dict[str, Any]] = {}
        for asked in batch:
            for entity in asked.entities:
                uid = entity["uid"]
                entities[(uid["type"], uid["id"])] = entity
        results = cedarpy.is_authorized_batch(
            [asked.request for asked in batch],
            self.pack.policy_set,
            list(entities.values()),
            self._schema,
        )
        for asked, result in zip(batch, results, strict=True):
            asked.result = result

    # -- reading results ----------------------------------------------------------------

    @staticmethod
    def _allowed(asked: _Asked) -> bool:
        result = asked.result
        return bool(result.allowed) and not result.diagnostics.errors

    def _policy_ids(self, asked: _Asked) -> list[str]:
        by_reason = asked.result.diagnostics.id_annotations_by_reason
        return [
            by_reason.get(r) or self.pack.by_cedar_id.get(r, r)
            for r in asked.result.diagnostics.reasons
        ]

    def _determining(self, asked: _Asked) -> list[str]:
        forbids = [
            pid
            for pid in self._policy_ids(asked)
            if self.pack.policies.get(pid) is None or self.pack.policies[pid].effect == "forbid"
        ]
        return sorted(forbids, key=self._order)

    def _order(self, pid: str) -> tuple[int, str]:
        # Cedar reports determining policies as a set; a fixed order keeps decisions
        # reproducible (the ledger records them) and puts the most telling reason first.
        return (self._priority.get(pid, _DEFAULT_PRIORITY), pid)

    def _fields(self, req: AccessRequest, facts: Facts, precision: str | None) -> _Fields:
        return _Fields(
            principal=facts.principal.id,
            role=facts.principal.role.replace("_", " "),
            status=facts.principal.status,
            country=facts.principal.country,
            subject=facts.subject.id,
            protected=", ".join(p.replace("_", " ") for p in facts.protected),
            jurisdiction=" and ".join(facts.jurisdictions),
            category=req.category.replace("_", " "),
            purpose=req.purpose.replace("_", " "),
            action=req.action,
            ticket=req.ticket or "",
            precision=precision or "",
        )

    def _reason(self, pid: str, fields: _Fields) -> Reason:
        info: PolicyInfo | None = self.pack.policies.get(pid)
        if info is None:
            return Reason(pid, "forbid", pid)
        return Reason(pid, info.effect, info.explanation.format_map(fields))

    def _allow(self, req: AccessRequest, facts: Facts, asked: _Asked) -> Decision:
        fields = self._fields(req, facts, asked.precision)
        permits = sorted(self._policy_ids(asked), key=self._order)
        reasons = tuple(self._reason(pid, fields) for pid in permits)
        review = any(
            self.pack.policies[r.policy].review_required
            for r in reasons
            if r.policy in self.pack.policies
        )
        because = reasons[0].explanation if reasons else "a policy permits it"
        if facts.grant is not None:
            because += f", under grant {facts.grant.id}"
        elif req.ticket:
            because += f", explained by ticket {req.ticket}"
        if review:
            because += "; this access must be reviewed"
        return Decision(
            request=req,
            outcome="allow",
            precision=asked.precision,
            reasons=reasons,
            explanation=f"Allowed at {asked.precision} precision: {because}{_linked(facts)}.",
            policy_version=self.pack.digest,
            review_required=review,
            grant=facts.grant.id if facts.grant else None,
            explained=ticket_explanation(req, facts),
        )

    def _approval_required(
        self,
        req: AccessRequest,
        facts: Facts,
        asked: _Asked,
        needed: ApprovalsNeeded,
        forbids: list[str],
    ) -> Decision:
        fields = self._fields(req, facts, asked.precision)
        reasons = tuple(self._reason(pid, fields) for pid in forbids)
        who = f"{needed.approvals} approver{'s' if needed.approvals != 1 else ''}"
        if needed.groups:
            who += " including " + " and ".join(g.replace("_", " ") for g in needed.groups)
        return Decision(
            request=req,
            outcome="approval_required",
            precision=asked.precision,
            reasons=reasons,
            explanation=f"Approval required ({who}): {reasons[0].explanation}{_linked(facts)}.",
            policy_version=self.pack.digest,
            approvals=needed,
        )

    def _deny(self, req: AccessRequest, facts: Facts, asked: _Asked) -> Decision:
        fields = self._fields(req, facts, asked.precision)
        errors = tuple(str(e) for e in asked.result.diagnostics.errors)
        if errors:
            return Decision(
                request=req,
                outcome="deny",
                precision=None,
                reasons=(Reason("evaluation-error", "forbid", "a policy could not be evaluated"),),
                explanation="Denied: a policy could not be evaluated, so custos fails closed.",
                policy_version=self.pack.digest,
                errors=errors,
            )
        forbids = self._determining(asked)
        if not forbids:
            reason = Reason(
                "default-deny",
                "forbid",
                f"no policy lets {_article(fields['role'])} {req.action} {fields['category']} "
                f"for {fields['purpose']}",
            )
            reasons: tuple[Reason, ...] = (reason,)
        else:
            reasons = tuple(self._reason(pid, fields) for pid in forbids)
        return Decision(
            request=req,
            outcome="deny",
            precision=None,
            reasons=reasons,
            explanation=f"Denied: {reasons[0].explanation}{_linked(facts)}.",
            policy_version=self.pack.digest,
        )


#: Whose account each protected flag makes one, for "linked to a journalist's account".
_OWNERS = {
    "journalist": "a journalist's",
    "public_official": "a public official's",
    "activist": "an activist's",
    "minor": "a minor's",
    "employee_account": "an employee's",
}


def _linked(facts: Facts) -> str:
    """``; user-43 is linked to a journalist's account`` when the subject's protection comes
    (in part) from its linked accounts, else nothing. The linked account is not named: who
    owns which accounts is itself what the requester should not learn from a refusal."""
    gained = [f for f in facts.protected if f not in facts.subject.protected]
    if not gained:
        return ""
    owners = " and ".join(_OWNERS.get(f, f"a {f.replace('_', ' ')}'s") for f in gained)
    return f"; {facts.subject.id} is linked to {owners} account"
