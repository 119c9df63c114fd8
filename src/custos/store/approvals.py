"""Tables of the approvals part: requests, votes, grants, reviews, its journal and outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class ApprovalRequestRow(Base):
    """A just-in-time request for access that the policies say needs approval.

    ``status`` is ``pending``, ``approved``, ``denied``, ``expired`` or ``withdrawn``; only
    ``pending`` changes. ``lock`` is bumped as the first statement of every change, so that
    concurrent approvers of one request are serialised (row lock on PostgreSQL, the write
    lock on SQLite) and exactly one of them can complete it.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_status", "status", "expires"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(128))
    categories: Mapped[list[str]] = mapped_column(JSON)
    #: What the grant would let the principal do (read, search, export, modify).
    actions: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(32))
    ticket: Mapped[str | None] = mapped_column(String(128), nullable=True)
    precision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    duration_s: Mapped[int] = mapped_column(Integer)
    approvals_needed: Mapped[int] = mapped_column(Integer)
    groups_needed: Mapped[list[str]] = mapped_column(JSON)
    policies: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
    closed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lock: Mapped[int] = mapped_column(Integer, default=0)


class ApprovalVoteRow(Base):
    """One approver's answer to one request (``approve`` or ``deny``), with their reason."""

    __tablename__ = "approval_votes"
    __table_args__ = (
        UniqueConstraint("request_id", "approver", name="uq_approval_votes_request_approver"),
        Index("ix_approval_votes_approver", "approver", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    approver: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(UTCDateTime)


class GrantRow(Base):
    """Time-bound permission for one principal, subject, purpose, precision, categories and
    actions.

    A grant is honoured only once ``logged`` (its ledger entry is durable), from ``starts``
    until ``ends`` or ``revoked``. Break-glass grants carry ``review`` = ``open`` until two
    reviewers close them.
    """

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_principal_ends", "principal", "ends"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    principal: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(128))
    categories: Mapped[list[str]] = mapped_column(JSON)
    #: The actions the approvers approved; any other is not covered.
    actions: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(32))
    ticket: Mapped[str | None] = mapped_column(String(128), nullable=True)
    precision: Mapped[str] = mapped_column(String(16))
    approvals: Mapped[int] = mapped_column(Integer)
    approver_groups: Mapped[list[str]] = mapped_column(JSON)
    approvers: Mapped[list[str]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    starts: Mapped[datetime] = mapped_column(UTCDateTime)
    ends: Mapped[datetime] = mapped_column(UTCDateTime)
    break_glass: Mapped[bool] = mapped_column(Boolean, default=False)
    review: Mapped[str] = mapped_column(String(16), default="none")
    logged: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    end_notified: Mapped[bool] = mapped_column(Boolean, default=False)
    lock: Mapped[int] = mapped_column(Integer, default=0)
    #: The ledger index of the entry that set this grant's facts (custos.authority).
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class GrantReviewRow(Base):
    """A reviewer's closing note on a break-glass grant (two distinct reviewers close it)."""

    __tablename__ = "grant_reviews"
    __table_args__ = (
        UniqueConstraint("grant_id", "reviewer", name="uq_grant_reviews_grant_reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(UTCDateTime)


class ApprovalJournalRow(Base):
    """Ledger entries written in the same transaction as the change they record.

    They are appended to the ledger right after the commit and marked with their index; any
    left unmarked by a crash are appended by the next operation (at least once: a duplicate
    carries the same ``id``). A grant takes effect only once its entry is in the ledger.
    """

    __tablename__ = "approval_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ledger_index: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class NotificationRow(Base):
    """A webhook notification waiting to be delivered (an outbox: never lost, retried)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_due", "status", "next_attempt"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class GrantsVersionRow(Base):
    """A counter bumped by every change to grants, so that caches know when to reload."""

    __tablename__ = "grants_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
