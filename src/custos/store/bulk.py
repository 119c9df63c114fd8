"""Bulk accesses: one statement or call of an audit log that reached many people's data at
once (a scan, a count, a ``COPY`` of a table), found by the audit-log importers
(:mod:`custos.detect.importers`). The per-subject access-event format cannot hold them (an
event names one subject), so they are kept here, one row per statement and table, for
detection's ``bulk_read`` rule (docs/design/detect.md, *Audit logs*).

What a row keeps is chosen so that an insider reading the table learns nothing about the
people in it: the table and column names, the kind of scope, the rows count the log gives,
and the statement's *shape* (its text with every literal replaced by ``?`` and comments
dropped) with that shape's SHA-256. Never a literal: a range predicate's bounds, a pattern
on addresses, a hash of the text with its values (a low-entropy value such as an IPv4
address is found again from such a hash by trying them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Index,
    Integer,
    String,
    Text,
    func,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from custos.errors import ValidationFailed
from custos.store.base import Base, UTCDateTime
from custos.store.database import Database

#: What a bulk access covered: every row of the table (``table``), rows chosen by a
#: predicate that names no subject (``range``: a range of times or ids, a pattern, a join),
#: or only aggregates over them (``aggregate``: ``count(*)``, ``sum(…)``, nothing grouped).
SCOPES = ("table", "range", "aggregate")
#: The longest statement shape kept (longer ones are cut; the digest is of the whole).
MAX_SHAPE = 4096
_CHUNK = 500


class BulkAccessRow(Base):
    """One bulk access (see the module docstring). ``principal`` is the mapped principal,
    null when the mapping does not know the log's actor (``actor``, as the log names it:
    the database role, the IAM ARN), so that an unmapped role's bulk read is kept too."""

    __tablename__ = "bulk_accesses"
    __table_args__ = (
        Index("ix_bulk_accesses_time", "time"),
        Index("ix_bulk_accesses_arrived", "arrived"),
    )

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(24))
    #: The table (``schema.table``) or resource (bucket/key, DynamoDB table) reached.
    object: Mapped[str] = mapped_column(String(256))
    category: Mapped[str] = mapped_column(String(32))
    precision: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(16))
    #: Column names the statement reads of the table (``*`` for all), as a JSON list.
    columns: Mapped[list[str]] = mapped_column(JSON)
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: The statement with its literals replaced by ``?`` (cut at MAX_SHAPE), and the
    #: ``sha256:`` of the whole shape; for a cloud call, the call's name.
    shape: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(80))
    command: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    #: The mapping's ``source`` (the system), the log file as named at import and the line
    #: its entry starts on, and the ``sha256:`` of the mapping that attributed it.
    source: Mapped[str] = mapped_column(String(128))
    log_file: Mapped[str] = mapped_column(String(512))
    log_line: Mapped[int] = mapped_column(Integer)
    mapping: Mapped[str] = mapped_column(String(80))
    database: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: When custos stored it (continuous detection counts what arrived since its last run).
    arrived: Mapped[datetime] = mapped_column(UTCDateTime)


#: The fields a bulk access is compared on when it is imported again (``arrived`` and the
#: log file's name are not the access).
_SAME = (
    "time", "principal", "actor", "action", "decision", "object", "category", "precision",
    "scope", "columns", "rows", "digest", "command", "purpose", "source", "log_line",
    "mapping", "database",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BulkStored:
    """What :meth:`BulkAccessStore.append` did: rows ``added`` and ``unchanged``."""

    added: int
    unchanged: int


class BulkAccessStore:
    """The bulk accesses custos knows (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def clashes(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """Which of ``records`` have an id stored already as a different access (one line
        each, naming the id, never a value)."""
        with self.db.session() as session:
            stored = self._stored(session, [r["id"] for r in records])
        return [
            f"bulk access {r['id']!r} is stored already as a different access"
            for r in records
            if r["id"] in stored and not _same(stored[r["id"]], r)
        ]

    def append(self, records: Sequence[dict[str, Any]]) -> BulkStored:
        """Store ``records`` (dicts of :class:`BulkAccessRow`'s columns but ``arrived``) not
        stored yet, all or nothing. An id stored already is skipped when it is the same
        access; raises :class:`ValidationFailed` (storing none) when it is another."""
        unique: dict[str, dict[str, Any]] = {}
        for record in records:
            unique.setdefault(record["id"], record)
        now = datetime.now(UTC)
        with self.db.session() as session:
            stored = self._stored(session, list(unique))
            clashes = [
                f"bulk access {key!r} is stored already as a different access"
                for key, row in stored.items()
                if not _same(row, unique[key])
            ]
            if clashes:
                raise ValidationFailed(
                    f"{len(clashes)} bulk access id(s) already stored differently; "
                    "nothing was stored",
                    clashes,
                )
            rows = [{**r, "arrived": now} for key, r in unique.items() if key not in stored]
            for start in range(0, len(rows), _CHUNK):
                session.execute(insert(BulkAccessRow), rows[start : start + _CHUNK])
        return BulkStored(len(rows), len(records) - len(rows))

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored bulk accesses among ``ids`` (others are ignored), in time order, as
        dicts."""
        with self.db.session() as session:
            found = self._stored(session, [i for i in ids if isinstance(i, str)])
            return [_as_dict(row) for row in sorted(found.values(), key=lambda r: r.time)]

    def search(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The stored bulk accesses, newest first (at most ``limit``), as dicts."""
        with self.db.session() as session:
            found = session.scalars(
                select(BulkAccessRow).order_by(BulkAccessRow.time.desc()).limit(limit)
            )
            return [_as_dict(row) for row in found]

    def arrived_since(self, moment: datetime | None) -> int:
        """How many were stored after ``moment`` (all when None)."""
        query = select(func.count()).select_from(BulkAccessRow)
        if moment is not None:
            query = query.where(BulkAccessRow.arrived > moment)
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    def all_rows(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """Every stored bulk access as a tuple of ``columns``, in time order."""
        chosen = [getattr(BulkAccessRow, name) for name in columns]
        with self.db.session() as session:
            return [tuple(r) for r in session.execute(select(*chosen).order_by(BulkAccessRow.time))]

    @staticmethod
    def _stored(session: Any, ids: Sequence[str]) -> dict[str, BulkAccessRow]:
        found: dict[str, BulkAccessRow] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for row in session.scalars(select(BulkAccessRow).where(BulkAccessRow.id.in_(chunk))):
                found[row.id] = row
        return found


def _as_dict(row: BulkAccessRow) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in BulkAccessRow.__table__.columns}


def _same(row: BulkAccessRow, record: dict[str, Any]) -> bool:
    return all(getattr(row, name) == record.get(name) for name in _SAME)
