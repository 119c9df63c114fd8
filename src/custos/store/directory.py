"""Tables of the directory: principals, subjects, tickets, and its change counter.

Each row of principals, subjects and tickets carries ``seq``: the directory version that the
write which last added or changed it created (0 for rows stored before revision 0018), so a
reader can copy only what changed since a version it has (see
:meth:`custos.directory.DirectoryStore.write_changes`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class PrincipalRow(Base):
    __tablename__ = "principals"
    __table_args__ = (Index("ix_principals_seq", "seq"),)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(64))
    team: Mapped[str] = mapped_column(String(128))
    manager: Mapped[str | None] = mapped_column(String(128), nullable=True)
    country: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    role_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int] = mapped_column(BigInteger)
    #: The ledger index of the authority entry that set this row's facts (see
    #: custos.authority); None for a row custos never vouched for.
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class SubjectRow(Base):
    __tablename__ = "subjects"
    __table_args__ = (
        Index("ix_subjects_seq", "seq"),
        # Partial in the database (revision 0080: ``WHERE link_group IS NOT NULL``): only
        # linked subjects have a group, and every query of it asks for those. Not declared
        # so here: a dialect's keyword (``sqlite_where``) makes SQLAlchemy import that
        # dialect, and PostgreSQL's costs every command ~20 ms even on SQLite; the schema
        # is the migrations' (Alembic does not compare an index's predicate).
        Index("ix_subjects_link_group", "link_group"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    handle: Mapped[str | None] = mapped_column(String(256), nullable=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    protected: Mapped[list[str]] = mapped_column(JSON, default=list)
    employee: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: Ids of the subjects this one is directly linked to, both sides of each link, sorted
    #: (None or [] for none); ``link_group`` the smallest id of its link group, None when
    #: alone. Authority, like ``protected`` (see custos.directory.DirectoryStore.merge).
    linked: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    link_group: Mapped[str | None] = mapped_column(String(128), nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int] = mapped_column(BigInteger)
    #: The ledger index of the authority entry that set this row's facts (see
    #: custos.authority); None for a row custos never vouched for.
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TicketRow(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_subject", "subject"),
        Index("ix_tickets_assignee", "assignee"),
        Index("ix_tickets_seq", "seq"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(128), ForeignKey("subjects.id"))
    assignee: Mapped[str] = mapped_column(String(128), ForeignKey("principals.id"))
    status: Mapped[str] = mapped_column(String(16))
    opened: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int] = mapped_column(BigInteger)
    #: The ledger index of the authority entry that set this row's facts (see
    #: custos.authority); None for a row custos never vouched for.
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class DirectoryVersionRow(Base):
    """One row whose counter moves on every directory change, so caches know when to reload."""

    __tablename__ = "directory_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class PolicyVersionRow(Base):
    """Every policy pack that became active: its digest and its full text, for history."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    activated: Mapped[datetime] = mapped_column(UTCDateTime)
    files: Mapped[dict[str, str]] = mapped_column(JSON)


class HookDeliveryRow(Base):
    """A ticket webhook's payload taken within its replay window: its signature (as the
    sender sent it) and when it was taken. Shared by every worker of the service, so a
    captured call cannot be replayed to another one; rows older than the window are dropped
    as new ones come."""

    __tablename__ = "hook_deliveries"
    __table_args__ = (Index("ix_hook_deliveries_taken", "taken"),)

    signature: Mapped[str] = mapped_column(String(80), primary_key=True)
    taken: Mapped[float] = mapped_column(Float)
