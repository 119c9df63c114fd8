"""Policy replay: imported accesses judged by the same rules as custos's own.

Accesses that reached data by other paths (events imported with their ``source``, not custos's
own decisions) were never decided by the policies. Replay decides each one that its tool let
through (``decision`` ``allow``) with the active policy pack, the directory and the decision
settings **as they stood at the event's time**, and reports what custos would have refused
(rule ``policy_replay``).

*As it stood.* The directory's history is the ledger's: every ``authority`` entry (kinds
``principal``, ``subject``, ``ticket``) sets a row's facts from its ``time`` on. Each history
row holds the interval it was in force (``since``, ``until``: from its time to the next entry
of the same row), so an event finds its row's state with a plain join on the id and its time
within the interval. The earliest entry of a row reaches back without limit: an event older
than every entry is judged on that earliest state, and its finding says so. Grants count when
their entry (``grant``, ``break_glass``) was written at or before ``t``, ``t`` lies within
their ``starts`` and ``ends``, no ``grant_revoked`` came before ``t``, and they cover the event
(principal, subject, category, action, purpose, ticket if they name one). A ticket's status at
``t`` comes from its ``opened`` and ``closed`` times when it has them (with ``retro_minutes``
of grace, as detection's explanations), else from the entry's status. Residency (which
countries' staff may see a jurisdiction's data beyond coarse) comes from the ledger's
``settings`` entries the same way (the earliest reaching back); with none, today's settings.

*Cost.* Most events share their shape. A principal's facts (kind, role, team, country, status,
groups), a subject's (jurisdiction, protected) and a grant's (precision, approvals, approver
groups, break-glass) are each numbered once, as a *class*, when they enter the history. An
event then reduces to a compact key of small values: the classes, how the ids it meets relate
to the request (the ticket's assignee *is* the principal or someone else; the subject's owning
employee *is* the principal or not; the ticket is about the subject or not), the ticket's kind
and status at the time, the settings in force, category, purpose, action and break-glass. Only
the distinct compact keys (hundreds, not millions) are expanded into facts, looked up among the
keys decided before (kept with the pack's digest between runs) and, when new, decided in Cedar
batches; the events are then joined back to their key's outcome. This is exact for packs that
compare entities only with each other and read their attributes, as the default pack does; a
pack that names a particular principal, subject or data entity, or reads a ticket's
``opened_by`` or an id from the context, is keyed with the real ids instead (exact, and slower).

*Incremental.* With a home's mirror, replay keeps its tables beside the mirror's: the
directory history, the ledger position it has followed, the highest event number it has
replayed, the decided keys, the refused events and one alert row per principal per day. A run
replays only the events above that number, follows only the ledger entries beyond its
position, and rebuilds only the alerts of the principal-days it found something on.
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
from custos.policy import AccessRequest, Decision, Facts, GrantFacts, PolicyEngine, Reason

#: The rule id of replay's findings.
RULE = "policy_replay"
#: Format of replay's own tables: another value makes it start again.
FORMAT = "2"
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
#: Before every real time: where an entry without a time, or the earliest, reaches back to.
_LO = "TIMESTAMP '0001-01-01'"
#: The settings version of events when the ledger holds no ``settings`` entry (today's).
_TODAY = -1

#: What the ledger's entries add, staged as read (one table each).
_STAGED = {
    "principal": {
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
    "subject": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        "jurisdiction": "VARCHAR",
        "protected": "VARCHAR",
        "employee": "VARCHAR",
    },
    "ticket": {
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
    "grant": {
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
    "revoked": {"id": "VARCHAR", "idx": "BIGINT", "time": "TIMESTAMP"},
    "own": {"id": "VARCHAR"},
    "settings": {"idx": "BIGINT", "time": "TIMESTAMP", "residency": "VARCHAR"},
}
#: The facts each history's class numbers (see the module docstring).
_CLASSED = {
    "principal": ("kind", "role", "team", "country", "status", "groups"),
    "subject": ("jurisdiction", "protected"),
    "grant": ("precision", "approvals", "approver_groups", "break_glass"),
}
#: Interval of a history row: from ``since`` (NULL: since ever) to ``until`` (NULL: still).
_SPAN = {"since": "TIMESTAMP", "until": "TIMESTAMP"}
_TABLES = {
    "rp_principal": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        **_SPAN,
        "cls": "INTEGER",
    },
    "rp_subject": {
        "id": "VARCHAR",
        "idx": "BIGINT",
        "time": "TIMESTAMP",
        **_SPAN,
        "cls": "INTEGER",
        "protected": "BOOLEAN",
        "employee": "VARCHAR",
    },
    "rp_ticket": {**_STAGED["ticket"], **_SPAN},
    "rp_grant": {
        **{k: v for k, v in _STAGED["grant"].items() if k not in _CLASSED["grant"]},
        "precision": "VARCHAR",
        "cls": "INTEGER",
    },
    "rp_revoked": _STAGED["revoked"],
    "rp_own": _STAGED["own"],
    "rp_settings": _STAGED["settings"],
    "rp_class": {"tbl": "VARCHAR", "cls": "INTEGER", "facts": "VARCHAR"},
}
#: The canonical key's columns (see the module docstring), all text so that a key compares
#: with ``=``; ``s_allowed`` is the countries residency lets see the subject's jurisdiction.
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
    "s_allowed",
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
_KEYS = {"kid": "INTEGER", "digest": "VARCHAR", **dict.fromkeys(_KEY, "VARCHAR"), **_RESULT}
_FOUND = {
    "id": "VARCHAR",
    "time": "TIMESTAMP",
    "day": "DATE",
    "principal": "VARCHAR",
    "subject": "VARCHAR",
    "ticket": "VARCHAR",
    "category": "VARCHAR",
    "source": "VARCHAR",
    "kind": "VARCHAR",
    "kid": "INTEGER",
    "protected": "BOOLEAN",
    "early": "BOOLEAN",
}
_ALERT = {
    "principal": "VARCHAR",
    "day": "DATE",
    "first": "TIMESTAMP",
    "last": "TIMESTAMP",
    "events": "VARCHAR[]",
    "subjects": "VARCHAR[]",
    "protected": "BOOLEAN",
    "explanation": "VARCHAR",
    # Recorded in the casebook since it was last built (see PolicyReplay.reported).
    "reported": "BOOLEAN",
}
#: The compact key of an event (see the module docstring): ``pid`` and ``sid`` only with a
#: pack that names ids; ``tid`` the ticket's id, or a placeholder, when the event cites one
#: the directory knew; ``sv`` the ledger index of the settings in force.
_COMPACT = {
    "pid": "VARCHAR",
    "pc": "INTEGER",
    "sid": "VARCHAR",
    "sc": "INTEGER",
    "s_employee": "VARCHAR",
    "tid": "VARCHAR",
    "t_kind": "VARCHAR",
    "t_status": "VARCHAR",
    "t_subject": "VARCHAR",
    "t_assignee": "VARCHAR",
    "gc": "INTEGER",
    "sv": "BIGINT",
    "category": "VARCHAR",
    "purpose": "VARCHAR",
    "action": "VARCHAR",
    "bg": "BOOLEAN",
}
#: What stands for "none" in a compact key's column, by type.
_NONE = {"VARCHAR": "''", "INTEGER": "-1", "BIGINT": "-1", "BOOLEAN": "false"}
#: Compact keys met before, with their decided key (``kid``) and its outcome, per pack.
_COMPACT_TABLE = {
    "digest": "VARCHAR",
    **_COMPACT,
    "kid": "INTEGER",
    "refused": "VARCHAR",
    "coarse": "BOOLEAN",
}
_KEPT = {
    **_TABLES,
    "rp_keys": _KEYS,
    "rp_compact": _COMPACT_TABLE,
    "rp_found": _FOUND,
    "rp_alert": _ALERT,
}


@dataclass(frozen=True, slots=True)
class ReplayPolicy:
    """What replay decides with: the active pack's engine and today's residency settings
    (used for events when the ledger holds no ``settings`` entry)."""

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
    """The staged rows ``entry`` (at ``index``) adds, by history."""
    kind = entry.get("type")
    at = entry.get("time")
    if kind in ("decision", "release") and isinstance(entry.get("id"), str):
        return [("own", {"id": entry["id"]})]
    if kind == "settings" and isinstance(entry.get("residency"), dict):
        residency = {str(k): sorted(str(c) for c in v) for k, v in entry["residency"].items()}
        return [("settings", {"idx": index, "time": at, "residency": json.dumps(residency)})]
    if kind == "grant_revoked" and isinstance(entry.get("grant"), str):
        return [("revoked", {"id": entry["grant"], "idx": index, "time": at})]
    if kind in ("grant", "break_glass") and isinstance(entry.get("grant"), str):
        return [
            (
                "grant",
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
                    "principal",
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
                    "subject",
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
                    "ticket",
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
        if fresh:
            # Tables of an older format: made again below, empty.
            for name in _KEPT:
                con.execute(f"DROP TABLE IF EXISTS {self._t(name)}")
        for name, columns in _KEPT.items():
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
        """Forget everything kept (another event store or ledger): history, keys, findings,
        alerts and marks."""
        for name in _KEPT:
            self.con.execute(f"DELETE FROM {self._t(name)}")
        self.set_meta(ledger="0", seq="0")

    # -- the directory's history ----------------------------------------------------------

    def follow(self, entries: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
        """Take in ledger entries (in index order, from where :meth:`meta`'s ``ledger``
        says); returns how many were read. The position is saved with the rows."""
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in _STAGED}
        read, last = 0, -1
        for index, entry in entries:
            read += 1
            last = index
            for table, row in _history_rows(index, entry):
                rows[table].append(row)
        if any(rows.values()):
            with working_folder() as folder:
                for name, items in rows.items():
                    if items:
                        self._stage(folder, name, items)
                        self._take(name)
        if read:
            self.set_meta(ledger=str(last + 1))
        return read

    def _stage(self, folder: Path, name: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Load ``items`` into the temporary table ``rp_stage`` (the columns of ``name``)."""
        path = folder / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for item in items:
                out.write(json.dumps(item) + "\n")
        spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in _STAGED[name].items()) + "}"
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE rp_stage AS SELECT * FROM read_json("
            f"{literal(str(path))}, format = 'newline_delimited', columns = {spec})"
        )

    def _take(self, name: str) -> None:
        """Move the staged rows of history ``name`` (in ``rp_stage``) into its table: classes
        numbered, and the intervals of the rows they touch set again."""
        con, t = self.con, self._t
        if name in ("own", "revoked", "settings"):
            con.execute(f"INSERT INTO {t('rp_' + name)} BY NAME SELECT * FROM rp_stage")
            return
        if name == "ticket":
            con.execute(
                f"INSERT INTO {t('rp_ticket')} BY NAME SELECT *, NULL AS since, NULL AS until "
                "FROM rp_stage"
            )
        else:
            facts = ", ".join(f'"{c}" := "{c}"' for c in _CLASSED[name])
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE rp_staged AS "
                f"SELECT *, CAST(to_json(struct_pack({facts})) AS VARCHAR) AS facts FROM rp_stage"
            )
            con.execute(
                f"""
                INSERT INTO {t("rp_class")}
                SELECT {literal(name)},
                       (SELECT coalesce(max(cls), 0) FROM {t("rp_class")})
                         + row_number() OVER (ORDER BY facts),
                       facts
                FROM (SELECT DISTINCT facts FROM rp_staged
                      WHERE facts NOT IN (SELECT facts FROM {t("rp_class")}
                                          WHERE tbl = {literal(name)}))
                """
            )
            extra = {
                "principal": "",
                "subject": ", s.protected <> '' AS protected, s.employee",
                "grant": (
                    ", s.principal, s.subject, s.categories, s.actions, s.purpose, s.ticket, "
                    "s.starts, s.ends, s.precision"
                ),
            }[name]
            con.execute(
                f"""
                INSERT INTO {t("rp_" + name)} BY NAME
                SELECT s.id, s.idx, s.time, c.cls {extra}
                FROM rp_staged s JOIN {t("rp_class")} c
                  ON c.tbl = {literal(name)} AND c.facts = s.facts
                """
            )
            con.execute("DROP TABLE temp.rp_staged")
            if name == "grant":
                return
        # Each row of the ids just written is in force from its time until the next row's
        # (ordered by time, then ledger index); the first reaches back without limit.
        table = t("rp_" + name)
        con.execute(
            f"""
            UPDATE {table} h SET since = w.since, until = w.until
            FROM (SELECT id, idx,
                         CASE WHEN row_number() OVER w = 1 THEN NULL
                              ELSE coalesce(time, {_LO}) END AS since,
                         CASE WHEN lead(idx) OVER w IS NULL THEN NULL
                              ELSE coalesce(lead(time) OVER w, {_LO}) END AS until
                  FROM {table}
                  WHERE id IN (SELECT id FROM rp_stage)
                  WINDOW w AS (PARTITION BY id ORDER BY time NULLS FIRST, idx)) w
            WHERE h.id = w.id AND h.idx = w.idx
            """
        )

    def history_from_directory(self) -> None:
        """When no ledger tells the history (an evaluation, a lake): the ``principals``,
        ``subjects`` and ``tickets`` tables in ``con`` as the only state, known since ever,
        and the ``grants`` table when there is one (covering every category and action:
        detection's grants do not name them)."""
        con = self.con
        tables = {str(r[0]) for r in con.execute("SHOW TABLES").fetchall()}
        if "grants" in tables:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE rp_stage AS
                   SELECT id, 0::BIGINT AS idx, NULL::TIMESTAMP AS time, principal, subject,
                          NULL::VARCHAR[] AS categories, NULL::VARCHAR[] AS actions, purpose,
                          NULL::VARCHAR AS ticket, precision,
                          len(list_filter(string_split(coalesce(approvers, ''), '|'),
                                          lambda x: x <> ''))::INTEGER AS approvals,
                          array_to_string(list_sort(list_filter(
                              string_split(coalesce(approver_groups, ''), '|'),
                              lambda x: x <> '')), '|') AS approver_groups,
                          starts, ends, coalesce(break_glass, false) AS break_glass
                   FROM grants"""
            )
            self._take("grant")
        con.execute(
            """CREATE OR REPLACE TEMP TABLE rp_stage AS
               SELECT id, 0::BIGINT AS idx, NULL::TIMESTAMP AS time, kind, role, team, country,
                      coalesce(status, 'active') AS status, '' AS groups
               FROM principals"""
        )
        self._take("principal")
        jurisdiction = "jurisdiction" if "jurisdiction" in _columns(con, "subjects") else "'US'"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE rp_stage AS
                SELECT id, 0::BIGINT AS idx, NULL::TIMESTAMP AS time,
                       {jurisdiction} AS jurisdiction,
                       array_to_string(list_sort(list_filter(
                           string_split(coalesce(protected, ''), '|'), lambda x: x <> '')), '|')
                         AS protected,
                       employee
                FROM subjects"""
        )
        self._take("subject")
        con.execute(
            """CREATE OR REPLACE TEMP TABLE rp_stage AS
               SELECT id, 0::BIGINT AS idx, NULL::TIMESTAMP AS time, kind, subject, assignee,
                      status, opened, closed
               FROM tickets"""
        )
        self._take("ticket")

    # -- replaying events -------------------------------------------------------------------

    def _settings_version(self) -> tuple[str, dict[int, Mapping[str, Any]]]:
        """The SQL giving each event (``e``) the ledger index of the settings in force at its
        time (the earliest reaching back; :data:`_TODAY` with none), and each version's
        residency."""
        rows = self.con.execute(
            f"SELECT idx, time, residency FROM {self._t('rp_settings')} "
            "ORDER BY time NULLS FIRST, idx"
        ).fetchall()
        if not rows:
            return str(_TODAY), {}
        versions = {int(idx): json.loads(body) for idx, _, body in rows}
        # Few versions (settings change rarely): a CASE from the newest down.
        branches = " ".join(
            f"WHEN e.time >= TIMESTAMP '{time.isoformat(sep=' ')}' THEN {int(idx)}"
            for idx, time, _ in reversed(rows[1:])
            if time is not None
        )
        first = int(rows[0][0])
        return (f"CASE {branches} ELSE {first} END" if branches else str(first)), versions

    def replay(self, events: str) -> ReplayRun:
        """Decide every event of the relation ``events`` (columns of the ``events`` table;
        only those let through, ``decision`` ``allow``, and not custos's own are judged),
        record those custos would have refused or released only coarse, and rebuild the
        alerts of the principal-days they fall on."""
        con, t = self.con, self._t
        version, residency = self._settings_version()
        grants = self._scalar(f"SELECT count(*) FROM {t('rp_grant')}") > 0
        chosen = f"""
            SELECT id, time, principal, subject, ticket, category, purpose, action, precision,
                   coalesce(break_glass, false) AS bg, source
            FROM ({events}) x
            WHERE decision = 'allow' AND id NOT IN (SELECT id FROM {t("rp_own")})
            """
        if grants:
            # The grant covering each event at its time, if any: precise first, then the
            # soonest to end (as the guarded path orders them). Grants are few: this join's
            # table is small.
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE rp_g AS
                SELECT e.id, arg_min(g.cls, (g.precision <> 'precise', g.ends, g.idx)) AS cls
                FROM ({chosen}) e
                JOIN {t("rp_grant")} g
                  ON g.principal = e.principal AND g.subject = e.subject
                 AND g.purpose = e.purpose
                 AND (g.categories IS NULL OR list_contains(g.categories, e.category))
                 AND (g.actions IS NULL OR list_contains(g.actions, e.action))
                 AND (g.ticket IS NULL OR g.ticket = e.ticket)
                 AND (g.time IS NULL OR g.time <= e.time)
                 AND g.starts <= e.time AND e.time < g.ends
                WHERE NOT EXISTS (SELECT 1 FROM {t("rp_revoked")} r
                                  WHERE r.id = g.id AND r.time <= e.time)
                GROUP BY e.id
                """
            )
        joined = self._joined(chosen, version, grants)
        compact = ", ".join(f'"{c}"' for c in _COMPACT)
        known = f"(SELECT * FROM {t('rp_compact')} WHERE digest = {literal(self.digest)})"
        decided = listed = 0
        if not self._scalar(f"SELECT count(*) FROM {known}"):
            # Nothing decided under this pack yet (a first run): list the distinct keys
            # first, so that the pass below meets only decided keys.
            new = con.execute(
                f"SELECT DISTINCT {compact} FROM ({joined}) WHERE NOT unknown"
            ).fetchall()
            listed += len(new)
            decided += self._add_compact(new, residency)
        on = " AND ".join(f'k."{c}" = o."{c}"' for c in _COMPACT)
        # One pass over the events: what is refused, unknown, or of a key not decided yet.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE rp_cand AS
            SELECT k.*, o.kid, o.refused, o.coarse
            FROM ({joined}) k LEFT JOIN {known} o ON {on}
            WHERE k.unknown OR o.kid IS NULL OR o.refused IS NOT NULL
               OR (o.coarse AND k.read_precision = 'precise')
            """
        )
        late = con.execute(
            f"SELECT DISTINCT {compact} FROM rp_cand WHERE NOT unknown AND kid IS NULL"
        ).fetchall()
        if late:
            listed += len(late)
            decided += self._add_compact(late, residency)
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE rp_cand AS
                SELECT k.* REPLACE (coalesce(k.kid, o.kid) AS kid,
                                    CASE WHEN k.kid IS NULL THEN o.refused ELSE k.refused END
                                      AS refused,
                                    CASE WHEN k.kid IS NULL THEN o.coarse ELSE k.coarse END
                                      AS coarse)
                FROM rp_cand k LEFT JOIN {known} o ON k.kid IS NULL AND {on}
                """
            )
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE rp_new_found AS
            SELECT id, time, CAST(time AS DATE) AS day, principal, subject, ticket, category,
                   source,
                   CASE WHEN unknown THEN 'unknown' WHEN refused IS NOT NULL THEN refused
                        ELSE 'coarse' END AS kind,
                   kid, protected, early
            FROM rp_cand
            WHERE unknown OR refused IS NOT NULL OR (coarse AND read_precision = 'precise')
            """
        )
        con.execute(f"INSERT INTO {t('rp_found')} BY NAME SELECT * FROM rp_new_found")
        events_n = self._scalar(f"SELECT count(*) FROM ({chosen})")
        found_n = self._scalar("SELECT count(*) FROM rp_new_found")
        self._rebuild_alerts()
        for name in ("rp_g", "rp_cand", "rp_new_found"):
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        return ReplayRun(events_n, listed, decided, 0, found_n)

    def _joined(self, chosen: str, version: str, grants: bool) -> str:
        """The events of ``chosen`` (as ``e``) with their facts at their time, reduced to the
        compact key (:data:`_COMPACT`), as a query."""
        t = self._t
        grace = f"INTERVAL {int(self.config.retro_minutes)} MINUTE"
        canonical = self.canonical
        other = f"'{_OTHER}'"

        def rel(column: str, own: str, whose: str) -> str:
            # How a fact's id relates to the request: the request's own entity, or another.
            if not canonical:
                return column
            return (
                f"CASE WHEN {column} IS NULL THEN NULL "
                f"WHEN {column} = {own} THEN '{whose}' ELSE {other} END"
            )

        def span(h: str) -> str:
            return (
                f"({h}.since IS NULL OR e.time >= {h}.since) "
                f"AND ({h}.until IS NULL OR e.time < {h}.until)"
            )

        compact = {
            "pid": "e.principal" if not canonical else "NULL",
            "pc": "p.cls",
            "sid": "e.subject" if not canonical else "NULL",
            "sc": "s.cls",
            "s_employee": rel("s.employee", "e.principal", PRINCIPAL),
            "tid": "k.id"
            if not canonical
            else f"CASE WHEN k.id IS NULL THEN NULL ELSE '{TICKET}' END",
            "t_kind": "k.kind",
            "t_status": f"""CASE WHEN k.id IS NULL THEN NULL
                        WHEN k.status IN ('open', 'closed')
                             AND (k.opened IS NOT NULL OR k.closed IS NOT NULL)
                        THEN CASE WHEN (k.opened IS NULL OR e.time >= k.opened - {grace})
                                       AND (k.closed IS NULL OR e.time <= k.closed + {grace})
                                       AND NOT (k.status = 'closed' AND k.closed IS NULL)
                                  THEN 'open' ELSE 'closed' END
                        ELSE k.status END""",
            "t_subject": rel("k.subject", "e.subject", SUBJECT),
            "t_assignee": rel("k.assignee", "e.principal", PRINCIPAL),
            "gc": "g.cls" if grants else "NULL",
            "sv": version,
            "category": "e.category",
            "purpose": "e.purpose",
            "action": "e.action",
            "bg": "e.bg",
        }
        # Never NULL, so that keys compare with a plain (hash) join: '' and -1 stand for none.
        select = ", ".join(
            f'coalesce(CAST({compact[c]} AS {kind}), {_NONE[kind]}) AS "{c}"'
            for c, kind in _COMPACT.items()
        )
        early = " OR ".join(
            f"({h}.since IS NULL AND {h}.time IS NOT NULL AND e.time < {h}.time)"
            for h in ("p", "s", "k")
        )
        return f"""
            SELECT e.id, e.time, e.principal, e.subject, e.ticket, e.category, e.source,
                   e.precision AS read_precision, p.id IS NULL OR s.id IS NULL AS unknown,
                   coalesce(s.protected, false) AS protected, coalesce({early}, false) AS early,
                   {select}
            FROM ({chosen}) e
            LEFT JOIN {t("rp_principal")} p ON p.id = e.principal AND {span("p")}
            LEFT JOIN {t("rp_subject")} s ON s.id = e.subject AND {span("s")}
            LEFT JOIN {t("rp_ticket")} k ON k.id = e.ticket AND {span("k")}
            {"LEFT JOIN rp_g g ON g.id = e.id" if grants else ""}
            """

    def _scalar(self, sql: str) -> int:
        row = self.con.execute(sql).fetchone()
        if row is None:
            raise duckdb.InvalidInputException("replay could not count its work")
        return int(row[0])

    def _load(
        self, table: str, rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]
    ) -> None:
        """``rows`` as the temporary table ``table`` of ``columns`` (through a file: DuckDB
        takes rows from Python one statement at a time)."""
        spec = "{" + ", ".join(f"'{c}': '{t}'" for c, t in columns.items()) + "}"
        if not rows:
            body = ", ".join(f'"{c}" {t}' for c, t in columns.items())
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {table} ({body})")
            return
        with working_folder() as folder:
            path = Path(folder) / f"{table}.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for row in rows:
                    out.write(json.dumps(row, default=str) + "\n")
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM read_json("
                f"{literal(str(path))}, format = 'newline_delimited', columns = {spec})"
            )

    def _classes(self) -> dict[int, dict[str, Any]]:
        rows = self.con.execute(f"SELECT cls, facts FROM {self._t('rp_class')}").fetchall()
        return {int(cls): json.loads(facts) for cls, facts in rows}

    def _add_compact(
        self, distinct: Sequence[tuple[Any, ...]], residency: Mapping[int, Mapping[str, Any]]
    ) -> int:
        """Give each new compact key (values of :data:`_COMPACT`) its decided key and outcome
        (``refused``: ``deny``, ``approval`` or None; ``coarse``) in ``rp_compact``; canonical
        keys not decided before under this pack are decided now. Returns how many were."""
        if not distinct:
            return 0
        t = self._t
        classes = self._classes()
        columns = list(_COMPACT)
        canonical = [
            self._canonical(dict(zip(columns, values, strict=True)), classes, residency)
            for values in distinct
        ]
        known: dict[tuple[str, ...], tuple[int, str, str | None]] = {}
        cols = ", ".join(f'"{c}"' for c in _KEY)
        for got in self.con.execute(
            f"SELECT kid, outcome, precision, {cols} FROM {t('rp_keys')} "
            f"WHERE digest = {literal(self.digest)}"
        ).fetchall():
            known[tuple(str(v) for v in got[3:])] = (int(got[0]), str(got[1]), got[2])
        new = sorted({key for key in canonical if key not in known})
        if new:
            top = self._scalar(f"SELECT coalesce(max(kid), 0) FROM {t('rp_keys')}")
            rows = []
            for n, (done, decision) in enumerate(zip(new, self._decide(new), strict=True)):
                kid = top + 1 + n
                outcome, precision, policy, why = _result(decision)
                known[done] = (kid, outcome, precision)
                rows.append(
                    {
                        "kid": kid,
                        "digest": self.digest,
                        **dict(zip(_KEY, done, strict=True)),
                        "outcome": outcome,
                        "precision": precision,
                        "policy": policy,
                        "why": why,
                    }
                )
            self._load("rp_decided", rows, _KEYS)
            self.con.execute(f"INSERT INTO {t('rp_keys')} BY NAME SELECT * FROM rp_decided")
            self.con.execute("DROP TABLE temp.rp_decided")
        out = []
        for values, wanted in zip(distinct, canonical, strict=True):
            kid, outcome, precision = known[wanted]
            out.append(
                {
                    "digest": self.digest,
                    **dict(zip(columns, values, strict=True)),
                    "kid": kid,
                    "refused": {"deny": "deny", "approval_required": "approval"}.get(outcome),
                    "coarse": precision == "coarse",
                }
            )
        self._load("rp_more", out, _COMPACT_TABLE)
        self.con.execute(f"INSERT INTO {t('rp_compact')} BY NAME SELECT * FROM rp_more")
        self.con.execute("DROP TABLE temp.rp_more")
        return len(new)

    def _canonical(
        self,
        row: Mapping[str, Any],
        classes: Mapping[int, Mapping[str, Any]],
        residency: Mapping[int, Mapping[str, Any]],
    ) -> tuple[str, ...]:
        """The canonical key (:data:`_KEY`, all text) of one compact key."""
        p = classes[int(row["pc"])]
        s = classes[int(row["sc"])]
        g = classes[int(row["gc"])] if row["gc"] >= 0 else None
        jurisdiction = s.get("jurisdiction")
        if int(row["sv"]) == _TODAY or int(row["sv"]) not in residency:
            allowed = list(self.policy.allowed_countries(str(jurisdiction)))
        else:
            allowed = list(residency[int(row["sv"])].get(str(jurisdiction), [jurisdiction]))

        def text(value: Any) -> str:
            if value is None:
                return ""
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)

        key = {
            "pid": row["pid"] or PRINCIPAL,
            "p_kind": p.get("kind"),
            "p_role": p.get("role"),
            "p_team": p.get("team"),
            "p_country": p.get("country"),
            "p_status": p.get("status"),
            "p_groups": p.get("groups"),
            "sid": row["sid"] or SUBJECT,
            "s_jur": jurisdiction,
            "s_protected": s.get("protected"),
            "s_employee": row["s_employee"],
            "s_allowed": "|".join(sorted(str(c) for c in allowed)),
            "tid": row["tid"],
            "t_kind": row["t_kind"],
            "t_status": row["t_status"],
            "t_subject": row["t_subject"],
            "t_assignee": row["t_assignee"],
            "g_precision": g.get("precision") if g else None,
            "g_approvals": g.get("approvals") if g else None,
            "g_groups": g.get("approver_groups") if g else None,
            "g_break_glass": g.get("break_glass") if g else None,
            "category": row["category"],
            "purpose": row["purpose"],
            "action": row["action"],
            "bg": row["bg"],
        }
        return tuple("" if c in self._unread else text(key[c]) for c in _KEY)

    def _decide(self, keys: Sequence[tuple[str, ...]]) -> list[Decision]:
        """Decide each canonical key, in Cedar batches."""
        jur, allowed = _KEY.index("s_jur"), _KEY.index("s_allowed")
        batches: list[list[tuple[str, ...]]] = [[]]
        seen: dict[str, str] = {}
        for key in keys:
            # Cedar takes one copy of each entity per batch: a jurisdiction (with the
            # countries residency allows it) must not stand for two settings in one batch.
            if len(batches[-1]) >= _BATCH or seen.get(key[jur], key[allowed]) != key[allowed]:
                batches.append([])
                seen = {}
            seen[key[jur]] = key[allowed]
            batches[-1].append(key)
        out: list[Decision] = []
        for chunk in batches:
            # The placeholders are numbered per key so that two keys' principals (or
            # subjects) never merge.
            items = [self._request(dict(zip(_KEY, k, strict=True)), n) for n, k in enumerate(chunk)]
            out.extend(self._decide_known(items))
        return out

    def _decide_known(self, items: list[tuple[AccessRequest, Facts]]) -> list[Decision]:
        """Decide ``items``; an event using a word the active pack no longer knows (imported
        under an earlier pack) is refused by name rather than failing the whole batch."""
        pack = self.policy.engine.pack
        words = pack.vocabulary
        known = [
            (r, f)
            for r, f in items
            if words.knows("category", r.category) and words.knows("purpose", r.purpose)
        ]
        decided = iter(self.policy.engine.decide_many(known) if known else [])
        out: list[Decision] = []
        for request, _ in items:
            if words.knows("category", request.category) and words.knows(
                "purpose", request.purpose
            ):
                out.append(next(decided))
                continue
            message = "; ".join(
                words.problems([("category", request.category), ("purpose", request.purpose)])
            )
            out.append(
                Decision(
                    request=request,
                    outcome="deny",
                    precision=None,
                    reasons=(Reason(policy="vocabulary", effect="forbid", explanation=message),),
                    explanation=f"Denied: {message}.",
                    policy_version=pack.digest,
                )
            )
        return out

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
            allowed_countries=tuple(c for c in key["s_allowed"].split("|") if c),
            ticket=ticket,
            grant=grant,
        )
        return request, facts

    # -- findings ---------------------------------------------------------------------------

    def _rebuild_alerts(self) -> None:
        """Build again the alert rows (one per principal per day) of the principal-days the
        refusals in ``rp_new_found`` fall on, from every refusal kept for those days."""
        con, t = self.con, self._t
        con.execute(
            "CREATE OR REPLACE TEMP TABLE rp_touched AS "
            "SELECT DISTINCT principal, day FROM rp_new_found"
        )
        reasons: dict[tuple[str, Any], list[tuple[Any, ...]]] = {}
        for row in con.execute(
            f"""
            SELECT f.principal, f.day, f.kind, r.policy, count(*),
                   arg_min((r.why, f.subject, f.ticket, f.category), (f.time, f.id))
            FROM {t("rp_found")} f JOIN rp_touched USING (principal, day)
            LEFT JOIN {t("rp_keys")} r ON r.kid = f.kid
            GROUP BY ALL ORDER BY f.principal, f.day, min(f.time), f.kind, r.policy
            """
        ).fetchall():
            principal, day, kind, policy, n, first = row
            why, subject, ticket, category = (
                tuple(first[k] for k in ("why", "subject", "ticket", "category"))
                if isinstance(first, dict)
                else tuple(first)
            )
            reasons.setdefault((principal, day), []).append(
                (kind, policy, int(n), why, subject, ticket, category)
            )
        rows = con.execute(
            f"""
            SELECT f.principal, f.day, min(f.time), max(f.time),
                   list(f.id ORDER BY f.time, f.id)[1:{int(self.config.max_evidence)}],
                   list(DISTINCT f.subject ORDER BY f.subject), count(*),
                   bool_or(f.protected), count(*) FILTER (WHERE f.early),
                   list(DISTINCT coalesce(f.source, '(no source)') ORDER BY 1)
            FROM {t("rp_found")} f JOIN rp_touched USING (principal, day)
            GROUP BY f.principal, f.day
            """
        ).fetchall()
        alerts = [
            {
                "principal": principal,
                "day": day,
                "first": first,
                "last": last,
                "events": ids,
                "subjects": subjects,
                "protected": protected,
                "explanation": _explain(
                    principal, day, int(n), int(early), sources, reasons[(principal, day)]
                ),
                "reported": False,
            }
            for principal, day, first, last, ids, subjects, n, protected, early, sources in rows
        ]
        self._load("rp_built", alerts, _ALERT)
        con.execute(
            f"DELETE FROM {t('rp_alert')} a USING rp_touched d "
            "WHERE a.principal = d.principal AND a.day = d.day"
        )
        con.execute(f"INSERT INTO {t('rp_alert')} BY NAME SELECT * FROM rp_built")
        con.execute("DROP TABLE temp.rp_built")
        con.execute("DROP TABLE temp.rp_touched")

    def findings(self, *, pending: bool = False) -> list[Finding]:
        """Every recorded refusal, grouped per principal per day (one alert each); with
        ``pending``, only the alerts built since they were last :meth:`reported`."""
        where = "WHERE NOT reported" if pending else ""
        rows = self.con.execute(
            f"""SELECT principal, day, first, last, events, subjects, protected, explanation
                FROM {self._t("rp_alert")} {where} ORDER BY principal, day"""
        ).fetchall()
        return [
            Finding(
                rule=RULE,
                severity="high" if protected else "medium",
                principals=(principal,),
                subjects=tuple(subjects),
                events=tuple(ids),
                first_seen=_utc(first),
                last_seen=_utc(last),
                explanation=explanation,
                key=f"{principal}\x1f{day}",
            )
            for principal, day, first, last, ids, subjects, protected, explanation in rows
        ]

    def reported(self, findings: Iterable[Finding]) -> None:
        """Mark the alerts of ``findings`` (replay's) as recorded in the casebook: later runs
        leave them out of :meth:`findings` with ``pending`` until a refusal changes them."""
        keys = [{"key": f.key} for f in findings if f.rule == RULE]
        self._load("rp_reported", keys, {"key": "VARCHAR"})
        self.con.execute(
            f"""UPDATE {self._t("rp_alert")} SET reported = true
                WHERE principal || chr(31) || CAST(day AS VARCHAR)
                      IN (SELECT key FROM rp_reported)"""
        )
        self.con.execute("DROP TABLE temp.rp_reported")


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
    on (``ledger(start)`` yields ``(index, entry)`` in index order). Without a ledger (an
    evaluation of a simulated world), the directory and grants loaded for the run are the
    only state, known since ever (:meth:`PolicyReplay.history_from_directory`)."""

    policy: ReplayPolicy
    ledger: Callable[[int], Iterable[tuple[int, Mapping[str, Any]]]] | None


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
    of ``events`` when ``schema`` is ``main``: nothing is kept), and return the findings not
    yet recorded in the casebook (every one the first time; then those of the principal-days
    the run found something on, and any not marked :func:`replay_reported`) with what was
    done. ``store`` is the event store's identity: another one than last time
    makes replay start again. All in one DuckDB transaction: a failure leaves the kept
    tables as the last run left them. Raises ``duckdb.Error`` on failure."""
    replay = PolicyReplay(con, source.policy, config, schema)
    con.execute("BEGIN")
    try:
        meta = replay.meta()
        if meta.get("store", "") != store:
            replay.reset()
            replay.set_meta(store=store)
        if source.ledger is not None:
            followed = replay_entries(replay, source.ledger)
        else:
            replay.reset()
            replay.history_from_directory()
            followed = 0
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
        found = replay.findings(pending=True)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found, ReplayRun(run.events, run.keys, run.decided, followed, run.found)


def replay_reported(
    con: duckdb.DuckDBPyConnection,
    config: DetectConfig,
    source: ReplaySource,
    findings: Iterable[Finding],
    *,
    schema: str = "main",
) -> None:
    """After the casebook recorded ``findings``: replay's among them are not returned again
    by :func:`run_replay` until a refusal changes them. Raises ``duckdb.Error``."""
    PolicyReplay(con, source.policy, config, schema).reported(findings)


__all__ = [
    "RULE",
    "PolicyReplay",
    "ReplayPolicy",
    "ReplayRun",
    "ReplaySource",
    "replay_entries",
    "replay_reported",
    "run_replay",
]
