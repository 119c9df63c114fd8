"""Tables of detection: access events, alerts, cases (with comments) and suppressions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class AccessEventRow(Base):
    """One access (DESIGN.md, *Access events*); fields the format does not name go to ``extra``."""

    __tablename__ = "access_events"
    __table_args__ = (
        Index("ix_access_events_time", "time"),
        Index("ix_access_events_principal_time", "principal", "time"),
        Index("ix_access_events_subject_time", "subject", "time"),
        Index("ix_access_events_seq", "seq", unique=True),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    principal: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(32))
    ticket: Mapped[str | None] = mapped_column(String(128), nullable=True)
    decision: Mapped[str] = mapped_column(String(24))
    precision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    records: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str | None] = mapped_column(String(128), nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: ``ticket`` (or ``own_ticket``, a ticket the principal opened) when custos's guarded
    #: path let this access through on the ticket it cites (copied from the decision's ledger
    #: entry, never from an imported event); detection takes such an access as explained
    #: that way without looking the ticket up again.
    explained: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: This row's place in the change sequence (:class:`EventSequenceRow`): a number of its
    #: own, taken when it was stored and again whenever its content changed (a release's
    #: count folded in, or it became a folded release), so a reader that has every row up to
    #: number H needs only the rows above H.
    seq: Mapped[int] = mapped_column(BigInteger)
    #: When custos stored this event (for its own decisions, when it decided): an alert's
    #: time-to-alert is counted from its evidence's arrival. Null for rows stored before
    #: migration ``0025_detect_continuous``.
    arrived: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CaseRow(Base):
    """A group of alerts under triage: assigned, commented, closed with a disposition."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(512))
    principal: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    assignee: Mapped[str | None] = mapped_column(String(128), nullable=True)
    disposition: Mapped[str | None] = mapped_column(String(32), nullable=True)
    opened: Mapped[datetime] = mapped_column(UTCDateTime)
    closed: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AlertRow(Base):
    """One alert (DESIGN.md, *Alerts*). ``fingerprint`` makes re-running detection idempotent:
    the same rule, principals, subjects and period update one alert instead of adding one."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_case", "case_id"), Index("ix_alerts_last_seen", "last_seen"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    rule: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    principals: Mapped[list[str]] = mapped_column(JSON)
    subjects: Mapped[list[str]] = mapped_column(JSON)
    events: Mapped[list[str]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    explanation: Mapped[str] = mapped_column(Text)
    #: When the alert was raised (first filed).
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the newest of its evidence events (as first raised) arrived; null when none of
    #: them records its arrival (stored before it was recorded).
    evidence_arrived: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)


class CaseCommentRow(Base):
    __tablename__ = "case_comments"
    __table_args__ = (Index("ix_case_comments_case", "case_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    author: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    text: Mapped[str] = mapped_column(Text)


class SuppressionRow(Base):
    """A pattern (rule + principal, optionally + subject) whose new alerts are filed as
    suppressed until ``until``; made when a case closes as legitimate or false positive."""

    __tablename__ = "suppressions"
    __table_args__ = (Index("ix_suppressions_rule_principal", "rule", "principal"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(String(128), nullable=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerFeedRow(Base):
    """How far into the ledger custos's own decisions have been copied into access events."""

    __tablename__ = "ledger_feed"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(BigInteger)


class EventSequenceRow(Base):
    """The one row (``id`` 1) of the access events' change sequence: the highest number
    handed out (``value``), how many events are stored (``rows``), and a random identity of
    this event store (``store``, made with the row), so that a copy kept elsewhere can tell
    a restored or replaced database from the one it copied."""

    __tablename__ = "event_sequence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    store: Mapped[str] = mapped_column(String(32))


class DetectionLeaseRow(Base):
    """The one row (``id`` 1) saying which worker runs detection (``holder``, until
    ``expires`` unless renewed) and what the last finished run did, for every worker of the
    service to read (see :mod:`custos.detect.continuous`)."""

    __tablename__ = "detect_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: The last run that finished: when it started and ended, how long it took.
    started: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The longest any event it took in had waited for it (seconds from arrival to its end).
    lag: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The change sequence's highest number it took in: what arrived since is pending.
    seen: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Alerts it raised; runs finished so far; runs that failed so far.
    raised: Mapped[int] = mapped_column(Integer, default=0)
    runs: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
