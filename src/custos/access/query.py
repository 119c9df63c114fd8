"""Guarded SQL: one read-only SELECT on a source of the data map, decided, run, logged, and
only then returned (``Custos.query``).

1. The data map (``sources.yaml`` in the home) is loaded and, when it is not the map last
   ledgered (it changed, back to an earlier map included), ledgered (a ``data_map`` entry)
   before anything rests on it; every decision names the digest.
2. The SELECT is analysed against its source's map (:func:`custos.sql.analyze.analyze`):
   anything but one understood SELECT is :class:`SqlRejected`, a shape custos will not run
   is :class:`QueryRefused`; either is logged (a ``sql_refused`` entry: who, the refusal's
   words, a digest of the text) before it is answered.
3. An individual query (it pins its subjects) is decided per pinned subject and category in
   one policy batch: ``read`` for every category whose values reach the output, ``search``
   at precise level for every category used outside it. An aggregate query (it pins none) is
   decided once per category with the ``aggregate`` action and no subject. Any refusal
   refuses the whole query, after the refusals are logged.
4. The SQL that runs is rewritten from the analysis (coarse forms where a category is allowed
   coarse only), run read-only with a statement timeout and a row cap. An aggregate's every
   group must hold at least ``[sql] k`` subjects (the ``custos_k`` column the rewrite adds,
   removed before rows are returned).
5. The decisions and one ``sql_release`` entry (who, why, which subjects, the categories at
   their precision, row count, a SHA-256 of the SQL that ran, the map's digest: never a
   value) are appended in one durable batch. Only then are the rows returned: when the batch
   cannot be written, nothing leaves (:class:`LedgerUnavailable`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import decimal
import hashlib
import ipaddress
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from custos.access.decisions import AUTHORITY_MISMATCH
from custos.access.journal import new_event_id
from custos.errors import AuthorityMismatch, CustosError, InvalidInput, QueryRefused, SqlRejected
from custos.ledger.entries import (
    AggregateDecisionEntry,
    DataMapEntry,
    SqlRefusedEntry,
    SqlReleaseEntry,
)
from custos.policy import AccessRequest, AggregateDecision, AggregateRequest, Decision, Reason
from custos.sql.datamap import MAP_FILE
from custos.times import iso

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from custos.access.system import Custos
    from custos.config import Settings
    from custos.sql.analyze import Analysis
    from custos.sql.datamap import DataMap, SourceMap

#: The home file naming the digest of the data map last ledgered (the one in force). A map is
#: ledgered whenever the one in force changes, back to an earlier one included: a weakened
#: map put back after it was "fixed" is a change detection must see again. Lost, the file
#: only makes custos ledger the map again: an extra entry, never a missing one.
MAP_MARKER = "datamap.ledgered"
#: The extra last column of an aggregate's rewritten SQL: distinct subjects per group.
K_COLUMN = "custos_k"

#: What an individual query whose output holds no category is decided as reading: the rows
#: of a pinned subject are that subject's account data.
ACCOUNT_CATEGORY = "profile"

#: Defaults of ``[sql]`` in config.toml.
DEFAULT_K = 10
DEFAULT_ROW_CAP = 10_000
DEFAULT_TIMEOUT = 30.0
#: How many analysed queries a desk keeps (least recently used first out).
ANALYSES_KEPT = 512


@dataclass(frozen=True, slots=True)
class SqlSettings:
    """``[sql]`` of config.toml: ``k`` (least subjects per group of an aggregate),
    ``row_cap`` (most rows a query returns) and ``statement_timeout`` (seconds)."""

    k: int = DEFAULT_K
    row_cap: int = DEFAULT_ROW_CAP
    statement_timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlSettings:
        """Raises :class:`ConfigurationError` for a value that is not positive."""
        return cls(
            k=settings.whole("sql", "k", DEFAULT_K),
            row_cap=settings.whole("sql", "row_cap", DEFAULT_ROW_CAP),
            statement_timeout=settings.number("sql", "statement_timeout", DEFAULT_TIMEOUT),
        )


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One SELECT asked of a source of the data map, for a purpose (and the ticket that
    explains an individual-level query)."""

    principal: str
    source: str
    sql: str
    purpose: str
    ticket: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class QueryColumn:
    """An output column: the category its values come from (None when plain or when they
    mix several) and the precision that category left at."""

    name: str
    category: str | None
    precision: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "precision": self.precision}


