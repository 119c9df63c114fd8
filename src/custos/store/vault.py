"""Tables of the vault: wrapped data keys and encrypted records with coarse derivatives."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class VaultKeyRow(Base):
    """A data key for one subject, category and period, wrapped by the key-encryption key.

    ``wrapped`` is NULL once the key is shredded: the records it protected are gone for good.
    """

    __tablename__ = "vault_keys"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(16))
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    kek: Mapped[str] = mapped_column(String(64))
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    shredded: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class VaultRecordRow(Base):
    """One sensitive record: ciphertext of its precise values, and its coarse derivative."""

    __tablename__ = "vault_records"
    __table_args__ = (Index("ix_vault_records_release", "subject", "category", "time", "id"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(300))
    nonce: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    coarse: Mapped[dict[str, Any]] = mapped_column(JSON)
