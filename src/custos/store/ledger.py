"""Tables of the ledger: entries, tree nodes, the log's size, checkpoints, cosignatures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class LedgerEntryRow(Base):
    """One log entry: its exact canonical JSON bytes and its leaf hash, at its index."""

    __tablename__ = "ledger_entries"

    #: On SQLite ``INTEGER``, so the index is the row id itself (migration 0014).
    idx: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerNodeRow(Base):
    """A complete perfect subtree's hash, kept for levels 4, 8, 12, … (see ledger/log.py)."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerStateRow(Base):
    """The log's size; its row lock serialises writers across processes."""

    __tablename__ = "ledger_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    #: The compact range of [0, size) — (level byte ‖ 32-byte hash) per perfect subtree — so
    #: that a writer in another process continues from it without recomputing anything.
    frontier: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class LedgerChainHeadRow(Base):
    """The newest entry carrying chain key ``key`` (for custos, a subject id): what the next
    such entry names as its previous one. Written in the append's own transaction."""

    __tablename__ = "ledger_subject_heads"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 - SQLAlchemy's own form

    key: Mapped[str] = mapped_column("subject", Text, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger)


class LedgerCheckpointRow(Base):
    """A signed checkpoint, as the signed note text."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerCosignatureRow(Base):
    """A witness's cosignature of one checkpoint."""

    __tablename__ = "ledger_cosignatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger)
    witness: Mapped[str] = mapped_column(String(256))
    note: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
