"""The rules, as SQL on DuckDB, over four tables (or views) of the same shape wherever they
come from (the custos database, JSON Lines, Parquet):

- ``events(id, time, principal, action, subject, category, purpose, ticket, decision,
  precision, records, source, break_glass, granted, explained)`` — ``time`` a UTC
  ``TIMESTAMP``; ``explained`` is ``ticket`` or ``own_ticket`` where custos's guarded path let
  the access through on its ticket (see below), else null;
- ``principals(id, kind, role, team, manager, country, status, role_since)``;
- ``subjects(id, protected, employee, link_group)`` — ``protected`` the account's own flags
  joined by ``|``; ``link_group`` the smallest id of its link group (null when alone);
- ``tickets(id, kind, subject, assignee, status, opened, closed, opened_by)``.

``id`` is a key of each table (the directory and the event store keep it unique); the
classification joins an event to the ticket it cites by that id alone.

Explanation-based auditing comes first. An access is *explained* when a ticket assigned to
the principal, about that subject, of the kind matching the purpose, was open at the time
(with ``retro_minutes`` of grace either side) and was opened by someone other than the
principal. It is *self-explained* when the only such tickets were opened by the principal
(how a pretext is made), *partly explained* (tier 1) when a ticket of another kind about the
subject was theirs within ``near_days`` or a teammate's ticket about it was open, and
*unexplained* (tier 0) otherwise. One full pass keeps only what is not plainly explained (and
denials, exports, break-glass); every rule then works on that small table, and baselines come
from one more pass counting each principal's activity per period, per hour of day and per
category.

Custos's own decisions need no second look at their tickets: the guarded path checked the
cited ticket against the directory when it let the access through, and its ledger entry says
so (``explained``: ``ticket``, or ``own_ticket`` when the principal opened the ticket; only on
allowed decisions that are neither exports nor break-glass). Those events are taken as
explained as they were decided: the first pass leaves out the ``ticket`` ones and joins none
of them to the tickets, and the activity counts still count all of them.

One person, every account (DESIGN.md principle 11): every account of a link group gets the
group's protected flags (and owning employee), and each event carries its ``person`` (the
link group, or the account itself). Rules about one person (protected people reached, the
2022 hunt, convergence, repeated visits) count people, not accounts. A grant does not explain
reaching an account whose protection comes from a link (``via_link``): the approvers of a
grant on "user-43" need not have known it was a journalist's, and that is the abuse the rule
is for.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb

from custos.detect import grants
from custos.detect.bulk import UNMAPPED, create_bulk_accesses
from custos.detect.config import DetectConfig
from custos.detect.kept import (
    ORIGIN,
    Classification,
    activity_counts,
    bucket,
    decided,
    first_pass,
    mostly_decided,
)
from custos.detect.map_changes import SEVERITIES, create_map_changes
from custos.detect.sql_events import create_sql_events
from custos.times import iso

#: Protected flags with rules of their own: a minor's data alerts for the revealing
#: categories (``minor_categories``), an employee's account is the colleague rule's. Every
#: other flag marks a person whom insiders hunt, whose data always needs an independent
#: explanation: the shipped pack's journalist, public_official and activist, and any flag a
#: pack declares (a ``whistleblower``) — a flag detection did not know must not go unwatched.
SPECIAL_FLAGS = ("minor", "employee_account")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Finding:
    """An alert as a rule found it, before it is stored (and given an id and a case).

    ``key`` identifies the pattern and period, so finding it again updates the same alert.
    """

    rule: str
    severity: str
    principals: tuple[str, ...]
    subjects: tuple[str, ...]
    events: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    explanation: str
    key: str

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.rule}\x1f{self.key}".encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "principals": list(self.principals),
            "subjects": list(self.subjects),
            "events": list(self.events),
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "explanation": self.explanation,
        }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _convergence_rank(row: dict[str, Any]) -> tuple[Any, ...]:
    """Order of preference between windows that flag the same subject: most people, then
    earliest, then most events, then the rest of the row. A total order, so the alert (and
    its key) is the same on every run whatever order DuckDB returns the windows in."""
    return (-len(row["principals"]), row["first"], -row["n"], row["principals"], row["ids"])


def _quote(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "NULL"


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _people(people: int, accounts: int, kind: str) -> str:
    """``1 protected person (2 linked accounts)`` or ``2 protected subjects``."""
    if people == accounts:
        return _plural(accounts, f"{kind} subject")
    return f"{people} {kind} {'person' if people == 1 else 'people'} ({accounts} linked accounts)"


def _via(row: dict[str, Any]) -> str:
    """What to add when some accounts reached are protected only through their links."""
    linked = row.get("via_link") or []
    if not linked:
        return ""
    grant = (
        " A grant on such an account does not explain it: its approvers need not have known "
        "whose account it was."
        if row.get("via_grant")
        else ""
    )
    return (
        f" {', '.join(linked)} {'is' if len(linked) == 1 else 'are'} linked to a protected "
        f"person's account and protected as that person.{grant}"
    )


def _span(first: datetime, last: datetime) -> str:
    a, b = _day(first), _day(last)
    return f"on {a}" if a == b else f"between {a} and {b}"


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection (no progress bar; ``threads`` if given)."""
    config: dict[str, Any] = {}
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET enable_progress_bar = false")
    # Row order of intermediate tables never matters here; not keeping it is faster.
    con.execute("SET preserve_insertion_order = false")
    return con


