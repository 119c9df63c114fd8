"""The one thing the SQL front needs of custos: a guarded query.

TEMPORARY mirror of the contract's ``QueryRequest``/``QueryResult`` until branch ``sql-run``
lands ``Custos.query``; then these come from ``custos.access``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class QueryRequest:
    principal: str
    source: str
    sql: str
    purpose: str
    ticket: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class QueryColumn:
    name: str
    category: str | None
    precision: str | None


@dataclass
class QueryResult:
    columns: list[QueryColumn]
    rows: list[tuple[Any, ...]]
    truncated: bool
    decisions: list[Any] = field(default_factory=list)
    release_index: int | None = None
    sql_digest: str = ""


class GuardedQueries(Protocol):
    """Answers one SQL statement for a principal, as ``Custos.query`` does: analysed,
    decided per subject and category, ledgered before any row is returned.

    ``query`` raises ``SqlRejected`` (not one read-only SELECT), ``QueryRefused`` (refused,
    with a ``reason`` that says what to change), ``InvalidInput`` (unknown source, purpose,
    principal), ``SourceUnavailable`` and ``LedgerUnavailable``; it is thread-safe.
    """

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult: ...
