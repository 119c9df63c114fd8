"""The directory's domain objects: who may ask (principals), about whom (subjects), and why
(tickets). Immutable values; the store and the file loader produce them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True, slots=True)
class Subject:
    """A platform account whose data custos guards."""

    id: str
    jurisdiction: str
    handle: str | None = None
    protected: tuple[str, ...] = ()
    employee: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_protected(self) -> bool:
        return bool(self.protected)


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

    @property
    def is_open(self) -> bool:
        return self.status == "open"

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
