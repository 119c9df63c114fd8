"""The one thing the SQL front needs of custos: a guarded query (``Custos.query``)."""

from __future__ import annotations

from typing import Protocol

from custos.access import QueryRequest, QueryResult


class GuardedQueries(Protocol):
    """Answers one SQL statement for a principal, as ``Custos.query`` does: analysed,
    decided per subject and category, ledgered before any row is returned.

    ``query`` raises ``SqlRejected`` (not one read-only SELECT), ``QueryRefused`` (refused,
    with a ``reason`` that says what to change), ``InvalidInput`` (unknown source, purpose,
    principal), ``SourceUnavailable``/``SourceFailed`` and ``LedgerUnavailable``; it is
    thread-safe.
    """

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult: ...
