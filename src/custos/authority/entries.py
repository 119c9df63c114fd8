"""The ledger entries that set authority, and how to read the facts back out of any entry.

An ``authority`` entry sets the facts of up to :data:`BATCH` rows of one kind (a principal,
subject or ticket, each a dict with its ``id``: see ``Principal.facts`` and friends), written
to the ledger, durably, before the rows they describe are written. A grant's facts are set by
the entries the approvals workflow already writes (``grant``, ``break_glass``), which carry
every fact a decision reads from a grant.

Shape (canonical JSON, salted by the ledger like every entry)::

    {"type": "authority", "kind": "subject", "time": "...", "source": "org load: hr.yaml",
     "by": {"principal": "emp-4001", "account": "priya", "authenticated": true} | null,
     "set": [{"id": "user-42", "jurisdiction": "US", "protected": ["journalist"], ...}, ...]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from custos.times import iso

#: Kinds of authority rows an ``authority`` entry may set.
KINDS = ("principal", "subject", "ticket", "account", "token", "session")

#: Entry types that set a grant's facts (the approvals workflow writes them).
GRANT_TYPES = ("grant", "break_glass")

#: Entry types that end a grant before its time.
GRANT_ENDS = ("grant_revoked",)

#: Rows per ``authority`` entry: a load of 10^6 subjects is 1,000 entries, and checking one row
#: reads (and caches) one entry of at most this many facts.
BATCH = 1000


@dataclass(frozen=True, slots=True)
class AuthorityEntry:
    """One ``authority`` entry: the new facts of up to :data:`BATCH` rows of one ``kind``."""

    kind: str
    facts: tuple[Mapping[str, Any], ...]
    source: str
    by: Mapping[str, Any] | None = None
    time: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as the ledger stores it (before its salt)."""
        return {
            "type": "authority",
            "kind": self.kind,
            "time": iso(self.time or datetime.now(UTC)),
            "source": self.source,
            "by": dict(self.by) if self.by is not None else None,
            "set": [dict(f) for f in self.facts],
        }

    @classmethod
    def parse(cls, entry: Mapping[str, Any]) -> AuthorityEntry:
        """An ``authority`` entry read back. Raises ``ValueError`` naming what is wrong."""
        if entry.get("type") != "authority":
            raise ValueError("not an authority entry")
        kind = entry.get("kind")
        facts = entry.get("set")
        if kind not in KINDS:
            raise ValueError(f"authority entry of unknown kind {kind!r}")
        if not isinstance(facts, list) or not all(
            isinstance(f, dict) and isinstance(f.get("id"), str) for f in facts
        ):
            raise ValueError("authority entry without a list of facts with ids")
        return cls(kind=kind, facts=tuple(facts), source=str(entry.get("source", "")))


def batches(
    kind: str, facts: Sequence[Mapping[str, Any]], source: str, by: Any
) -> list[AuthorityEntry]:
    """``facts`` of one kind as entries of at most :data:`BATCH` rows each, in order."""
    return [
        AuthorityEntry(kind=kind, facts=tuple(facts[at : at + BATCH]), source=source, by=by)
        for at in range(0, len(facts), BATCH)
    ]


#: Facts added to a kind after entries of it were first written, with what an entry that
#: predates them means: a subject ledgered before links existed was linked to nothing. So
#: rows ledgered then still vouch, and a row whose link was deleted still differs from an
#: entry that set one.
LATER_FACTS: dict[str, dict[str, Any]] = {"subject": {"linked": [], "link_group": None}}


def facts_set(entry: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The facts ``entry`` sets, keyed by ``(kind, id)``: an ``authority`` entry's rows (with
    :data:`LATER_FACTS` filled in where the entry predates them), a grant entry's grant; empty
    for any other entry. Raises ``ValueError`` for a malformed authority entry."""
    kind = entry.get("type")
    if kind == "authority":
        parsed = AuthorityEntry.parse(entry)
        later = LATER_FACTS.get(parsed.kind)
        if later:
            return {(parsed.kind, str(f["id"])): {**later, **f} for f in parsed.facts}
        return {(parsed.kind, str(f["id"])): f for f in parsed.facts}
    if kind in GRANT_TYPES and isinstance(entry.get("grant"), str):
        return {("grant", entry["grant"]): {**entry, "id": entry["grant"]}}
    return {}