class Detector:
    """Runs every rule over the four tables of ``con`` (see the module docstring).

    Its working tables (``subj``, ``pr``, ``ev``, ``act_ph``, ``act_pb``, ``rare``) are
    created in ``con``'s database, not as temporary tables, so that cursors of ``con`` see
    them: the rules run side by side, one per DuckDB thread, because each of them alone
    keeps little more than one core busy.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, config: DetectConfig) -> None:
        self._main = con
        self._local = threading.local()
        self.config = config
        self._roles: dict[str, tuple[str, str]] = {}

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection queries go to: the caller's, or a cursor of it on a worker."""
        con: duckdb.DuckDBPyConnection | None = getattr(self._local, "con", None)
        return self._main if con is None else con

    def _side_by_side(self, tasks: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run ``tasks`` (each a few queries) at once on as many workers as DuckDB has
        threads, each worker on its own cursor and DuckDB on one thread per query meanwhile,
        so no more cores are used than configured; results in the order of ``tasks``."""
        row = self._main.execute("SELECT current_setting('threads')").fetchone()
        threads = int(row[0]) if row else 1
        if threads <= 1 or len(tasks) <= 1:
            return [task() for task in tasks]

        def on_cursor(task: Callable[[], _T]) -> _T:
            cursor = self._main.cursor()
            self._local.con = cursor
            try:
                return task()
            finally:
                self._local.con = None
                cursor.close()

        self._main.execute("SET threads = 1")
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                futures = [pool.submit(on_cursor, task) for task in tasks]
                return [future.result() for future in futures]
        finally:
            self._main.execute(f"SET threads = {threads}")

    # -- preparation ---------------------------------------------------------------------

    def prepare(self, kept: Classification | None = None) -> None:
        """Classify the events and count activity: the two full passes over ``events``, or,
        with ``kept``, from its tables (brought up to date with ``events`` and ``tickets`` by
        whoever keeps it; see :class:`Classification`)."""
        # One after the other: each pass keeps every DuckDB thread busy on its own, and side
        # by side (one thread each) the short one would leave a core idle for most of the
        # long one.
        self._facts()
        create_sql_events(self.con)
        create_map_changes(self.con)
        create_bulk_accesses(self.con)
        grants.prepare(self)
        self._classify(kept)
        self._activity(kept)
        for principal, role, team in self.con.execute("SELECT id, role, team FROM pr").fetchall():
            self._roles[principal] = (role, team)

    def _facts(self) -> None:
        """Directory facts per flagged subject and per principal."""
        con = self.con
        special = ", ".join(f"'{f}'" for f in ("", *SPECIAL_FLAGS))
        hv = f"len(list_filter(string_split(protected, '|'), lambda f: f NOT IN ({special}))) > 0"
        con.execute(
            f"""
            CREATE OR REPLACE TABLE subj AS
            WITH s AS (SELECT id, coalesce(link_group, id) AS person, link_group,
                              coalesce(protected, '') AS own, employee
                       FROM subjects),
            -- Linked accounts (few) take the flags and owning employee of their whole group.
            g AS (SELECT person,
                         coalesce(string_agg(DISTINCT flag, '|' ORDER BY flag)
                                  FILTER (WHERE flag <> ''), '') AS flags,
                         min(employee) AS employee
                  FROM (SELECT person, unnest(string_split(own, '|')) AS flag, employee
                        FROM s WHERE link_group IS NOT NULL)
                  GROUP BY person),
            x AS (SELECT s.id, s.person, s.own,
                         CASE WHEN s.link_group IS NULL THEN s.own ELSE g.flags END AS protected,
                         coalesce(s.employee, g.employee) AS employee
                  FROM s LEFT JOIN g ON s.link_group IS NOT NULL AND g.person = s.person)
            SELECT id, person, ({hv}) AS hv,
                   -- Whole flags: a pack's 'minority_advocate' is no minor.
                   list_contains(string_split(protected, '|'), 'minor') AS minor,
                   (employee IS NOT NULL
                    OR list_contains(string_split(protected, '|'), 'employee_account'))
                     AS emp_link,
                   employee, protected,
                   NOT list_has_all(string_split(own, '|'), string_split(protected, '|'))
                     AS via_link
            FROM x
            -- Only people with a flag, an owning employee or a link need facts; others join
            -- to none.
            WHERE protected <> '' OR employee IS NOT NULL OR person <> id
            """
        )
        con.execute(
            """
            CREATE OR REPLACE TABLE pr AS
            SELECT id, coalesce(role, '(unknown)') AS role, coalesce(team, '(unknown)') AS team,
                   coalesce(status, 'active') AS status, role_since
            FROM principals
            """
        )

    def _classify(self, kept: Classification | None) -> None:
        """Pass 1: the residue ``ev``, classified."""
        c = self.config
        con = self.con
        # Pass 1 (see :func:`first_pass`) keeps only what the cited ticket does not plainly
        # explain (a few percent); those rows get their directory facts and the
        # classification their cited ticket gives them in the same statement: copying the
        # residue once more to add the directory's explanations cost as much as finding them.
        if kept is None:
            residue = first_pass("events", c, few=mostly_decided(*decided(con, "events")))
        else:
            residue = f"SELECT * FROM {kept.residue}"
        con.execute(
            f"""
            CREATE OR REPLACE TABLE ev AS
            WITH c AS ({residue}),
            -- A grant on an account protected through its link does not explain reaching it.
            g AS (
                SELECT c.* EXCLUDE (granted),
                       c.granted AND NOT coalesce(s.via_link, false) AS granted,
                       c.granted AS granted_raw,
                       coalesce(s.via_link, false) AS via_link,
                       coalesce(s.person, c.subject) AS person
                FROM c LEFT JOIN subj s ON s.id = c.subject
            ),
            x AS (
                SELECT c.* EXCLUDE (ticket, joined),
                       (c.cited_ok AND NOT c.cited_self) OR c.granted AS indep,
                       (c.cited_ok AND NOT c.cited_self) OR c.granted AS own_indep,
                       CASE WHEN c.cited_ok OR c.granted THEN 2 ELSE 0 END AS tier,
                       c.cited_ok AND NOT c.cited_self AS tk_indep, false AS doubted,
                       coalesce(s.hv, false) AS hv, coalesce(s.minor, false) AS minor,
                       coalesce(s.emp_link, false) AS emp_link, s.employee,
                       coalesce(s.protected, '') AS protected,
                       coalesce(p.team, '(unknown)') AS team,
                       coalesce(p.status, 'active') AS status, p.role_since,
                       {bucket(c, "c.time")} AS bucket, hour(c.time) AS hr
                FROM g c
                LEFT JOIN subj s ON s.id = c.subject
                LEFT JOIN pr p ON p.id = c.principal
            )
            -- The rules read "self-only" as explained only by tickets the principal opened.
            SELECT *, (tier = 2 AND NOT indep) AS self_only FROM x
            """
        )
        # Reads under a grant whose approvers are not independent keep only their ticket's
        # explanation (before the directory's explanations below, which read ``granted``).
        grants.doubt(self)
        retro = f"to_minutes({c.retro_minutes})"
        near = f"to_days({c.near_days})"
        # Explanations found in the directory for what the cited ticket did not explain,
        # written into the residue: only rows with a ticket about the subject change.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE expl AS
            WITH open_q AS (SELECT id, time, principal, subject, purpose, granted FROM ev
                            WHERE NOT cited_ok),
            tq AS (SELECT id, kind, subject, assignee, opened, closed,
                          coalesce(opened_by = assignee, false) AS self
                   FROM tickets WHERE subject IN (SELECT subject FROM open_q)),
            own AS (
                SELECT c.id,
                       bool_or(t.kind = c.purpose
                               AND (t.opened IS NULL OR c.time >= t.opened - {retro})
                               AND (t.closed IS NULL OR c.time <= t.closed + {retro}))
                         AS strict_ok,
                       bool_or(t.kind = c.purpose AND NOT t.self
                               AND (t.opened IS NULL OR c.time >= t.opened - {retro})
                               AND (t.closed IS NULL OR c.time <= t.closed + {retro}))
                         AS strict_indep,
                       bool_or((t.opened IS NULL OR c.time >= t.opened - {near})
                               AND (t.closed IS NULL OR c.time <= t.closed + {near}))
                         AS near_ok,
                       bool_or(NOT t.self
                               AND (t.opened IS NULL OR c.time >= t.opened - {near})
                               AND (t.closed IS NULL OR c.time <= t.closed + {near}))
                         AS near_indep
                FROM open_q c JOIN tq t ON t.assignee = c.principal AND t.subject = c.subject
                GROUP BY c.id
            ),
            team AS (
                SELECT DISTINCT c.id
                FROM open_q c
                JOIN pr p ON p.id = c.principal
                JOIN tq t ON t.subject = c.subject AND t.assignee <> c.principal
                JOIN pr q ON q.id = t.assignee AND q.team = p.team
                WHERE (t.opened IS NULL OR c.time >= t.opened - {retro})
                  AND (t.closed IS NULL OR c.time <= t.closed + {retro})
            ),
            x AS (
                -- The cited ticket did not explain these rows (cited_ok is false).
                SELECT c.id, coalesce(o.strict_indep, false) OR c.granted AS indep,
                       coalesce(o.strict_indep, false) AS tk_indep,
                       coalesce(o.near_indep, false) OR c.granted AS own_indep,
                       CASE WHEN coalesce(o.strict_ok, false) OR c.granted THEN 2
                            WHEN coalesce(o.near_ok, false) OR tm.id IS NOT NULL THEN 1
                            ELSE 0 END AS tier
                FROM open_q c
                LEFT JOIN own o ON o.id = c.id
                LEFT JOIN team tm ON tm.id = c.id
                WHERE o.id IS NOT NULL OR tm.id IS NOT NULL
            )
            SELECT *, (tier = 2 AND NOT indep) AS self_only FROM x
            """
        )
        con.execute(
            """
            UPDATE ev SET indep = x.indep, own_indep = x.own_indep, tier = x.tier,
                          self_only = x.self_only, tk_indep = x.tk_indep
            FROM expl x WHERE ev.id = x.id
            """
        )

    def _activity(self, kept: Classification | None) -> None:
        """Pass 2: activity counts for the baselines (see :func:`activity_counts`)."""
        c = self.config
        con = self.con
        counts = activity_counts("events", c) if kept is None else f"SELECT * FROM {kept.activity}"
        con.execute(f"CREATE OR REPLACE TEMP TABLE act_all AS {counts}")
        counts = "act_all"
        con.execute(
            f"""
            CREATE OR REPLACE TABLE act_ph AS
            SELECT principal, hr, n FROM {counts} WHERE g = 5
            """
        )
        # Categories a principal's peers (same role, the principal left out) almost never use.
        con.execute(
            f"""
            CREATE OR REPLACE TABLE rare AS
            WITH pc AS (
                SELECT a.principal, coalesce(p.role, '(unknown)') AS role, a.category, a.n
                FROM {counts} a LEFT JOIN pr p ON p.id = a.principal
                WHERE a.g = 6
            ),
            rc AS (SELECT role, category, sum(n) AS n FROM pc GROUP BY ALL),
            rt AS (SELECT role, sum(n) AS total FROM pc GROUP BY role),
            pt AS (SELECT principal, sum(n) AS total FROM pc GROUP BY principal)
            SELECT pc.principal, pc.category
            FROM pc JOIN rc USING (role, category) JOIN rt USING (role) JOIN pt USING (principal)
            WHERE rt.total - pt.total >= {c.rare_min_peer_events}
              AND rc.n - pc.n < {c.rare_category_share} * (rt.total - pt.total)
            """
        )
        con.execute(
            f"""
            CREATE OR REPLACE TABLE act_pb AS
            SELECT a.principal, a.bucket, coalesce(p.role, '(unknown)') AS role, a.n
            FROM {counts} a LEFT JOIN pr p ON p.id = a.principal WHERE a.g = 3
            """
        )

    # -- helpers -------------------------------------------------------------------------

    def _who(self, principal: str) -> str:
        role, team = self._roles.get(principal, ("not in the directory", ""))
        return f"{principal} ({role}{', ' + team if team else ''})"

    def _rows(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _grouped(
        self,
        where: str,
        extra: str = "",
        by: str = "principal, bucket",
        source: str = "ev",
        having: str | None = None,
    ) -> str:
        """Evidence lists per group; with ``having``, groups are chosen by a cheap count
        first so the lists are built only for the groups that alert."""
        n = self.config.max_evidence
        if having is not None:
            keys = f"SELECT {by} FROM {source} WHERE {where} GROUP BY {by} HAVING {having}"
            where = f"({where}) AND ({by}) IN (SELECT ({by}) FROM ({keys}))"
        return f"""
            SELECT {by}, list(DISTINCT subject ORDER BY subject) AS subjects,
                   list(id ORDER BY time, id)[1:{n}] AS ids, count(*) AS n,
                   count(DISTINCT subject) AS n_subjects, min(time) AS first, max(time) AS last,
                   list(DISTINCT category ORDER BY category) AS categories,
                   bool_or(precision = 'precise') AS precise {extra}
            FROM {source} WHERE {where} GROUP BY {by}
        """

    def _baseline(self, counts_sql: str, minimum: float) -> str:
        """Principal-periods whose count ``n`` passes the peer (role) baseline and, unless
        the principal's own normal is itself beyond its peers', its own baseline."""
        k = self.config.robust_k
        return f"""
            WITH c AS ({counts_sql}),
            f AS (
                SELECT a.principal, a.bucket, a.role, coalesce(c.n, 0) AS n
                FROM act_pb a LEFT JOIN c ON c.principal = a.principal AND c.bucket = a.bucket
            ),
            rm AS (SELECT role, median(n) AS med, count(DISTINCT principal) AS members
                   FROM f GROUP BY role),
            rs AS (SELECT f.role, any_value(rm.med) AS med, any_value(rm.members) AS members,
                          median(abs(f.n - rm.med)) * 1.4826 AS mad
                   FROM f JOIN rm USING (role) GROUP BY f.role),
            gm AS (SELECT median(n) AS med FROM f),
            gs AS (SELECT any_value(gm.med) AS med, median(abs(f.n - gm.med)) * 1.4826 AS mad
                   FROM f, gm),
            om AS (SELECT principal, median(n) AS med, count(*) AS periods
                   FROM f GROUP BY principal),
            os AS (SELECT f.principal, any_value(om.med) AS med, any_value(om.periods) AS periods,
                          median(abs(f.n - om.med)) * 1.4826 AS mad
                   FROM f JOIN om USING (principal) GROUP BY f.principal),
            t AS (
                SELECT f.principal, f.bucket, f.n,
                       CASE WHEN rs.members >= 5 THEN rs.med + {k} * greatest(rs.mad, 1)
                            ELSE gs.med + {k} * greatest(gs.mad, 1) END AS peer_thr,
                       CASE WHEN rs.members >= 5 THEN rs.med ELSE gs.med END AS peer_med,
                       os.med + {k} * greatest(os.mad, 1) AS own_thr, os.med AS own_med,
                       os.periods
                FROM f JOIN rs USING (role) JOIN os USING (principal), gs
            )
            SELECT principal, bucket, n, peer_thr, peer_med, own_thr, own_med FROM t
            WHERE n >= {minimum} AND n > peer_thr
              AND (periods < {self.config.own_min_periods} OR own_med >= peer_thr
                   OR n > own_thr)
        """

    # -- the rules -----------------------------------------------------------------------

    def run(self, kept: Classification | None = None) -> list[Finding]:
        """Prepare (see :meth:`prepare`), then run every rule; findings sorted by first time
        seen."""
        self.prepare(kept)
        return self.run_rules()

    def run_rules(self) -> list[Finding]:
        """Run every rule on prepared tables (see :meth:`prepare`)."""
        # Longest first (as measured at 10^7 events), so that the workers running them side
        # by side finish together instead of one waiting on a long rule started last.
        rules: list[Callable[[], list[Finding]]] = [
            self.deny_retry,
            self.repeated_subject,
            self.off_hours_access,
            self.convergence,
            self.pretext_tickets,
            self.leak_hunt,
            self.protected_subject_access,
            self.bulk_export,
            self.break_glass_use,
            self.unexplained_volume,
            self.sensitive_category_access,
            self.leaving_staff_access,
            self.colleague_account_access,
            self.new_role_access,
            self.protected_subject_attempt,
            self.rare_category_access,
            self.sql_probing,
            self.data_map_weakened,
            self.bulk_read,
            *(lambda rule=rule: rule(self) for rule in grants.RULES),
        ]
        findings = [f for found in self._side_by_side(rules) for f in found]
        return sorted(findings, key=lambda f: (f.first_seen, f.rule, f.principals))

    def _finding(
        self,
        rule: str,
        severity: str,
        row: dict[str, Any],
        explanation: str,
        key: str,
        principals: Sequence[str] | None = None,
    ) -> Finding:
        return Finding(
            rule=rule,
            severity=severity,
            principals=tuple(principals if principals is not None else [row["principal"]]),
            subjects=tuple(row["subjects"]),
            events=tuple(row["ids"]),
            first_seen=_utc(row["first"]),
            last_seen=_utc(row["last"]),
            explanation=explanation,
            key=key,
        )

    def _severe(self, row: dict[str, Any]) -> bool:
        # The configured lists, so a pack's category (health) can be made grave too; the
        # defaults of sensitive_categories are the messages and credentials named here before.
        grave = set(self.config.locating_categories) | set(self.config.sensitive_categories)
        return bool(row.get("precise")) or bool(grave & set(row["categories"]))

    def protected_subject_access(self) -> list[Finding]:
        """Journalists, officials, activists (any category) and minors (revealing categories)
        reached without an independent explanation."""
        minors = _quote(self.config.minor_categories)
        sql = self._grouped(
            "decision = 'allow' AND ((hv AND NOT own_indep) "
            f"OR (minor AND tier = 0 AND category IN ({minors})))",
            ", list(DISTINCT protected) AS flags, count(DISTINCT person) AS n_people, "
            "list(DISTINCT subject ORDER BY subject) FILTER (WHERE via_link) AS via_link, "
            "bool_or(via_link AND granted_raw) AS via_grant",
        )
        out = []
        for row in self._rows(sql):
            flags = sorted({f for fs in row["flags"] for f in fs.split("|") if f})
            out.append(
                self._finding(
                    "protected_subject_access",
                    "critical" if self._severe(row) else "high",
                    row,
                    f"{self._who(row['principal'])} accessed data of "
                    f"{_people(row['n_people'], row['n_subjects'], 'protected')} "
                    f"({', '.join(flags)}) {row['n']} time(s) {_span(row['first'], row['last'])} "
                    f"({', '.join(row['categories'])}) with no ticket assigned to them about "
                    f"those subjects, of a matching kind, opened by someone else.{_via(row)}",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def protected_subject_attempt(self) -> list[Finding]:
        """Attempts on journalists', officials' and activists' data that custos refused or
        held for approval, with no independent explanation: the access was stopped, but the
        intent is what the 2022 case was made of, and people should see it."""
        sql = self._grouped(
            "decision <> 'allow' AND hv AND NOT own_indep",
            ", list(DISTINCT protected) AS flags, count(DISTINCT person) AS n_people",
        )
        out = []
        for row in self._rows(sql):
            flags = sorted({f for fs in row["flags"] for f in fs.split("|") if f})
            out.append(
                self._finding(
                    "protected_subject_attempt",
                    "high",
                    row,
                    f"{self._who(row['principal'])} tried {row['n']} time(s) "
                    f"{_span(row['first'], row['last'])} to reach data of "
                    f"{_people(row['n_people'], row['n_subjects'], 'protected')} "
                    f"({', '.join(flags)}; "
                    f"{', '.join(row['categories'])}) without an independent explanation; "
                    "custos refused or held the access for approval.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def colleague_account_access(self) -> list[Finding]:
        """Accounts of employees (colleagues, or one's own) reached without a ticket."""
        sql = self._grouped(
            "decision = 'allow' AND tier = 0 AND emp_link",
            ", bool_or(employee = principal) AS own",
        )
        out = []
        for row in self._rows(sql):
            own = " (including their own account)" if row["own"] else ""
            out.append(
                self._finding(
                    "colleague_account_access",
                    "critical" if self._severe(row) else "high",
                    row,
                    f"{self._who(row['principal'])} looked up "
                    f"{_plural(row['n_subjects'], 'account')} belonging to employees{own} "
                    f"{row['n']} time(s) {_span(row['first'], row['last'])} "
                    f"({', '.join(row['categories'])}) with no ticket of their own explaining it.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def leak_hunt(self) -> list[Finding]:
        """The 2022 pattern: within one team and period, locating data of protected people
        (journalists, activists, officials, any flag a pack adds but minors and employees)
        pulled without independent explanation, and
        locating data of employees' accounts pulled too."""
        loc = _quote(self.config.locating_categories)
        a_rows = self._rows(
            f"""SELECT DISTINCT team, bucket FROM ev
                WHERE decision = 'allow' AND NOT own_indep AND hv AND category IN ({loc})"""
        )
        if not a_rows:
            return []
        n = self.config.max_evidence
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE hunt_teams AS SELECT * FROM (VALUES "
            + ", ".join(f"({_quote([r['team']])}, TIMESTAMP '{r['bucket']}')" for r in a_rows)
            + ") v(team, bucket)"
        )
        rows = self._rows(
            f"""
            WITH side_a AS (
                SELECT id, time, principal, subject, person, team, bucket, 'a' AS side,
                       protected
                FROM ev
                WHERE decision = 'allow' AND NOT own_indep AND hv AND category IN ({loc})
            ),
            side_b AS (
                SELECT e.id, e.time, e.principal, e.subject, e.person, e.team, e.bucket,
                       'b' AS side, NULL AS protected
                FROM ev e JOIN hunt_teams h ON h.team = e.team AND h.bucket = e.bucket
                WHERE e.decision = 'allow' AND e.category IN ({loc}) AND e.emp_link
                  AND e.employee IS DISTINCT FROM e.principal
                  AND NOT e.indep
            ),
            both_sides AS (SELECT * FROM side_a UNION ALL SELECT * FROM side_b)
            SELECT team, bucket, list(DISTINCT principal ORDER BY principal) AS principals,
                   list(DISTINCT subject ORDER BY subject) AS subjects,
                   list(DISTINCT id ORDER BY id)[1:{n}] AS ids, count(DISTINCT id) AS n,
                   count(DISTINCT person) FILTER (WHERE side = 'a') AS n_protected,
                   count(DISTINCT person) FILTER (WHERE side = 'b') AS n_employees,
                   list(DISTINCT protected) FILTER (WHERE side = 'a') AS flags,
                   min(time) AS first, max(time) AS last
            FROM both_sides GROUP BY team, bucket
            HAVING count(*) FILTER (WHERE side = 'b') > 0
            """
        )
        out = []
        for row in rows:
            people = row["principals"]
            flags = sorted(
                {f for fs in row["flags"] or () for f in fs.split("|") if f} - set(SPECIAL_FLAGS)
            )
            out.append(
                self._finding(
                    "leak_hunt",
                    "critical",
                    row,
                    f"{_plural(len(people), 'member')} of team {row['team']} "
                    f"({', '.join(people)}) pulled IP, device or location data of "
                    f"{row['n_protected']} protected "
                    f"{'person' if row['n_protected'] == 1 else 'people'} ({', '.join(flags)}) "
                    "without an independent explanation, and of "
                    f"{_plural(row['n_employees'], 'employee-linked account')}, in the same "
                    f"period {_span(row['first'], row['last'])}: the pattern of hunting a "
                    "reporter's sources among staff.",
                    f"{row['team']}|{row['bucket']}",
                    principals=people,
                )
            )
        return out

    def repeated_subject(self) -> list[Finding]:
        """The same subject (or person: linked accounts are one) reached without a ticket on
        several separate occasions (visits more than ``repeat_gap_hours`` apart, so a night
        shift is one visit): stalking."""
        c = self.config
        cond = "decision = 'allow' AND (tier = 0 OR self_only)"
        # The window runs only on pairs that could reach the bar: k visits need k accesses
        # and k - 1 gaps longer than repeat_gap_hours (a row without a time is a visit of its
        # own, so such pairs stay in). Most pairs are one ticket's burst and drop out here.
        span = c.repeat_gap_hours * (c.repeat_min_days - 1)
        spread = (
            f" AND (max(time) - min(time) > to_hours({span}) OR count(time) < count(*))"
            if c.repeat_min_days > 1
            else ""
        )
        pairs = (
            f"SELECT principal, person FROM ev WHERE {cond} GROUP BY principal, person "
            f"HAVING count(*) >= {c.repeat_min_days}{spread}"
        )
        visits = f"""(SELECT *, CASE WHEN time - lag(time) OVER w <= to_hours({c.repeat_gap_hours})
                                 THEN 0 ELSE 1 END AS fresh
                      FROM ev WHERE {cond} AND (principal, person) IN (SELECT (principal, person)
                                                                     FROM ({pairs}))
                      WINDOW w AS (PARTITION BY principal, person ORDER BY time)) v"""
        sql = self._grouped(
            "true",
            ", sum(fresh) AS visits",
            by="principal, person",
            source=visits,
            having=f"sum(fresh) >= {c.repeat_min_days}",
        )
        out = []
        for row in self._rows(sql):
            out.append(
                self._finding(
                    "repeated_subject",
                    "critical" if self._severe(row) else "high",
                    row,
                    f"{self._who(row['principal'])} returned to the same subject on "
                    f"{row['visits']} separate occasions {_span(row['first'], row['last'])} "
                    f"({row['n']} accesses: {', '.join(row['categories'])}) with no ticket "
                    "opened by someone else explaining any of them — the pattern of following "
                    "one person.",
                    f"{row['principal']}|{row['person']}",
                )
            )
        return out

    def _counted(self, where: str, measure: str, minimum: float) -> list[dict[str, Any]]:
        counts = f"SELECT principal, bucket, {measure} AS n FROM ev WHERE {where} GROUP BY ALL"
        source = f"ev JOIN ({self._baseline(counts, minimum)}) h USING (principal, bucket)"
        return self._rows(
            self._grouped(
                where,
                ", sum(records) AS records, any_value(h.peer_med) AS peer_med, "
                "any_value(h.own_med) AS own_med",
                source=source,
            )
        )

    def unexplained_volume(self) -> list[Finding]:
        """Many distinct subjects reached without any explanation, beyond the principal's
        peers (same role) and their own usual level (bulk curiosity, paid lookups)."""
        where = "decision = 'allow' AND tier = 0"
        out = []
        for row in self._counted(where, "count(DISTINCT subject)", self.config.volume_min_subjects):
            out.append(
                self._finding(
                    "unexplained_volume",
                    "high",
                    row,
                    f"{self._who(row['principal'])} reached "
                    f"{row['n_subjects']} different subjects with no ticket explaining them "
                    f"{_span(row['first'], row['last'])} ({', '.join(row['categories'])}); "
                    f"people in the same role typically reach {row['peer_med']:g} per "
                    f"{self.config.window_days} days that way, and they themselves "
                    f"{row['own_med']:g}.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def convergence(self) -> list[Finding]:
        """Many principals reaching one subject without tickets within a few hours or days
        (a newsworthy person). Two offset bucketings catch bursts across a boundary."""
        c = self.config
        hours = max(c.convergence_hours, 1)
        n = c.max_evidence
        found: dict[str, dict[str, Any]] = {}
        self.con.execute(
            """
            CREATE OR REPLACE TEMP TABLE conv AS
            SELECT * FROM ev WHERE decision = 'allow' AND tier = 0 AND person IN (
                SELECT person FROM ev WHERE decision = 'allow' AND tier = 0
                GROUP BY person HAVING count(DISTINCT principal) >= 2)
            """
        )
        for offset in (0, hours // 2):
            rows = self._rows(
                f"""
                SELECT person, time_bucket(to_hours({hours}), time,
                       {ORIGIN} + to_hours({offset})) AS b,
                       list(DISTINCT subject ORDER BY subject) AS accounts,
                       list(DISTINCT principal ORDER BY principal) AS principals,
                       list(id ORDER BY time, id)[1:{n}] AS ids, count(*) AS n,
                       min(time) AS first, max(time) AS last, bool_or(hv OR minor) AS guarded,
                       list(DISTINCT category ORDER BY category) AS categories
                FROM conv
                GROUP BY ALL
                HAVING count(DISTINCT principal) >=
                       CASE WHEN bool_or(hv OR minor OR emp_link)
                            THEN greatest({c.convergence_min_principals} - 1, 2)
                            ELSE {c.convergence_min_principals} END
                """
            )
            for row in rows:
                best = found.get(row["person"])
                if best is None or _convergence_rank(row) < _convergence_rank(best):
                    found[row["person"]] = row
        out = []
        # One person, every account: a burst spread over a person's linked accounts is one.
        for subject, row in found.items():
            people = row["principals"]
            row["subjects"] = row["accounts"]
            out.append(
                self._finding(
                    "convergence",
                    "high",
                    row,
                    f"{len(people)} different people ({', '.join(people)}) looked up the "
                    f"same {'subject' if len(row['accounts']) == 1 else 'person'} "
                    f"{_span(row['first'], row['last'])} "
                    f"({', '.join(row['categories'])}) with no ticket explaining it: curiosity "
                    "about a person in the news looks like this.",
                    f"{subject}|{_day(row['first'])}",
                    principals=people,
                )
            )
        return out

    def sensitive_category_access(self) -> list[Finding]:
        """Credentials or private messages, or any precise value, reached without a ticket;
        and credentials changed under anything less than an independent explanation (the
        account-takeover-for-hire pattern)."""
        cats = _quote(self.config.sensitive_categories)
        sql = self._grouped(
            f"decision = 'allow' AND ((tier = 0 AND (category IN ({cats}) "
            "OR precision = 'precise')) "
            "OR (action = 'modify' AND category = 'credentials' AND NOT indep))",
            ", count(*) FILTER (WHERE action = 'modify') AS changes, "
            "count(*) FILTER (WHERE precision = 'precise') AS precise_n",
        )
        out = []
        for row in self._rows(sql):
            notes = []
            if row["changes"]:
                notes.append(f"{row['changes']} of them changed credentials")
            if row["precise_n"]:
                notes.append(f"{row['precise_n']} released precise values")
            extra = f" ({'; '.join(notes)})" if notes else ""
            out.append(
                self._finding(
                    "sensitive_category_access",
                    "critical" if row["changes"] or row["precise_n"] else "high",
                    row,
                    f"{self._who(row['principal'])} reached "
                    f"{', '.join(row['categories'])} of "
                    f"{_plural(row['n_subjects'], 'subject')} {row['n']} time(s) "
                    f"{_span(row['first'], row['last'])}{extra} with no ticket opened by "
                    "someone else explaining it; such data is touched only for a specific case.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def new_role_access(self) -> list[Finding]:
        """Unexplained access in the first days after a role change."""
        c = self.config
        sql = self._grouped(
            f"""decision = 'allow' AND tier = 0 AND role_since IS NOT NULL
                AND time >= role_since AND time < role_since + to_days({c.new_role_days})""",
            ", any_value(role_since) AS since",
            by="principal",
        )
        sql = f"SELECT * FROM ({sql}) WHERE n_subjects >= {c.new_role_min_subjects}"
        out = []
        for row in self._rows(sql):
            out.append(
                self._finding(
                    "new_role_access",
                    "medium",
                    row,
                    f"{self._who(row['principal'])}, in this role since {_day(row['since'])}, "
                    f"reached {row['n_subjects']} subjects with no ticket explaining them in "
                    f"their first {c.new_role_days} days ({', '.join(row['categories'])}).",
                    f"{row['principal']}|{_day(row['since'])}",
                )
            )
        return out

    def leaving_staff_access(self) -> list[Finding]:
        """Unexplained access or exports by staff who are leaving."""
        c = self.config
        sql = self._grouped(
            "status = 'leaving' AND decision = 'allow' AND tier = 0",
            ", count(*) FILTER (WHERE action = 'export') AS exports, sum(records) AS records",
        )
        sql = f"SELECT * FROM ({sql}) WHERE n_subjects >= {c.leaving_min_subjects} OR exports > 0"
        out = []
        for row in self._rows(sql):
            exported = (
                f", including {row['exports']} export(s) of {int(row['records'])} records"
                if row["exports"]
                else ""
            )
            out.append(
                self._finding(
                    "leaving_staff_access",
                    "high" if row["exports"] else "medium",
                    row,
                    f"{self._who(row['principal'])} is leaving and reached "
                    f"{_plural(row['n_subjects'], 'subject')} with no ticket explaining it "
                    f"{_span(row['first'], row['last'])}{exported}.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def bulk_export(self) -> list[Finding]:
        """Exports and searches returning many records without a ticket, beyond peers."""
        where = "decision = 'allow' AND NOT indep AND action IN ('export', 'search')"
        out = []
        for row in self._counted(where, "sum(records)", self.config.export_min_records):
            out.append(
                self._finding(
                    "bulk_export",
                    "high",
                    row,
                    f"{self._who(row['principal'])} exported or searched "
                    f"{int(row['records'])} records about "
                    f"{_plural(row['n_subjects'], 'subject')} with no ticket explaining it "
                    f"{_span(row['first'], row['last'])}; people in the same role typically "
                    f"move {row['peer_med']:g} records that way per {self.config.window_days} "
                    "days.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def off_hours_access(self) -> list[Finding]:
        """Unexplained access outside the hours the principal (or, with too little history,
        their team) usually works."""
        c = self.config
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE usual AS
            WITH ph AS (SELECT principal, hr, n FROM act_ph),
            pt AS (SELECT principal, sum(n) AS total FROM ph GROUP BY ALL),
            th AS (SELECT p.team, ph.hr, sum(ph.n) AS n FROM ph JOIN pr p ON p.id = ph.principal
                   GROUP BY ALL),
            tt AS (SELECT team, sum(n) AS total FROM th GROUP BY ALL),
            own AS (SELECT ph.principal, ph.hr FROM ph JOIN pt USING (principal)
                    WHERE pt.total >= {c.usual_min_events}
                      AND ph.n >= {c.usual_hour_share} * pt.total),
            byteam AS (SELECT pt.principal, th.hr FROM pt JOIN pr p ON p.id = pt.principal
                       JOIN th ON th.team = p.team JOIN tt ON tt.team = p.team
                       WHERE pt.total < {c.usual_min_events}
                         AND th.n >= {c.usual_hour_share} * tt.total),
            base AS (SELECT * FROM own UNION SELECT * FROM byteam)
            SELECT DISTINCT principal, (hr + d + 24) % 24 AS hr
            FROM base, (VALUES (-1), (0), (1)) v(d)
            """
        )
        # NOT EXISTS rather than NOT IN: NOT IN must watch for NULLs in the list, which makes
        # DuckDB mark every row instead of running an anti join (a NULL hour, from a row
        # without a time, still compares as equal to a NULL hour, as it did in the row IN).
        sql = self._grouped(
            "decision = 'allow' AND tier = 0 AND principal IN (SELECT principal FROM usual) "
            "AND NOT EXISTS (SELECT 1 FROM usual u WHERE u.principal = ev.principal "
            "AND u.hr IS NOT DISTINCT FROM ev.hr)",
            ", list(DISTINCT hr ORDER BY hr) AS hours",
        )
        sql = f"SELECT * FROM ({sql}) WHERE n_subjects >= {c.off_hours_min_subjects}"
        out = []
        for row in self._rows(sql):
            hours = ", ".join(f"{h:02d}:00" for h in row["hours"])
            out.append(
                self._finding(
                    "off_hours_access",
                    "medium",
                    row,
                    f"{self._who(row['principal'])} reached "
                    f"{row['n_subjects']} subjects with no ticket explaining them at hours they "
                    f"do not usually work (UTC {hours}) {_span(row['first'], row['last'])}.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def sql_probing(self) -> list[Finding]:
        """Guarded SQL refused again and again (``sql_probing_refusals`` queries within
        ``sql_probing_minutes``): someone feeling for the edges of the analyzer and the
        policies. An aggregate refused for one of ``sql_hunt_purposes`` alerts on its own,
        as critical (see :mod:`custos.detect.sql_events`)."""
        c = self.config
        n = c.max_evidence
        hunt = _quote(c.sql_hunt_purposes)
        rows = self._rows(
            f"""
            WITH r AS (SELECT * FROM sql_events WHERE decision <> 'allow'),
            -- One refused query is one attempt, however many categories it was refused on.
            q AS (SELECT principal, query, min(time) AS time FROM r GROUP BY ALL),
            w AS (
                SELECT *, count(*) OVER (
                           PARTITION BY principal ORDER BY time
                           RANGE BETWEEN CURRENT ROW
                                 AND to_minutes({c.sql_probing_minutes}) FOLLOWING) AS n
                FROM q
            ),
            -- Attempts inside a window that opened at least the threshold's number of them.
            burst AS (
                SELECT principal, query FROM (
                    SELECT principal, query, max(CASE WHEN n >= {c.sql_probing_refusals}
                                                      THEN 1 ELSE 0 END) OVER (
                               PARTITION BY principal ORDER BY time
                               RANGE BETWEEN to_minutes({c.sql_probing_minutes}) PRECEDING
                                     AND CURRENT ROW) AS inside
                    FROM w)
                WHERE inside = 1
            ),
            flagged AS (
                SELECT * FROM (
                    SELECT r.*, r.kind = 'aggregate' AND r.purpose IN ({hunt}) AS hunting,
                           (r.principal, r.query) IN (SELECT (principal, query) FROM burst)
                             AS probing,
                           {bucket(c, "r.time")} AS bucket
                    FROM r)
                WHERE hunting OR probing
            )
            SELECT principal, bucket, list(id ORDER BY time, id)[1:{n}] AS ids,
                   count(DISTINCT query) AS n, min(time) AS first, max(time) AS last,
                   count(DISTINCT query) FILTER (WHERE kind = 'refused') AS n_refused,
                   count(DISTINCT query) FILTER (WHERE kind = 'aggregate') AS n_aggregate,
                   count(DISTINCT query) FILTER (WHERE hunting) AS n_hunting,
                   count(DISTINCT query) FILTER (WHERE probing) AS n_probing,
                   list(DISTINCT code ORDER BY code) FILTER (WHERE code IS NOT NULL) AS codes,
                   list(DISTINCT dataset ORDER BY dataset)
                     FILTER (WHERE dataset IS NOT NULL) AS datasets,
                   list(DISTINCT category ORDER BY category)
                     FILTER (WHERE hunting AND category IS NOT NULL) AS hunted,
                   list(DISTINCT purpose ORDER BY purpose)
                     FILTER (WHERE hunting) AS hunt_purposes
            FROM flagged GROUP BY principal, bucket
            """
        )
        out = []
        for row in rows:
            parts = []
            if row["n_refused"]:
                codes = ", ".join(row["codes"] or [])
                queries = "query" if row["n_refused"] == 1 else "queries"
                parts.append(
                    f"{row['n_refused']} {queries} custos's SQL analyzer would not run ({codes})"
                )
            if row["n_aggregate"]:
                parts.append(f"{_plural(row['n_aggregate'], 'count')} the policies refused")
            datasets = ", ".join(row["datasets"] or []) or "its sources"
            text = (
                f"{self._who(row['principal'])} had {' and '.join(parts)} on {datasets} "
                f"{_span(row['first'], row['last'])}."
            )
            if row["n_probing"]:
                text += (
                    f" {row['n_probing']} of them came at least {c.sql_probing_refusals} to a "
                    f"{c.sql_probing_minutes}-minute window: trying query after query for one the "
                    "analyzer lets through (joins, searches on people's columns, patterns on "
                    "addresses) is how someone looks for a way around it."
                )
            if row["n_hunting"]:
                hunted = ", ".join(row["hunted"] or []) or "personal data"
                text += (
                    f" {_plural(row['n_hunting'], 'count')} of {hunted} over many people was "
                    f"asked for {' or '.join(row['hunt_purposes'])}: counting people's logins "
                    "by network or place is how a reporter's sources are hunted among staff."
                )
            row["subjects"] = []
            out.append(
                self._finding(
                    "sql_probing",
                    "critical" if row["n_hunting"] else "high",
                    row,
                    text,
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def data_map_weakened(self) -> list[Finding]:
        """A ledgered data map that weakens how guarded SQL protects some data, against the
        maps before it (see :mod:`custos.detect.map_changes`): one alert per map, naming
        every weakening, as severe as the worst of them."""
        rows = self._rows(
            "SELECT c.*, u.used, u.principal AS used_by, u.time AS used_at FROM ("
            " SELECT entry, any_value(time) AS time, any_value(digest) AS digest,"
            " list(struct_pack(kind, severity, change, why) ORDER BY change) AS items"
            " FROM map_changes GROUP BY entry) c"
            " LEFT JOIN (SELECT entry, min_by(used, used) AS used,"
            " min_by(principal, used) AS principal, min_by(time, used) AS time"
            " FROM map_uses GROUP BY entry) u ON u.entry = c.entry ORDER BY c.entry"
        )
        n = self.config.max_evidence
        out = []
        for row in rows:
            items = sorted(
                row["items"], key=lambda i: (-SEVERITIES.index(i["severity"]), i["change"])
            )
            worst = items[0]["severity"]
            listed = "; ".join(f"{i['change']} ({i['severity']}: {i['why']})" for i in items[:n])
            more = f"; and {len(items) - n} more" if len(items) > n else ""
            when = _utc(row["time"]).strftime("%Y-%m-%d %H:%M UTC")
            text = (
                f"The data map custos started using at {when} (ledger entry {row['entry']}, "
                f"digest {row['digest'][:12]}) weakens how guarded SQL protects data it mapped "
                f"before: {_plural(len(items), 'change')}: {listed}{more}. The entry names no "
                "author: the map is the file sources.yaml in custos's home, so whoever can "
                "write that file made the change, and it took effect the first time a query "
                "or `custos sources check` read it."
            )
            if row["used"] is not None:
                used_at = _utc(row["used_at"]).strftime("%Y-%m-%d %H:%M UTC")
                who = self._who(row["used_by"])
                text += (
                    f" The first guarded SQL query decided under it was {who}'s at {used_at} "
                    f"(ledger entry {row['used']}): the first person to ask about the change."
                )
            else:
                text += " No guarded SQL query has been decided under it yet."
            text += (
                " Find out who edited it and why; restore the earlier mapping unless the change "
                "was meant."
            )
            row.update(subjects=[], ids=[f"ledger-{row['entry']}"], first=row["time"])
            row["last"] = row["time"]
            out.append(
                self._finding("data_map_weakened", worst, row, text, f"ledger-{row['entry']}", [])
            )
        return out

    def bulk_read(self) -> list[Finding]:
        """Personal data of many people read outside custos: statements or calls found in an
        audit log that read a mapped table without naming anyone (``bulk_accesses``, see
        :mod:`custos.detect.bulk`). One alert per person (or unmapped actor) and period.

        ``critical`` when values of a locating category (``locating_categories``), messages
        or credentials were read at precise precision — everyone's IP addresses, the 2022
        pull; ``high`` for values of any other category; ``medium`` when only aggregates
        were read (a count or a sum leaves no one's value, but nothing checked why)."""
        c = self.config
        grave = _quote(sorted({*c.locating_categories, "messages", "credentials"}))
        rows = self._rows(
            f"""
            SELECT principal, {bucket(c, "time")} AS bucket,
                   list(id ORDER BY time, id)[1:{c.max_evidence}] AS ids,
                   count(*) AS n, count(DISTINCT digest) AS shapes,
                   min(time) AS first, max(time) AS last,
                   bool_and(mapped) AS mapped, min(actor) AS actor,
                   list(DISTINCT category ORDER BY category) AS categories,
                   list(DISTINCT category ORDER BY category)
                     FILTER (WHERE scope <> 'aggregate') AS values_read,
                   list(DISTINCT object ORDER BY object) AS objects,
                   count(*) FILTER (WHERE scope = 'table') AS n_table,
                   count(*) FILTER (WHERE scope = 'range') AS n_range,
                   count(*) FILTER (WHERE scope = 'aggregate') AS n_aggregate,
                   count(*) FILTER (WHERE action = 'export') AS n_export,
                   sum(rows) FILTER (WHERE scope <> 'aggregate') AS rows,
                   bool_or(scope <> 'aggregate' AND precision = 'precise'
                           AND category IN ({grave})) AS grave
            FROM bulk_accesses
            WHERE decision = 'allow' AND action IN ('read', 'export', 'search')
            GROUP BY ALL
            """
        )
        out = []
        for row in rows:
            principal = str(row["principal"])
            who = (
                self._who(principal)
                if row["mapped"]
                else f"{principal.removeprefix(UNMAPPED)!r}, which the log mapping names no "
                "one for,"
            )
            kinds = []
            for key, word in (
                ("n_table", "every row of a table"),
                ("n_range", "rows chosen by a condition that names no one"),
                ("n_aggregate", "only a count or sum"),
            ):
                if row[key]:
                    kinds.append(f"{row[key]} {word}")
            statements = _plural(int(row["n"]), "statement")
            if row["shapes"] != row["n"]:
                statements += f" ({row['shapes']} distinct)"
            text = (
                f"{who} read {', '.join(row['categories'])} of many people outside custos: "
                f"{statements} on {', '.join(row['objects'])} {_span(row['first'], row['last'])}"
                f" ({'; '.join(kinds)}"
                + (f"; {row['n_export']} copied out" if row["n_export"] else "")
                + (f"; {row['rows']} rows as logged" if row["rows"] is not None else "")
                + "). No custos decision, ticket or stated purpose covers them: the read went "
                "around the guarded path, so nothing checked why, and no one can say whose "
                "data it was for."
            )
            if row["grave"]:
                severity = "critical"
                text += (
                    " Reading everyone's IP addresses or places straight from the tables is "
                    "how the 2022 hunt for journalists' sources was done."
                )
            elif row["values_read"]:
                severity = "high"
            else:
                severity = "medium"
                text += " Only aggregates were read: no one's values left, so it ranks lower."
            row["subjects"] = []
            out.append(
                self._finding("bulk_read", severity, row, text, f"{principal}|{row['bucket']}")
            )
        return out

    def deny_retry(self) -> list[Finding]:
        """Denied, then tried again on the same subject with other purposes (purpose
        shopping) or until something unexplained got through; or many denials."""
        c = self.config
        n = c.max_evidence
        rows = self._rows(
            f"""
            WITH d AS (SELECT * FROM ev WHERE decision <> 'allow'),
            later AS (
                SELECT * FROM ev WHERE (decision <> 'allow' OR tier = 0)
                  AND (principal, subject) IN (SELECT (principal, subject) FROM d)
            ),
            -- A pair is flagged only with two purposes or more among its denials and tries,
            -- all of which are in later: pairs with one purpose need no tries.
            multi AS (
                SELECT principal, subject FROM later GROUP BY principal, subject
                HAVING count(DISTINCT purpose) >= {min(c.shopping_min_purposes, 2)}
            ),
            tries AS (
                SELECT d.principal, d.subject, d.bucket, d.id AS deny_id, d.purpose AS p0,
                       a.id AS try_id, a.purpose AS p1, a.time AS t1,
                       (a.decision = 'allow' AND a.tier = 0) AS got_through
                FROM d LEFT JOIN later a ON a.principal = d.principal AND a.subject = d.subject
                     AND a.time > d.time AND a.time <= d.time + to_minutes({c.retry_minutes})
                     AND a.id <> d.id
                WHERE (d.principal, d.subject) IN (SELECT (principal, subject) FROM multi)
            ),
            pair AS (
                SELECT principal, subject, bucket,
                       count(DISTINCT deny_id) AS denials,
                       list_distinct(list(p0) || list(p1) FILTER (WHERE p1 IS NOT NULL))
                         AS purposes,
                       coalesce(bool_or(got_through), false) AS got_through,
                       list_distinct(list(deny_id)
                                     || list(try_id) FILTER (WHERE try_id IS NOT NULL)) AS ids
                FROM tries GROUP BY ALL
            ),
            flagged AS (
                SELECT * FROM pair
                WHERE len(purposes) >= {c.shopping_min_purposes}
                   OR (len(purposes) >= 2 AND got_through)
            ),
            per AS (
                SELECT principal, bucket, count(*) AS n_denials FROM d GROUP BY ALL
            )
            SELECT per.principal, per.bucket, per.n_denials,
                   coalesce(list(f.subject ORDER BY f.subject)
                            FILTER (WHERE f.subject IS NOT NULL), []) AS subjects,
                   coalesce(flatten(list(f.ids) FILTER (WHERE f.ids IS NOT NULL)), [])
                     AS flagged_ids,
                   coalesce(max(len(f.purposes)), 0) AS max_purposes,
                   coalesce(bool_or(f.got_through), false) AS got_through
            FROM per LEFT JOIN flagged f ON f.principal = per.principal AND f.bucket = per.bucket
            GROUP BY per.principal, per.bucket, per.n_denials
            HAVING count(f.subject) > 0
            """
        )
        counts = (
            "SELECT principal, bucket, count(*) AS n FROM ev WHERE decision <> 'allow' GROUP BY ALL"
        )
        seen = {(r["principal"], r["bucket"]) for r in rows}
        for hit in self._rows(self._baseline(counts, c.retry_min_denials)):
            if (hit["principal"], hit["bucket"]) not in seen:
                rows.append(
                    {
                        "principal": hit["principal"],
                        "bucket": hit["bucket"],
                        "n_denials": int(hit["n"]),
                        "subjects": [],
                        "flagged_ids": [],
                        "max_purposes": 0,
                        "got_through": False,
                    }
                )
        out = []
        for row in rows:
            ids = list(row["flagged_ids"])
            if not ids:
                ids = [
                    r[0]
                    for r in self.con.execute(
                        "SELECT id FROM ev WHERE decision <> 'allow' AND principal = ? "
                        f"AND bucket = ? ORDER BY time, id LIMIT {n}",
                        [row["principal"], row["bucket"]],
                    ).fetchall()
                ]
            # Evidence in time order, so the same events are kept under the cap every run.
            times = self.con.execute(
                "SELECT min(time), max(time), list(DISTINCT subject ORDER BY subject), "
                "list(id ORDER BY time, id) FROM ev WHERE list_contains(?, id)",
                [ids],
            ).fetchone()
            assert times is not None
            row.update(first=times[0], last=times[1], ids=times[3][:n], subjects=times[2])
            if row["max_purposes"]:
                through = " and got through without a ticket explaining it"
                what = (
                    "after being refused, tried again on "
                    f"{_plural(len(row['subjects']), 'subject')} with up to "
                    f"{row['max_purposes']} different purposes"
                    + (through if row["got_through"] else "")
                )
            else:
                what = f"was refused {row['n_denials']} times"
            out.append(
                self._finding(
                    "deny_retry",
                    "high" if row["got_through"] else "medium",
                    row,
                    f"{self._who(row['principal'])} {what} {_span(row['first'], row['last'])} "
                    f"({row['n_denials']} refusals in the period).",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def break_glass_use(self) -> list[Finding]:
        """Break-glass accesses not justified by a ticket, on protected people, or too many."""
        c = self.config
        sql = self._grouped(
            "break_glass",
            ", count(*) FILTER (WHERE NOT indep OR hv OR minor OR emp_link) AS unjustified",
        )
        sql = f"SELECT * FROM ({sql}) WHERE unjustified > 0 OR n >= {c.break_glass_max}"
        out = []
        for row in self._rows(sql):
            out.append(
                self._finding(
                    "break_glass_use",
                    "high" if row["unjustified"] else "medium",
                    row,
                    f"{self._who(row['principal'])} used break-glass {row['n']} time(s) on "
                    f"{_plural(row['n_subjects'], 'subject')} {_span(row['first'], row['last'])}; "
                    f"{row['unjustified']} of them had no ticket justifying them or touched a "
                    "protected person.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def pretext_tickets(self) -> list[Finding]:
        """Accesses explained only by tickets the principal opened themselves, on more
        subjects than their peers and their own usual level."""
        where = "decision = 'allow' AND self_only"
        out = []
        for row in self._counted(
            where, "count(DISTINCT subject)", self.config.pretext_min_subjects
        ):
            out.append(
                self._finding(
                    "pretext_tickets",
                    "high",
                    row,
                    f"{self._who(row['principal'])} reached "
                    f"{row['n_subjects']} subjects under tickets they opened themselves "
                    f"{_span(row['first'], row['last'])} ({', '.join(row['categories'])}); "
                    f"people in the same role typically do so for {row['peer_med']:g} per "
                    f"{self.config.window_days} days. Self-made tickets are how pretexts look.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out

    def rare_category_access(self) -> list[Finding]:
        """Categories that people in the principal's role almost never touch, reached without
        an independent explanation (a ticket they opened themselves does not count)."""
        c = self.config
        sql = self._grouped(
            "decision = 'allow' AND NOT indep "
            "AND (principal, category) IN (SELECT (principal, category) FROM rare)"
        )
        sql = f"SELECT * FROM ({sql}) WHERE n_subjects >= {c.rare_category_min_subjects}"
        out = []
        for row in self._rows(sql):
            out.append(
                self._finding(
                    "rare_category_access",
                    "critical" if self._severe(row) else "high",
                    row,
                    f"{self._who(row['principal'])} reached {', '.join(row['categories'])} of "
                    f"{_plural(row['n_subjects'], 'subject')} {row['n']} time(s) "
                    f"{_span(row['first'], row['last'])}: people in their role almost never "
                    "use these categories, and no ticket opened by someone else explains it.",
                    f"{row['principal']}|{row['bucket']}",
                )
            )
        return out
