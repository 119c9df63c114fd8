"""What the guarded path writes to the ledger, in the access-event shape of DESIGN.md.

Every ledger entry written for an access carries the fields of an access event (``id``,
``time``, ``principal``, ``action``, ``subject``, ``category``, ``purpose``, ``ticket``,
``decision``, ``precision``, ``records``, ``source``) plus ``type`` and, for decisions, the
deciding policies, so the ledger alone can rebuild the access log and a subject's report.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from custos.ledger.entries import DecisionEntry
from custos.policy import Decision
from custos.times import iso


def new_event_id() -> str:
    return f"ev-{uuid.uuid4().hex}"


def decision_entry(
    decision: Decision,
    event_id: str,
    source: str,
    role: str | None = None,
    team: str | None = None,
    *,
    settings: str | None = None,
    data_map: str | None = None,
) -> dict[str, Any]:
    """The ledger entry recording ``decision`` (made before anything is released).

    ``role`` and ``team`` are the principal's at the time, so that a subject's transparency
    report can say who looked in terms of function without naming anyone. ``settings`` is the
    digest of the decision settings it was made under (the ``settings`` entry that ledgered
    them has the same digest); ``data_map`` that of the data map a guarded SQL query was
    decided under.
    """
    request = decision.request
    return DecisionEntry(
        id=event_id,
        time=iso(datetime.now(UTC)),
        principal=request.principal,
        role=role,
        team=team,
        action=request.action,
        subject=request.subject,
        category=request.category,
        purpose=request.purpose,
        decision=decision.outcome,
        precision=decision.precision,
        reasons=tuple(r.policy for r in decision.reasons),
        policy_version=decision.policy_version,
        source=source,
        ticket=request.ticket,
        # What was asked for, beside what was decided: replay asks the same.
        requested_precision=request.precision,
        at=iso(request.time) if request.time is not None else None,
        grant=decision.grant,
        # What the guarded path checked as it decided: detection takes this access as
        # explained that way without looking the ticket up again.
        explained=decision.explained,
        review_required=decision.review_required,
        break_glass=request.break_glass,
        approvals_needed=(decision.approvals.to_dict() if decision.approvals is not None else None),
        settings=settings,
        # The ledger entries that set the facts it used: `custos log verify` checks each was
        # still the latest for its row, and replays the decision on them.
        authority=dict(decision.authority) if decision.authority else None,
        data_map=data_map,
        via=request.via,
    ).to_json()
