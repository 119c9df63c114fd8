"""Tables of the reports part: which ledger entries are about which subject."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base


class SubjectEntryRow(Base):
    """Ledger entry ``idx`` is about ``subject`` (an index built from the entries). An entry
    about several subjects has a row for each."""

    __tablename__ = "report_subject_entries"
    __table_args__ = (Index("ix_report_subject_entries_subject", "subject", "idx"),)

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))


class SubjectIndexStateRow(Base):
    """How far into the ledger the subject index has read."""

    __tablename__ = "report_index_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    indexed: Mapped[int] = mapped_column(BigInteger)
