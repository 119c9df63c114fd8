"""Tables of export: one durable cursor per destination of ``[[export]]``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class ExportCursorRow(Base):
    """How far one destination has acknowledged the two streams it is sent: the ledger (by
    index) and the alerts (by id), and what is in flight.

    ``ledger`` / ``alert`` move only after the destination acknowledged everything below
    them. ``ledger_inflight`` / ``alert_inflight`` are set before a batch is sent and
    cleared with the advance: when a process dies between the two, the next one knows that
    the range up to them may have arrived already and counts what it sends again as
    ``redelivered``. ``holder`` / ``expires`` are a lease, so that one worker at a time
    sends to a destination (several would interleave and repeat). ``ledger_last`` is the
    index of the last ledger event acknowledged (each event names its predecessor).
    ``mac`` seals the positions, marks, ``ledger_last`` and the name with a key the
    database does not hold (:mod:`custos.export.seal`): a row it does not verify stops its
    destination.
    """

    __tablename__ = "export_cursors"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ledger: Mapped[int] = mapped_column(BigInteger, default=0)
    alert: Mapped[int] = mapped_column(BigInteger, default=0)
    ledger_inflight: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alert_inflight: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    redelivered: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)
    last_delivery: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ledger_last: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mac: Mapped[str | None] = mapped_column(String(128), nullable=True)
