"""The guarded read: decide → decrypt in memory what the decision allows → append the
decision and what was released to the ledger, in that order, in one durable batch → return.

No byte leaves before both ledger entries are durable. If they cannot be written the read
fails with :class:`LedgerUnavailable` and returns nothing (fail closed). One batch instead
of two appends halves the durable writes of a read without weakening the order: the
decision's entry precedes the release's, and neither is visible without the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from custos.ledger.entries import ReleaseEntry
from custos.policy import Decision
from custos.times import iso


@dataclass(frozen=True)
class ReadResult:
    """The decision and, when it allowed the read, the records released at its precision."""

    decision: Decision
    records: list[dict[str, Any]] = field(default_factory=list)
    shredded: int = 0
    release_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.decision.to_dict(),
            "records": self.records,
            "released": len(self.records),
            "shredded": self.shredded,
            "release_ledger_index": self.release_index,
        }


def release_entry(
    decision: Decision, event_id: str, count: int, shredded: int, source: str
) -> dict[str, Any]:
    """The ledger entry saying what was released under ``decision`` (logged as ``event_id``):
    counts and precision, never values."""
    request = decision.request
    return ReleaseEntry(
        id=f"{event_id}:release",
        decision_id=event_id,
        time=iso(datetime.now(UTC)),
        principal=request.principal,
        action=request.action,
        subject=request.subject,
        category=request.category,
        purpose=request.purpose,
        decision=decision.outcome,
        precision=decision.precision,
        records=count,
        source=source,
        ticket=request.ticket,
        shredded=shredded,
    ).to_json()