def json_value(value: Any) -> Any:
    """A database value as JSON: numbers, strings, booleans and null as they are; times in
    ISO 8601; decimals, UUIDs and addresses as text; bytes in base64; lists element-wise."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(
        value,
        decimal.Decimal
        | uuid.UUID
        | dt.timedelta
        | ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface,
    ):
        return str(value)
    return str(value)


@dataclass
class QueryResult:
    """What a guarded query returned, after its decisions and release were logged.

    ``decisions``: the individual decisions (per subject and category); ``aggregates``: the
    aggregate decisions (per category). ``release_index`` is the ledger index of the
    ``sql_release`` entry; ``sql_digest`` the SHA-256 (hex) of the SQL that ran.
    """

    columns: list[QueryColumn]
    rows: list[tuple[Any, ...]]
    truncated: bool
    decisions: list[Decision]
    release_index: int | None
    sql_digest: str
    aggregates: list[AggregateDecision] = field(default_factory=list)
    source: str = ""
    map_digest: str = ""
    #: True for a query that pinned no subject (its rows are counts over groups of ≥ k).
    aggregate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: every value through :func:`json_value`."""
        return {
            "source": self.source,
            "aggregate": self.aggregate,
            "columns": [c.to_dict() for c in self.columns],
            "rows": [[json_value(v) for v in row] for row in self.rows],
            "row_count": len(self.rows),
            "truncated": self.truncated,
            "decisions": [d.to_dict() for d in self.decisions],
            "aggregate_decisions": [d.to_dict() for d in self.aggregates],
            "release_ledger_index": self.release_index,
            "sql_sha256": self.sql_digest,
            "data_map": self.map_digest,
        }


class DataMapHolder:
    """The home's data map, re-read when ``sources.yaml`` or the active policy pack (whose
    words the map's categories must be) changes, and ledgered (a ``data_map`` entry) before
    it is first used. Thread-safe."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, str] | None = None
        self._map: DataMap | None = None

    def _stat(self, pack: str) -> tuple[int, int, int, str]:
        try:
            found = (self.home / MAP_FILE).stat()
        except OSError:
            return (0, 0, 0, pack)
        return (found.st_ino, found.st_size, found.st_mtime_ns, pack)

    def current(self, system: Custos) -> DataMap:
        """The map in force, ledgered. Raises :class:`DataMapError` (the file is invalid:
        nothing of it is used), :class:`InvalidInput` (unreadable) and
        :class:`LedgerUnavailable` (the map is not used until it is ledgered)."""
        with self._lock:
            pack = system.policy_pack
            stamp = self._stat(pack.digest)
            if self._map is not None and stamp == self._stamp:
                return self._map
            from custos.sql.datamap import load_data_map

            data_map = load_data_map(self.home / MAP_FILE, words=pack.vocabulary)
            self._ledger(system, data_map)
            self._map, self._stamp = data_map, stamp
            return data_map

    def _ledger(self, system: Custos, data_map: DataMap) -> None:
        from custos.sql.datamap import to_json

        marker = self.home / MAP_MARKER
        try:
            known = marker.read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            known = []
        # (Older homes' marker lists every digest ever ledgered, oldest first: its last line
        # is the map last ledgered too.)
        if known and known[-1] == data_map.digest:
            return
        # In the ledger first: a map that cannot be logged is not used.
        system.ledger.append(
            DataMapEntry(
                time=iso(dt.datetime.now(dt.UTC)), digest=data_map.digest, body=to_json(data_map)
            ).to_json()
        )
        with contextlib.suppress(OSError):
            partial = marker.with_name(f"{marker.name}.{os.getpid()}")
            partial.write_text(data_map.digest + "\n", encoding="ascii")
            partial.replace(marker)


def _least_precise(precisions: Sequence[str | None]) -> str:
    return "coarse" if any(p != "precise" for p in precisions) else "precise"


def _refusal(reasons: Sequence[tuple[str, str]]) -> QueryRefused:
    """The error of a query some decision refused: its first refusal's words, and what to do."""
    outcome, explanation = reasons[0]
    hint = (
        "ask for approval (`custos approvals request`), then query again"
        if outcome == "approval_required"
        else "query only what your role and purpose allow, on a ticket that explains it"
    )
    more = f" (and {len(reasons) - 1} more refusal(s), all logged)" if len(reasons) > 1 else ""
    return QueryRefused(explanation.rstrip(".") + more, hint=hint)


