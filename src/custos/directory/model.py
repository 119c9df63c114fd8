"""The directory's domain objects: who may ask (principals), about whom (subjects), and why
(tickets). Immutable values; the store and the file loader produce them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from custos.times import iso


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


@dataclass(frozen=True, slots=True)
class Principal:
    """An employee, contractor or service that may ask custos for data."""

    id: str
    name: str
    kind: str
    role: str
    team: str
    country: str
    status: str
    manager: str | None = None
    groups: tuple[str, ...] = ()
    role_since: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The ledger index of the authority entry that set this principal's facts (None when
    #: not known, e.g. read from a file). See docs/design/authority.md.
    authority: int | None = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def facts(self) -> dict[str, Any]:
        """What of this principal decisions and oversight rest on, as ledgered (JSON values).
        The name and ``extra`` are not authority: no rule reads them."""
        return {
            "id": self.id,
            "kind": self.kind,
            "role": self.role,
            "team": self.team,
            "manager": self.manager,
            "country": self.country,
            "status": self.status,
            "groups": list(self.groups),
            "role_since": _time(self.role_since),
        }


@dataclass(frozen=True, slots=True)
class Subject:
    """A platform account whose data custos guards."""

    id: str
    jurisdiction: str
    handle: str | None = None
    protected: tuple[str, ...] = ()
    employee: str | None = None
    #: Other accounts of the same person (DESIGN.md principle 11): from a file, the ids it
    #: states; once stored, the direct links of both sides (a link stated on either side),
    #: sorted.
    linked: tuple[str, ...] = ()
    #: The smallest id of this account's link group (its connected component), or None when
    #: it is linked to nothing. Set by the store when it merges; a file never states it.
    link_group: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The ledger index of the authority entry that set this subject's facts.
    authority: int | None = field(default=None, compare=False)

    @property
    def is_protected(self) -> bool:
        return bool(self.protected)

    def facts(self) -> dict[str, Any]:
        """What of this subject decisions rest on, as ledgered. Not the handle: it is personal
        data no rule reads, and the ledger keeps entries for good. ``linked`` and
        ``link_group`` are authority: protection flows through links, so deleting one is what
        an insider would try (entries from before links read as ``[]`` and None, see
        :func:`custos.authority.entries.facts_set`)."""
        return {
            "id": self.id,
            "jurisdiction": self.jurisdiction,
            "protected": list(self.protected),
            "employee": self.employee,
            "linked": list(self.linked),
            "link_group": self.link_group,
        }


@dataclass(frozen=True, slots=True)
class Ticket:
    """A unit of work that explains an access: of a kind, about a subject, assigned to someone."""

    id: str
    kind: str
    subject: str
    assignee: str
    status: str
    opened: datetime | None = None
    closed: datetime | None = None
    opened_by: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The ledger index of the authority entry that set this ticket's facts.
    authority: int | None = field(default=None, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def facts(self) -> dict[str, Any]:
        """What of this ticket decisions and detection rest on, as ledgered."""
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "assignee": self.assignee,
            "status": self.status,
            "opened": _time(self.opened),
            "closed": _time(self.closed),
            "opened_by": self.opened_by,
        }

    def covers(self, principal: str, subject: str, purpose: str, at: datetime) -> bool:
        """Whether this ticket is work that explains ``principal`` reaching ``subject`` for
        ``purpose`` at ``at``: open, assigned to them, about that subject, of the purpose's
        kind, and ``at`` within its opened and closed times.

        Explanation-based auditing (docs/design/detect.md) also asks who opened it: one the
        principal opened themselves explains less, since that is how a pretext is made.
        """
        return (
            self.is_open
            and self.assignee == principal
            and self.subject == subject
            and self.kind == purpose
            and (self.opened is None or self.opened <= at)
            and (self.closed is None or at <= self.closed)
        )


@dataclass(frozen=True, slots=True)
class DirectoryDocument:
    """The parsed content of one directory file (or of several, merged)."""

    principals: tuple[Principal, ...] = ()
    subjects: tuple[Subject, ...] = ()
    tickets: tuple[Ticket, ...] = ()


@dataclass(frozen=True, slots=True)
class MergeReport:
    """What a merge changed, per kind: ids added and ids whose values changed."""

    added: dict[str, int]
    changed: dict[str, int]
    unchanged: dict[str, int]

    @property
    def total_changes(self) -> int:
        return sum(self.added.values()) + sum(self.changed.values())
