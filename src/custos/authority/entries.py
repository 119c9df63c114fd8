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

from custos.ledger.entries import (
    AuthorityFactsEntry,
    BreakGlassEntry,
    Entry,
    GrantEntry,
    GrantRevokedEntry,
)
from custos.times import iso

#: Kinds of authority rows an ``authority`` entry may set.
KINDS = ("principal", "subject", "ticket", "account", "token", "session")

#: Entry types that set a grant's facts (the approvals workflow writes them).
GRANT_TYPES = (GrantEntry, BreakGlassEntry)

#: Entry types that end a grant before its time.
GRANT_ENDS = (GrantRevokedEntry,)

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
        return AuthorityFactsEntry(
            kind=self.kind,
            time=iso(self.time or datetime.now(UTC)),
            source=self.source,
            by=dict(self.by) if self.by is not None else None,
            # Plain dicts as they are (record() encodes them at once): a copy of each of a
            # thousand rows cost as much as encoding them.
            rows=(
                self.facts
                if all(type(f) is dict for f in self.facts)
                else tuple(dict(f) for f in self.facts)
            ),
        ).to_json()


@dataclass(frozen=True, slots=True)
class EncodedFacts:
    """The facts of rows of one kind already encoded: per row, in order, the canonical JSON
    (RFC 8785) of what ``Principal.facts`` and friends give for it. For imports of a million
    rows (:mod:`custos.directory.bulk`), whose writer encodes rows it validated itself
    several times faster than a dict per row through the general encoder; it vouches that
    each text is canonical and holds its encoders to
    :func:`custos.ledger.hashing.canonical_json` by test. The entries written are the same
    bytes (but for their salt) as for the same facts given as mappings."""

    rows: Sequence[str]

    def __len__(self) -> int:
        return len(self.rows)


def batches(
    kind: str, facts: Sequence[Mapping[str, Any]], source: str, by: Any
) -> list[AuthorityEntry]:
    """``facts`` of one kind as entries of at most :data:`BATCH` rows each, in order."""
    return [
        AuthorityEntry(kind=kind, facts=tuple(facts[at : at + BATCH]), source=source, by=by)
        for at in range(0, len(facts), BATCH)
    ]


#: The fact a tombstone sets: ``{"id": ..., "removed": true}`` in an ``authority`` entry says
#: the row was removed (a subject or ticket deleted by a feed). The ledger keeps every entry
#: that set it before; the row is deleted after its tombstone is durable, and from then on a
#: row of that id is honoured only when set again by a later entry.
REMOVED = "removed"


def tombstone(key: str) -> dict[str, Any]:
    """The facts of a removed row ``key`` (see :data:`REMOVED`)."""
    return {"id": key, REMOVED: True}


def is_removed(facts: Mapping[str, Any]) -> bool:
    """Whether ``facts`` (as :func:`facts_set` gives them) are a tombstone."""
    return facts.get(REMOVED) is True


#: Facts added to a kind after entries of it were first written, with what an entry that
#: predates them means: a subject ledgered before links existed was linked to nothing. So
#: rows ledgered then still vouch, and a row whose link was deleted still differs from an
#: entry that set one.
LATER_FACTS: dict[str, dict[str, Any]] = {"subject": {"linked": [], "link_group": None}}


def facts_set(entry: Entry) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The facts ``entry`` sets, keyed by ``(kind, id)``: an ``authority`` entry's rows (with
    :data:`LATER_FACTS` filled in where the entry predates them), a grant entry's grant (its
    members, with the grant's ``id``); empty for any other entry. Raises ``ValueError`` for
    an authority entry of an unknown kind or with a row without an id."""
    match entry:
        case AuthorityFactsEntry(kind=kind, rows=rows):
            if kind not in KINDS:
                raise ValueError(f"authority entry of unknown kind {kind!r}")
            if not all(isinstance(f.get("id"), str) for f in rows):
                raise ValueError("authority entry without a list of facts with ids")
            later = LATER_FACTS.get(kind)
            if later:
                return {(kind, str(f["id"])): {**later, **f} for f in rows}
            return {(kind, str(f["id"])): f for f in rows}
        case GrantEntry() | BreakGlassEntry():
            return {("grant", entry.grant): {**entry.to_json(), "id": entry.grant}}
    return {}