class QueryDesk:
    """Runs guarded queries for one :class:`Custos` (see the module docstring)."""

    def __init__(self, system: Custos) -> None:
        self.system = system
        self.maps = DataMapHolder(system.settings.home)
        self.settings = SqlSettings.from_settings(system.settings)
        # Analyses by (map digest, source, text): an analysis depends on nothing else, and
        # tools (consoles, dashboards, the wire front's clients) repeat their queries.
        self._analyses: OrderedDict[tuple[str, str, str], Analysis] = OrderedDict()
        self._analyses_lock = threading.Lock()

    def _analyze(self, sql: str, source: SourceMap, digest: str) -> Analysis:
        from custos.sql.analyze import analyze  # the analyzer pulls in sqlglot: on first use

        key = (digest, source.name, sql)
        with self._analyses_lock:
            known = self._analyses.get(key)
            if known is not None:
                self._analyses.move_to_end(key)
                return known
        analysis = analyze(sql, source)
        with self._analyses_lock:
            self._analyses[key] = analysis
            while len(self._analyses) > ANALYSES_KEPT:
                self._analyses.popitem(last=False)
        return analysis

    def query(self, request: QueryRequest, *, source_tag: str = "sql") -> QueryResult:
        """See :meth:`Custos.query`."""
        system = self.system
        problems = system.policy_pack.vocabulary.problems([("purpose", request.purpose)])
        if problems:
            raise InvalidInput("invalid query: " + "; ".join(problems))
        data_map = self.maps.current(system)
        source = data_map.source(request.source)
        # UnknownPrincipal before any parsing; a row the ledger does not vouch for is decided
        # (refused for authority-mismatch, and logged) below, not raised here.
        with contextlib.suppress(AuthorityMismatch):
            system.directory.principal(request.principal)
        try:
            analysis = self._analyze(request.sql, source, data_map.digest)
        except (SqlRejected, QueryRefused) as exc:
            # Logged before the refusal is answered: probing the analyzer leaves a trace.
            system.ledger.append(
                SqlRefusedEntry(
                    time=iso(dt.datetime.now(dt.UTC)),
                    principal=request.principal,
                    dataset=source.name,
                    purpose=request.purpose,
                    ticket=request.ticket,
                    code=exc.code,
                    reason=exc.message,
                    sql_sha256=hashlib.sha256(request.sql.encode()).hexdigest(),
                    data_map=data_map.digest,
                    source=source_tag,
                ).to_json()
            )
            raise
        now = dt.datetime.now(dt.UTC)
        if analysis.subjects:
            return self._individual(request, analysis, data_map, source_tag, now)
        return self._aggregate(request, analysis, data_map, source_tag, now)

    # -- individual queries ------------------------------------------------------------

    def _individual(
        self,
        request: QueryRequest,
        analysis: Analysis,
        data_map: DataMap,
        source_tag: str,
        now: dt.datetime,
    ) -> QueryResult:
        system = self.system
        subjects = sorted(analysis.subjects)
        # Rows pinned to a person are about that person even when every column read is
        # plain (when did the journalist log in?): such a query is decided as reading the
        # subject's account data, so it never goes undecided.
        reads = sorted(analysis.reads) or [ACCOUNT_CATEGORY]
        asked = [
            AccessRequest(
                request.principal,
                subject,
                category,
                request.purpose,
                action="read",
                ticket=request.ticket,
                reason=request.reason,
                time=now,
            )
            for subject in subjects
            for category in reads
        ] + [
            AccessRequest(
                request.principal,
                subject,
                category,
                request.purpose,
                action="search",
                ticket=request.ticket,
                precision="precise",
                reason=request.reason,
                time=now,
            )
            for subject in subjects
            for category in sorted(analysis.searches)
        ]
        for subject in subjects:  # UnknownSubject before anything is decided or logged
            system.directory.subject(subject)
        decisions = system.decisions.decide_many(asked)
        ids = [new_event_id() for _ in decisions]
        entries = system._decision_entries(decisions, ids, source_tag, data_map=data_map.digest)
        refused = [(d.outcome, d.explanation) for d in decisions if not d.allowed]
        if refused:
            self._append(entries, decisions, ids)
            raise _refusal(refused)
        precision: dict[str, str] = {}
        for category in {*reads, *analysis.searches}:
            chosen = [
                d.precision
                for d in decisions
                if d.request.category == category and d.request.action == "read"
            ]
            precision[category] = _least_precise(chosen) if chosen else "precise"
        sql = analysis.rewrite(precision)
        digest = hashlib.sha256(sql.encode()).hexdigest()
        try:
            from custos.sql.sources import run_query  # psycopg and DuckDB: on first use

            fetched = run_query(
                analysis.source,
                system.settings.home,
                sql,
                row_cap=self.settings.row_cap,
                timeout=self.settings.statement_timeout,
            )
        except CustosError:
            self._append(entries, decisions, ids)  # decided, nothing released
            raise
        columns = [
            QueryColumn(
                out.name,
                next(iter(out.categories)) if len(out.categories) == 1 else None,
                _least_precise([precision[c] for c in out.categories]) if out.categories else None,
            )
            for out in analysis.outputs
        ]
        release = SqlReleaseEntry(
            id=f"sql-{uuid.uuid4().hex}",
            time=iso(dt.datetime.now(dt.UTC)),
            principal=request.principal,
            dataset=analysis.source.name,
            purpose=request.purpose,
            ticket=request.ticket,
            aggregate=False,
            categories=dict(sorted(precision.items())),
            rows=len(fetched.rows),
            truncated=fetched.truncated,
            sql_sha256=digest,
            data_map=data_map.digest,
            decisions=tuple(ids),
            source=source_tag,
            # In the report of every subject it pinned, each one's chain linked to it.
            **_about(subjects),
        )
        receipts = self._append([*entries, release.to_json()], decisions, ids)
        logged = [
            dataclasses.replace(d, event_id=i, ledger_index=r.index)
            for d, i, r in zip(decisions, ids, receipts, strict=False)
        ]
        return QueryResult(
            columns=columns,
            rows=fetched.rows,
            truncated=fetched.truncated,
            decisions=logged,
            release_index=receipts[-1].index,
            sql_digest=digest,
            source=analysis.source.name,
            map_digest=data_map.digest,
        )

    # -- aggregate queries -------------------------------------------------------------

    def _aggregate(
        self,
        request: QueryRequest,
        analysis: Analysis,
        data_map: DataMap,
        source_tag: str,
        now: dt.datetime,
    ) -> QueryResult:
        system = self.system
        if not analysis.aggregate:
            raise QueryRefused(
                "the query pins no subject and is not an aggregate",
                hint="pin subjects with WHERE <subject column> = '…' or IN (…), or count",
            )
        categories = sorted(analysis.reads | analysis.searches)
        asked = [
            AggregateRequest(
                request.principal,
                category,
                request.purpose,
                analysis.source.name,
                ticket=request.ticket,
                time=now,
            )
            for category in categories
        ]
        decisions = self._decide_aggregate(asked)
        ids = [new_event_id() for _ in decisions]
        entries = self._aggregate_entries(decisions, ids, source_tag, data_map.digest)
        refused = [(d.outcome, d.explanation) for d in decisions if not d.allowed]
        pairs = list(zip(decisions, ids, strict=True))
        if refused:
            self._append(entries, [], [], pairs)
            raise _refusal(refused)
        sql = analysis.rewrite(dict.fromkeys(categories, "coarse"))
        digest = hashlib.sha256(sql.encode()).hexdigest()
        k = self.settings.k
        try:
            from custos.sql.sources import run_query  # psycopg and DuckDB: on first use

            fetched = run_query(
                analysis.source,
                system.settings.home,
                sql,
                row_cap=self.settings.row_cap,
                timeout=self.settings.statement_timeout,
            )
            if not fetched.columns or fetched.columns[-1] != K_COLUMN:
                raise QueryRefused("the rewritten query lost its group-size column")
            small = sum(1 for row in fetched.rows if not (row[-1] or 0) >= k)
            if small:
                raise QueryRefused(
                    f"{small} group(s) hold fewer than {k} subjects ([sql] k)",
                    hint="group by fewer or coarser keys (each group must hold at least "
                    f"{k} distinct subjects), or widen the WHERE on plain columns",
                )
        except CustosError:
            self._append(entries, [], [], pairs)  # decided, nothing released
            raise
        release = SqlReleaseEntry(
            id=f"sql-{uuid.uuid4().hex}",
            time=iso(dt.datetime.now(dt.UTC)),
            principal=request.principal,
            dataset=analysis.source.name,
            purpose=request.purpose,
            ticket=request.ticket,
            aggregate=True,
            categories=dict.fromkeys(categories, "count"),
            rows=len(fetched.rows),
            truncated=fetched.truncated,
            sql_sha256=digest,
            data_map=data_map.digest,
            decisions=tuple(ids),
            source=source_tag,
            k=k,
        )
        receipts = self._append([*entries, release.to_json()], [], [], pairs)
        logged = [
            dataclasses.replace(d, event_id=i, ledger_index=r.index)
            for d, i, r in zip(decisions, ids, receipts, strict=False)
        ]
        columns = [
            QueryColumn(out.name, next(iter(out.categories)), "count")
            if len(out.categories) == 1
            else QueryColumn(out.name, None, "count" if out.categories else None)
            for out in analysis.outputs
        ]
        return QueryResult(
            columns=columns,
            rows=[row[:-1] for row in fetched.rows],
            truncated=fetched.truncated,
            decisions=[],
            release_index=receipts[-1].index,
            sql_digest=digest,
            aggregates=logged,
            source=analysis.source.name,
            map_digest=data_map.digest,
            aggregate=True,
        )

    def _decide_aggregate(self, asked: Sequence[AggregateRequest]) -> list[AggregateDecision]:
        """Decide ``asked`` (one principal) in one Cedar call; a principal row the ledger
        does not vouch for is a refusal (``authority-mismatch``), never decided on."""
        system = self.system
        if not asked:
            return []
        engine = system.policy
        try:
            principal = system.directory.principal(asked[0].principal)
        except AuthorityMismatch as exc:
            reason = Reason("authority-mismatch", "forbid", exc.message)
            return [
                AggregateDecision(
                    a, "deny", (reason,), f"Denied: {exc.message}.", engine.pack.digest
                )
                for a in asked
            ]
        authority = {"principal": principal.authority} if principal.authority is not None else None
        return [
            dataclasses.replace(d, authority=authority)
            for d in engine.decide_aggregate([(a, principal) for a in asked])
        ]

    def _aggregate_entries(
        self,
        decisions: Sequence[AggregateDecision],
        ids: Sequence[str],
        source_tag: str,
        map_digest: str,
    ) -> list[dict[str, Any]]:
        system = self.system
        role = team = None
        if decisions:
            with contextlib.suppress(AuthorityMismatch):
                person = system.directory.principal(decisions[0].request.principal)
                role, team = person.role, person.team
        return [
            AggregateDecisionEntry(
                id=event_id,
                time=iso(dt.datetime.now(dt.UTC)),
                principal=d.request.principal,
                role=role,
                team=team,
                action=d.request.action,
                dataset=d.request.dataset,
                category=d.request.category,
                purpose=d.request.purpose,
                decision=d.outcome,
                reasons=tuple(r.policy for r in d.reasons),
                policy_version=d.policy_version,
                source=source_tag,
                ticket=d.request.ticket,
                at=iso(d.request.time) if d.request.time is not None else None,
                settings=system._settings_digest,
                data_map=map_digest,
                authority=dict(d.authority) if d.authority else None,
            ).to_json()
            for d, event_id in zip(decisions, ids, strict=True)
        ]

    def _append(
        self,
        entries: list[dict[str, Any]],
        decisions: Sequence[Decision],
        ids: Sequence[str],
        aggregates: Sequence[tuple[AggregateDecision, str]] = (),
    ) -> list[Any]:
        """One durable batch (raises :class:`LedgerUnavailable`: then nothing may leave);
        then the authority-mismatch alerts of ``decisions`` and ``aggregates``."""
        receipts = self.system.ledger.append_many(entries)
        self.system._alert_authority(zip(decisions, ids, strict=True))
        self._alert_aggregates(aggregates)
        return receipts

    def _alert_aggregates(self, logged: Sequence[tuple[AggregateDecision, str]]) -> None:
        from custos.detect import Finding

        """A critical alert for an aggregate refused for ``authority-mismatch`` (a
        principal's row changed outside custos), as for any other decision. The refusal
        stands even if the alert cannot be filed."""
        refused = [
            (d, event_id)
            for d, event_id in logged
            if d.reasons and d.reasons[0].policy == AUTHORITY_MISMATCH
        ]
        if not refused:
            return
        now = dt.datetime.now(dt.UTC)
        findings = [
            Finding(
                rule="authority_mismatch",
                severity="critical",
                principals=(d.request.principal,),
                subjects=(),
                events=(event_id,),
                first_seen=now,
                last_seen=now,
                explanation=(
                    f"custos refused {d.request.principal} a count of "
                    f"{d.request.category} in {d.request.dataset}: {d.reasons[0].explanation}. "
                    "Someone changed the database outside custos; `custos log verify` names "
                    "every such row."
                ),
                key=f"{d.request.principal}|aggregate|{now.date().isoformat()}",
            )
            for d, event_id in refused
        ]
        try:
            self.system.casebook.record(findings)
        except CustosError:
            log.warning("could not file an authority-mismatch alert; the count was refused")


def _about(subjects: Sequence[str]) -> dict[str, Any]:
    """``subjects`` and ``subjects_reported`` of a release about ``subjects``."""
    from custos.reports import about_subjects

    found = about_subjects(subjects)
    return {"subjects": tuple(found.get("subjects", ())), "subjects_reported": bool(found)}
