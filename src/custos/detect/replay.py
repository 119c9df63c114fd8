"""Policy replay: imported accesses judged by the same rules as custos's own.

Accesses that reached data by other paths (events imported with their ``source``, not custos's
own decisions) were never decided by the policies. Replay decides each one that its tool let
through (``decision`` ``allow``) with the active policy pack and the directory **as it stood
at the event's time**, and reports what custos would have refused (rule ``policy_replay``).

*As it stood.* The directory's history is the ledger's: every ``authority`` entry (kinds
``principal``, ``subject``, ``ticket``) sets a row's facts from its ``time`` on; the state at
``t`` is, per row, the latest entry at or before ``t`` (an as-of join). An event older than
every entry of a row is judged on that row's earliest entry, and its finding says so. Grants
count when their entry (``grant``, ``break_glass``) was written at or before ``t``, ``t`` lies
within their ``starts`` and ``ends``, no ``grant_revoked`` came before ``t``, and they cover
the event (principal, subject, category, action, purpose, ticket if they name one). A ticket's
status at ``t`` comes from its ``opened`` and ``closed`` times when it has them (with
``retro_minutes`` of grace, as detection's explanations), else from the entry's status.

*Cost.* Most events share their shape. Each event's facts are reduced to a key — the
principal's facts, the subject's facts, the cited ticket's facts, the grant's, the category,
purpose, action and break-glass — in which ids appear only as how they relate to the request
(the ticket's assignee *is* the principal or is someone else; the subject's owning employee
*is* the principal or not). Every distinct key is decided once (Cedar batches) and kept, with
the pack's digest, between runs. This is exact for packs that compare entities only with
each other and read their attributes, as the default pack does; a pack that names a
particular principal, subject or data entity, or reads a ticket's ``opened_by`` or an id from
the context, is keyed with the real ids instead (exact, and slower).

*Incremental.* With a home's mirror, replay keeps its tables beside the mirror's: the
directory history, the ledger position it has followed, the highest event number it has
replayed, the decided keys and the findings per event. A run replays only the events above
that number, and follows only the ledger entries beyond its position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from custos.detect.config import DetectConfig
from custos.detect.engine import Finding
from custos.detect.loading import literal, working_folder
from custos.directory import Principal, Subject, Ticket
from custos.policy import AccessRequest, Decision, Facts, GrantFacts, PolicyEngine

#: The rule id of replay's findings.
RULE = "policy_replay"
#: Format of replay's own tables: another value makes it start again.
FORMAT = "1"
#: Placeholders standing for the request's own entities in a canonical key.
PRINCIPAL, SUBJECT, TICKET = "{principal}", "{subject}", "{ticket}"
#: Any other principal or subject a fact names (never an entity of the request).
_OTHER = "(another)"
#: Every canonical request is asked at this instant; grants are pre-checked at the event's.
_NOW = datetime(2000, 1, 1, tzinfo=UTC)
#: Cedar requests per batch.
_BATCH = 2000
#: What makes a pack need exact keys (see the module docstring).
_NAMES_IDS = re.compile(r'Custos::(Principal|Subject|Data)::"|opened_by|\.id\b')

_HISTORY = {
    "rp_principal": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        "kind": "VARCHAR",
        "role": "VARCHAR",
        "team": "VARCHAR",
        "country": "VARCHAR",
        "status": "VARCHAR",
        "groups": "VARCHAR",
    },
    "rp_subject": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        "jurisdiction": "VARCHAR",
        "protected": "VARCHAR",
        "employee": "VARCHAR",
    },
    "rp_ticket": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        "kind": "VARCHAR",
        "subject": "VARCHAR",
        "assignee": "VARCHAR",
        "status": "VARCHAR",
        "opened": "TIMESTAMP",
        "closed": "TIMESTAMP",
    },
    "rp_grant": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        "principal": "VARCHAR",
        "subject": "VARCHAR",
        "categories": "VARCHAR[]",
        "actions": "VARCHAR[]",
        "purpose": "VARCHAR",
        "ticket": "VARCHAR",
        "precision": "VARCHAR",
        "approvals": "INTEGER",
        "approver_groups": "VARCHAR",
        "starts": "TIMESTAMP",
        "ends": "TIMESTAMP",
        "break_glass": "BOOLEAN",
    },
    "rp_revoked": {"id": "VARCHAR", "idx": "BIGINT", "time": "TIMESTAMP"},
    "rp_own": {"id": "VARCHAR"},
}
#: The key's columns (see the module docstring), all text so that a key compares with ``=``.
_KEY = (
    "pid",
    "p_kind",
    "p_role",
    "p_team",
    "p_country",
    "p_status",
    "p_groups",
    "sid",
    "s_jur",
    "s_protected",
    "s_employee",
    "tid",
    "t_kind",
    "t_status",
    "t_subject",
    "t_assignee",
    "g_precision",
    "g_approvals",
    "g_groups",
    "g_break_glass",
    "category",
    "purpose",
    "action",
    "bg",
)
_RESULT = {"outcome": "VARCHAR", "precision": "VARCHAR", "policy": "VARCHAR", "why": "VARCHAR"}
_FOUND = {
    "id": "VARCHAR",
    "time": "TIMESTAMP",
    "principal": "VARCHAR",
    "subject": "VARCHAR",
    "ticket": "VARCHAR",
    "category": "VARCHAR",
    "source": "VARCHAR",
    "kind": "VARCHAR",
    "policy": "VARCHAR",
    "why": "VARCHAR",
    "protected": "BOOLEAN",
    "early": "BOOLEAN",
}


@dataclass(frozen=True, slots=True)
class ReplayPolicy:
    """What replay decides with: the active pack's engine and the residency settings."""

    engine: PolicyEngine
    allowed_countries: Callable[[str], tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """What one replay did: events replayed, distinct keys among them, keys newly decided
    (Cedar asked), ledger entries followed, and findings per event recorded."""

    events: int
    keys: int
    decided: int
    followed: int
    found: int


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _joined(values: Any) -> str:
    return "|".join(sorted(str(v) for v in values or ()))


def _history_rows(index: int, entry: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The history rows ``entry`` (at ``index``) adds, by table."""
    kind = entry.get("type")
    at = entry.get("time")
    if kind in ("decision", "release") and isinstance(entry.get("id"), str):
        return [("rp_own", {"id": entry["id"]})]
    if kind == "grant_revoked" and isinstance(entry.get("grant"), str):
        return [("rp_revoked", {"id": entry["grant"], "idx": index, "time": at})]
    if kind in ("grant", "break_glass") and isinstance(entry.get("grant"), str):
        return [
            (
                "rp_grant",
                {
                    "id": entry["grant"],
                    "idx": index,
                    "time": at,
                    "principal": entry.get("principal"),
                    "subject": entry.get("subject"),
                    "categories": list(entry.get("categories") or ()),
                    "actions": list(entry.get("actions") or ("read",)),
                    "purpose": entry.get("purpose"),
                    "ticket": entry.get("ticket"),
                    "precision": entry.get("precision"),
                    "approvals": int(entry.get("approvals") or 0),
                    "approver_groups": _joined(entry.get("approver_groups")),
                    "starts": entry.get("starts"),
                    "ends": entry.get("ends"),
                    "break_glass": bool(entry.get("break_glass") or kind == "break_glass"),
                },
            )
        ]
    if kind != "authority" or not isinstance(entry.get("set"), list):
        return []
    rows: list[tuple[str, dict[str, Any]]] = []
    for facts in entry["set"]:
        if not isinstance(facts, dict) or not isinstance(facts.get("id"), str):
            continue
        base = {"id": facts["id"], "idx": index, "time": at}
        if entry.get("kind") == "principal":
            rows.append(
                (
                    "rp_principal",
                    {
                        **base,
                        **{k: _text(facts.get(k)) for k in ("kind", "role", "team", "country")},
                        "status": _text(facts.get("status")),
                        "groups": _joined(facts.get("groups")),
                    },
                )
            )
        elif entry.get("kind") == "subject":
            rows.append(
                (
                    "rp_subject",
                    {
                        **base,
                        "jurisdiction": _text(facts.get("jurisdiction")),
                        "protected": _joined(facts.get("protected")),
                        "employee": _text(facts.get("employee")),
                    },
                )
            )
        elif entry.get("kind") == "ticket":
            rows.append(
                (
                    "rp_ticket",
                    {
                        **base,
                        **{k: _text(facts.get(k)) for k in ("kind", "subject", "assignee")},
                        "status": _text(facts.get("status")),
                        "opened": facts.get("opened"),
                        "closed": facts.get("closed"),
                    },
                )
            )
    return rows


class PolicyReplay:
    """Replay's tables in ``schema`` of ``con`` (``main``, or the mirror's catalog to keep
    them between runs) and the runs over them."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        policy: ReplayPolicy,
        config: DetectConfig,
        schema: str = "main",
    ) -> None:
        self.con = con
        self.policy = policy
        self.config = config
        self.schema = schema
        pack = policy.engine.pack
        # The policies' own text, without comments and the schema.
        source = "\n".join(
            re.sub(r"//[^\n]*", "", text)
            for name, text in sorted(pack.files.items())
            if name.endswith(".cedar")
        )
        #: Keys with placeholders for the request's own entities (see the module docstring).
        self.canonical = not _NAMES_IDS.search(source)
        #: Principal attributes no policy reads are left out of the key (fewer keys).
        self._unread = {
            column
            for column, name in (("p_team", "team"), ("p_groups", "groups"), ("p_kind", "kind"))
            if self.canonical and not re.search(rf"\b{name}\b", source)
        }
        self.digest = pack.digest
        self._make()

    def _t(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def _make(self) -> None:
        con = self.con
        con.execute(f"CREATE TABLE IF NOT EXISTS {self._t('rp_meta')} (key VARCHAR, value VARCHAR)")
        meta = self.meta()
        fresh = meta.get("format") != FORMAT
        tables = {
            **_HISTORY,
            "rp_keys": {"digest": "VARCHAR", **dict.fromkeys(_KEY, "VARCHAR"), **_RESULT},
            "rp_found": _FOUND,
        }
        for name, columns in tables.items():
            if fresh:
                con.execute(f"DROP TABLE IF EXISTS {self._t(name)}")
            body = ", ".join(f'"{c}" {t}' for c, t in columns.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS {self._t(name)} ({body})")
        if fresh:
            self.set_meta(format=FORMAT, ledger="0", seq="0", store="")

    def meta(self) -> dict[str, str]:
        """Replay's marks: ``format``, ``ledger`` (entries followed), ``seq`` (highest event
        number replayed) and ``store`` (the event store's identity)."""
        rows = self.con.execute(f"SELECT key, value FROM {self._t('rp_meta')}").fetchall()
        return {str(k): str(v) for k, v in rows}

    def set_meta(self, **values: str) -> None:
        """Set some of the marks (see :meth:`meta`)."""
        for key, value in values.items():
            self.con.execute(f"DELETE FROM {self._t('rp_meta')} WHERE key = ?", [key])
            self.con.execute(f"INSERT INTO {self._t('rp_meta')} VALUES (?, ?)", [key, value])

    def reset(self) -> None:
        """Forget everything kept (another event store or ledger): history, keys, findings
        and marks."""
        for name in (*_HISTORY, "rp_keys", "rp_found"):
            self.con.execute(f"DELETE FROM {self._t(name)}")
        self.set_meta(ledger="0", seq="0")

    # -- the directory's history ----------------------------------------------------------

    def follow(self, entries: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
        """Take in ledger entries (in index order, from where :meth:`meta`'s ``ledger``
        says); returns how many were read. The position is saved with the rows."""
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _HISTORY}
        read, last = 0, -1
        for index, entry in entries:
            read += 1
            last = index
            for table, row in _history_rows(index, entry):
                rows[table].append(row)
        self._insert(rows)
        if read:
            self.set_meta(ledger=str(last + 1))
        return read

    def history_from_directory(self) -> None:
        """When no ledger tells the history (an evaluation, a lake): the ``principals``,
        ``subjects`` and ``tickets`` tables in ``con`` as the only state, known since ever."""
        con = self.con
        con.execute(
            f"""INSERT INTO {self._t("rp_principal")}
                SELECT id, 0, NULL, kind, role, team, country, coalesce(status, 'active'), ''
                FROM principals"""
        )
        con.execute(
            f"""INSERT INTO {self._t("rp_subject")}
                SELECT id, 0, NULL, coalesce(jurisdiction, 'US'),
                       array_to_string(list_sort(string_split(coalesce(protected, ''), '|')),
                                       '|'), employee
                FROM (SELECT *, NULL::VARCHAR AS jurisdiction FROM subjects)"""
            if "jurisdiction" not in _columns(con, "subjects")
            else f"""INSERT INTO {self._t("rp_subject")}
                SELECT id, 0, NULL, jurisdiction,
                       array_to_string(list_sort(string_split(coalesce(protected, ''), '|')),
                                       '|'), employee
                FROM subjects"""
        )
        con.execute(
            f"""INSERT INTO {self._t("rp_ticket")}
                SELECT id, 0, NULL, kind, subject, assignee, status, opened, closed
                FROM tickets"""
        )

    def _insert(
        self, rows: Mapping[str, list[dict[str, Any]]], types: Mapping[str, str] | None = None
    ) -> None:
        if not any(rows.values()):
            return
        with working_folder() as folder:
            for table, items in rows.items():
                if not items:
                    continue
                path = Path(folder) / f"{table}.jsonl"
                with path.open("w", encoding="utf-8") as out:
                    for item in items:
                        out.write(json.dumps(item) + "\n")
                columns = types or _HISTORY[table]
                spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in columns.items()) + "}"
                self.con.execute(
                    f"INSERT INTO {self._t(table)} BY NAME SELECT * FROM read_json("
                    f"{literal(str(path))}, format = 'newline_delimited', columns = {spec})"
                )

    # -- replaying events -------------------------------------------------------------------

    def replay(self, events: str) -> ReplayRun:
        """Decide every event of the relation ``events`` (columns of the ``events`` table;
        only those let through, ``decision`` ``allow``, and not custos's own are judged) and
        record those custos would have refused or released only coarse."""
        con, t = self.con, self._t
        grace = f"INTERVAL {int(self.config.retro_minutes)} MINUTE"
        pid = "e.principal" if not self.canonical else f"'{PRINCIPAL}'"
        sid = "e.subject" if not self.canonical else f"'{SUBJECT}'"
        tid = "e.ticket" if not self.canonical else f"'{TICKET}'"
        other = f"'{_OTHER}'"

        def rel(column: str, own: str, whose: str) -> str:
            # How a fact's id relates to the request: the request's own entity, or another.
            if not self.canonical:
                return column
            return (
                f"CASE WHEN {column} IS NULL THEN NULL "
                f"WHEN {column} = {own} THEN {whose} ELSE {other} END"
            )

        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_e AS
            SELECT id, time, principal, subject, ticket, category, purpose, action, precision,
                   coalesce(break_glass, false) AS bg, source
            FROM ({events}) x
            WHERE decision = 'allow'
            """
        )
        con.execute(f"DELETE FROM rp_e WHERE id IN (SELECT id FROM {t('rp_own')})")
        # The state at each event's time: the latest entry at or before it, else the
        # earliest entry (the event predates what the ledger tells). Most rows have one
        # entry: those join on their id alone; only rows with several take an as-of join.
        lo = "TIMESTAMP '0001-01-01'"
        parts = {"p": ("rp_principal", "principal"), "s": ("rp_subject", "subject")}
        parts["t"] = ("rp_ticket", "ticket")
        counts = ", ".join(
            f"""{x}m AS (SELECT id, count(*) AS n, min(idx) AS first_idx, min(time) AS first_t
                      FROM {t(table)} GROUP BY id)"""
            for x, (table, _) in parts.items()
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_one AS
            WITH {counts}
            SELECT e.*, pm.n AS pn, pm.first_idx AS p1, pm.first_t AS pt,
                   sm.n AS sn, sm.first_idx AS s1, sm.first_t AS st,
                   tm.n AS tn, tm.first_idx AS t1, tm.first_t AS tt
            FROM rp_e e
            LEFT JOIN pm ON pm.id = e.principal
            LEFT JOIN sm ON sm.id = e.subject
            LEFT JOIN tm ON tm.id = e.ticket
            """
        )
        asof = []
        for x, (table, column) in parts.items():
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE rp_{x}a AS
                SELECT e.id, h.idx
                FROM (SELECT id, {column}, time FROM rp_one WHERE {x}n > 1) e
                ASOF JOIN {t(table)} h
                  ON h.id = e.{column} AND e.time >= coalesce(h.time, {lo})
                """
            )
            asof.append(f"LEFT JOIN rp_{x}a {x}a ON {x}a.id = o.id")
        picked = ", ".join(
            f"CASE WHEN o.{x}n > 1 THEN coalesce({x}a.idx, o.{x}1) ELSE o.{x}1 END AS {x}_idx"
            for x in parts
        )
        early = " OR ".join(
            f"""(o.{x}n IS NOT NULL AND CASE WHEN o.{x}n > 1 THEN {x}a.idx IS NULL
                                          ELSE o.time < coalesce(o.{x}t, {lo}) END)"""
            for x in parts
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_at AS
            SELECT o.id, o.time, o.principal, o.subject, o.ticket, o.category, o.purpose,
                   o.action, o.precision, o.bg, o.source, {picked}, {early} AS early
            FROM rp_one o {" ".join(asof)}
            """
        )
        # The grant covering each event at its time, if any (precise first, then the one
        # ending last... as the guarded path orders them: precise first, then soonest end).
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_g AS
            SELECT e.id, arg_min(g.idx, (g.precision <> 'precise', g.ends, g.idx)) AS g_idx
            FROM rp_at e
            JOIN {t("rp_grant")} g
              ON g.principal = e.principal AND g.subject = e.subject
             AND g.purpose = e.purpose AND list_contains(g.categories, e.category)
             AND list_contains(g.actions, e.action)
             AND (g.ticket IS NULL OR g.ticket = e.ticket)
             AND g.time <= e.time AND g.starts <= e.time AND e.time < g.ends
            WHERE NOT EXISTS (SELECT 1 FROM {t("rp_revoked")} r
                              WHERE r.id = g.id AND r.time <= e.time)
            GROUP BY e.id
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_k AS
            SELECT e.id, e.time, e.principal, e.subject, e.ticket, e.category, e.source,
                   e.precision AS read_precision, e.early,
                   p.id IS NULL OR s.id IS NULL AS unknown,
                   coalesce(s.protected, '') <> '' AS protected,
                   {pid} AS pid, p.kind AS p_kind, p.role AS p_role, p.team AS p_team,
                   p.country AS p_country, p.status AS p_status, p.groups AS p_groups,
                   {sid} AS sid, s.jurisdiction AS s_jur, s.protected AS s_protected,
                   {rel("s.employee", "e.principal", f"'{PRINCIPAL}'")} AS s_employee,
                   CASE WHEN k.id IS NULL THEN NULL ELSE {tid} END AS tid,
                   k.kind AS t_kind,
                   CASE WHEN k.id IS NULL THEN NULL
                        WHEN k.status IN ('open', 'closed')
                             AND (k.opened IS NOT NULL OR k.closed IS NOT NULL)
                        THEN CASE WHEN (k.opened IS NULL OR e.time >= k.opened - {grace})
                                       AND (k.closed IS NULL OR e.time <= k.closed + {grace})
                                       AND NOT (k.status = 'closed' AND k.closed IS NULL)
                                  THEN 'open' ELSE 'closed' END
                        ELSE k.status END AS t_status,
                   {rel("k.subject", "e.subject", f"'{SUBJECT}'")} AS t_subject,
                   {rel("k.assignee", "e.principal", f"'{PRINCIPAL}'")} AS t_assignee,
                   g.precision AS g_precision, CAST(g.approvals AS VARCHAR) AS g_approvals,
                   g.approver_groups AS g_groups, CAST(g.break_glass AS VARCHAR) AS g_break_glass,
                   e.purpose, e.action, CAST(e.bg AS VARCHAR) AS bg
            FROM rp_at e
            LEFT JOIN {t("rp_principal")} p ON p.id = e.principal AND p.idx = e.p_idx
            LEFT JOIN {t("rp_subject")} s ON s.id = e.subject AND s.idx = e.s_idx
            LEFT JOIN {t("rp_ticket")} k ON k.id = e.ticket AND k.idx = e.t_idx
            LEFT JOIN rp_g gg ON gg.id = e.id
            LEFT JOIN {t("rp_grant")} g ON g.idx = gg.g_idx
            """
        )
        key = ", ".join(
            f"'' AS \"{c}\"" if c in self._unread else f'coalesce("{c}", \'\') AS "{c}"'
            for c in _KEY
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE rp_all AS SELECT DISTINCT {key} FROM rp_k "
            "WHERE NOT unknown"
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_new AS
            SELECT * FROM rp_all
            EXCEPT SELECT {", ".join(f'"{c}"' for c in _KEY)} FROM {t("rp_keys")}
            WHERE digest = {literal(self.digest)}
            """
        )
        new = self.con.execute("SELECT * FROM rp_new").fetchall()
        self._decide(new)
        on = " AND ".join(
            f'coalesce(k."{c}", \'\') = r."{c}"' for c in _KEY if c not in self._unread
        )
        con.execute(
            f"""
            INSERT INTO {t("rp_found")}
            SELECT k.id, k.time, k.principal, k.subject, k.ticket, k.category, k.source,
                   CASE WHEN k.unknown THEN 'unknown'
                        WHEN r.outcome = 'deny' THEN 'deny'
                        WHEN r.outcome = 'approval_required' THEN 'approval'
                        ELSE 'coarse' END,
                   r.policy, r.why, k.protected, k.early
            FROM rp_k k
            LEFT JOIN (SELECT * FROM {t("rp_keys")} WHERE digest = {literal(self.digest)}) r
              ON {on}
            WHERE k.unknown OR r.outcome <> 'allow'
               OR (r.precision = 'coarse' AND k.read_precision = 'precise')
            """
        )
        inserted = con.fetchone()
        row = con.execute(
            "SELECT (SELECT count(*) FROM rp_e), (SELECT count(*) FROM rp_all)"
        ).fetchone()
        if row is None or inserted is None:
            raise duckdb.InvalidInputException("replay could not count its work")
        events_n, keys_n, found_n = int(row[0]), int(row[1]), int(inserted[0])
        for name in (
            "rp_e",
            "rp_one",
            "rp_pa",
            "rp_sa",
            "rp_ta",
            "rp_at",
            "rp_g",
            "rp_k",
            "rp_all",
            "rp_new",
        ):
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        return ReplayRun(events_n, keys_n, len(new), 0, found_n)

    def _decide(self, keys: Sequence[tuple[Any, ...]]) -> None:
        """Decide each key once and keep the outcome (with the pack's digest)."""
        if not keys:
            return
        results: list[tuple[Any, ...]] = []
        for at in range(0, len(keys), _BATCH):
            chunk = keys[at : at + _BATCH]
            # Cedar takes one copy of each entity per batch: the placeholders are numbered
            # per key so that two keys' principals (or subjects) never merge.
            items = [self._request(dict(zip(_KEY, k, strict=True)), n) for n, k in enumerate(chunk)]
            decisions = self.policy.engine.decide_many(items)
            for k, decision in zip(chunk, decisions, strict=True):
                results.append((self.digest, *k, *_result(decision)))
        # Through a file: DuckDB takes rows from Python one statement at a time.
        columns = {"digest": "VARCHAR", **dict.fromkeys(_KEY, "VARCHAR"), **_RESULT}
        self._insert({"rp_keys": [dict(zip(columns, r, strict=True)) for r in results]}, columns)

    def _request(self, key: Mapping[str, str], n: int) -> tuple[AccessRequest, Facts]:
        """The canonical request and facts of one key (the ``n``-th of its batch)."""

        def opt(value: str) -> str | None:
            return _numbered(value, n) if value else None

        key = {name: _numbered(value, n) for name, value in key.items()}

        principal = Principal(
            id=key["pid"],
            name="",
            kind=key["p_kind"] or "employee",
            role=key["p_role"],
            team=key["p_team"],
            country=key["p_country"],
            status=key["p_status"] or "active",
            groups=tuple(g for g in key["p_groups"].split("|") if g),
        )
        subject = Subject(
            id=key["sid"],
            jurisdiction=key["s_jur"],
            protected=tuple(p for p in key["s_protected"].split("|") if p),
            employee=opt(key["s_employee"]),
        )
        ticket = None
        if key["tid"]:
            ticket = Ticket(
                id=key["tid"],
                kind=key["t_kind"],
                subject=key["t_subject"],
                assignee=key["t_assignee"],
                status=key["t_status"],
            )
        grant = None
        if key["g_precision"]:
            grant = GrantFacts(
                id="(grant)",
                principal=principal.id,
                subject=subject.id,
                categories=(key["category"],),
                purpose=key["purpose"],
                precision=key["g_precision"],
                approvals=int(key["g_approvals"] or 0),
                approver_groups=tuple(g for g in key["g_groups"].split("|") if g),
                starts=_NOW - timedelta(seconds=1),
                ends=_NOW + timedelta(days=1),
                break_glass=key["g_break_glass"] == "true",
                actions=(key["action"],),
            )
        request = AccessRequest(
            principal=principal.id,
            subject=subject.id,
            category=key["category"],
            purpose=key["purpose"],
            action=key["action"],
            ticket=ticket.id if ticket is not None else None,
            break_glass=key["bg"] == "true",
            time=_NOW,
        )
        facts = Facts(
            principal=principal,
            subject=subject,
            allowed_countries=self.policy.allowed_countries(subject.jurisdiction),
            ticket=ticket,
            grant=grant,
        )
        return request, facts

    # -- findings ---------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        """Every recorded refusal, grouped per principal per day (one alert each)."""
        found = self._t("rp_found")
        reasons: dict[tuple[str, Any], list[tuple[Any, ...]]] = {}
        for row in self.con.execute(
            f"""
            SELECT principal, CAST(time AS DATE) AS day, kind, policy, count(*),
                   arg_min((why, subject, ticket, category), (time, id))
            FROM {found} GROUP BY ALL ORDER BY principal, day, min(time), kind, policy
            """
        ).fetchall():
            principal, day, kind, policy, n, first = row
            why, subject, ticket, category = (
                (first[k] for k in ("why", "subject", "ticket", "category"))
                if isinstance(first, dict)
                else first
            )
            reasons.setdefault((principal, day), []).append(
                (kind, policy, int(n), why, subject, ticket, category)
            )
        rows = self.con.execute(
            f"""
            SELECT principal, CAST(time AS DATE) AS day, min(time), max(time),
                   list(id ORDER BY time, id)[1:{int(self.config.max_evidence)}],
                   list(DISTINCT subject ORDER BY subject), count(*),
                   bool_or(protected), count(*) FILTER (WHERE early),
                   list(DISTINCT coalesce(source, '(no source)') ORDER BY 1)
            FROM {found}
            GROUP BY principal, day
            ORDER BY principal, day
            """
        ).fetchall()
        out = []
        for principal, day, first, last, ids, subjects, n, protected, early, sources in rows:
            out.append(
                Finding(
                    rule=RULE,
                    severity="high" if protected else "medium",
                    principals=(principal,),
                    subjects=tuple(subjects),
                    events=tuple(ids),
                    first_seen=_utc(first),
                    last_seen=_utc(last),
                    explanation=_explain(
                        principal, day, int(n), int(early), sources, reasons[(principal, day)]
                    ),
                    key=f"{principal}\x1f{day}",
                )
            )
        return out


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {str(r[0]) for r in con.execute(f"DESCRIBE {table}").fetchall()}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _result(decision: Decision) -> tuple[str, str | None, str, str]:
    policy = decision.reasons[0].policy if decision.reasons else ""
    return decision.outcome, decision.precision, policy, decision.explanation


def _numbered(value: str, n: int) -> str:
    """A placeholder made unique to the ``n``-th key of a batch (see :meth:`_decide`)."""
    if value in (PRINCIPAL, SUBJECT, TICKET):
        return f"{value[:-1]}:{n}}}"
    return value


_PLACEHOLDER = re.compile(r"\{(principal|subject|ticket):\d+\}")


def _render(text: str, subject: str, ticket: str | None, principal: str) -> str:
    """A kept explanation with the event's own ids in place of the placeholders."""
    real = {"principal": principal, "subject": subject, "ticket": ticket or "(no ticket)"}
    return _PLACEHOLDER.sub(lambda m: real[m.group(1)], text)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _explain(
    principal: str,
    day: Any,
    n: int,
    early: int,
    sources: Sequence[str],
    reasons: Sequence[tuple[Any, ...]],
) -> str:
    """Plain words for one principal's day: what custos would have decided, by policy
    (``reasons``: kind, policy, count, and the first event's explanation, subject, ticket
    and category)."""
    parts = []
    for kind, policy, count_n, text, subject, ticket, category in reasons:
        count = _plural(count_n, "access")
        if kind == "unknown":
            parts.append(
                f"{count} by or about someone custos's directory never knew "
                f"(e.g. {category} of {subject})"
            )
        elif kind == "coarse":
            parts.append(
                f"{count} read precise data custos would have released only coarse "
                f"(policy {policy}; e.g. {category} of {subject})"
            )
        else:
            verb = "refused" if kind == "deny" else "held for approval"
            said = _render(text or "", subject, ticket, principal).rstrip(".")
            said = said.removeprefix("Denied: ")
            parts.append(f"{count} custos would have {verb} (policy {policy}: {said})")
    text = (
        f"{principal} reached personal data {_plural(n, 'time')} on {day} by other paths "
        f"({', '.join(sources)}) that custos's policies, with the directory as it stood then, "
        f"would not have allowed: " + "; ".join(parts) + "."
    )
    if early:
        text += (
            f" {_plural(early, 'access')} came before the first state of the directory the "
            "ledger records, and were judged on that earliest state."
        )
    return text + " Staff reaching data by other paths are held to the same rules."


def replay_entries(
    replay: PolicyReplay, ledger: Callable[[int], Iterable[tuple[int, Mapping[str, Any]]]]
) -> int:
    """Follow ``ledger`` (entries from a position on) from where ``replay`` stopped."""
    return replay.follow(ledger(int(replay.meta().get("ledger", "0"))))


@dataclass(frozen=True, slots=True)
class ReplaySource:
    """What a detection run replays with: the policy, and the ledger's entries from an index
    on (``ledger(start)`` yields ``(index, entry)`` in index order)."""

    policy: ReplayPolicy
    ledger: Callable[[int], Iterable[tuple[int, Mapping[str, Any]]]]


def run_replay(
    con: duckdb.DuckDBPyConnection,
    config: DetectConfig,
    source: ReplaySource,
    *,
    schema: str = "main",
    events: str = "events",
    store: str = "",
) -> tuple[list[Finding], ReplayRun]:
    """One replay as a detection run makes it: follow the ledger from where the last run
    stopped, replay the events of ``schema.events`` above the highest number replayed (all
    of ``events`` when ``schema`` is ``main``: nothing is kept), and return every finding
    with what was done. ``store`` is the event store's identity: another one than last time
    makes replay start again. All in one DuckDB transaction: a failure leaves the kept
    tables as the last run left them. Raises ``duckdb.Error`` on failure."""
    replay = PolicyReplay(con, source.policy, config, schema)
    con.execute("BEGIN")
    try:
        meta = replay.meta()
        if meta.get("store", "") != store:
            replay.reset()
            replay.set_meta(store=store)
        followed = replay_entries(replay, source.ledger)
        if schema == "main":
            run = replay.replay(f"SELECT * FROM {events}")
        else:
            mark = int(replay.meta().get("seq", "0"))
            row = con.execute(f"SELECT coalesce(max(seq), 0) FROM {schema}.events").fetchone()
            high = int(row[0]) if row else 0
            run = replay.replay(
                f"SELECT * FROM {schema}.events WHERE NOT folded AND seq > {mark} AND seq <= {high}"
            )
            replay.set_meta(seq=str(max(mark, high)))
        found = replay.findings()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found, ReplayRun(run.events, run.keys, run.decided, followed, run.found)


__all__ = [
    "RULE",
    "PolicyReplay",
    "ReplayPolicy",
    "ReplayRun",
    "ReplaySource",
    "replay_entries",
    "run_replay",
]
