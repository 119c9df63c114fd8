"""The part of detection that can be kept between runs: each event's classification by the
ticket it cites (the *first pass*), and the activity counts of the baselines.

Both depend on nothing but the event itself, the ticket it cites and two settings
(``retro_minutes``, ``window_days``); everything else the rules read (the directory's facts
about principals and subjects, tickets found in the directory for what the cited ticket does
not explain, the baselines themselves) is recomputed on every run from the small residue.
So a run over a long history need not read that history again:

- events that arrive are classified and counted once (:meth:`Classification.add`), and events
  that leave are counted out (:meth:`Classification.remove`) — counts are additive;
- when tickets arrive, change or go, the events citing them are classified again
  (:meth:`Classification.follow_tickets`), found by comparing the tickets with a snapshot of
  the columns the first pass reads;
- when a setting the first pass depends on changes, or the kept tables are of another format,
  everything is classified again from all the events (:meth:`Classification.open` says so).

Kept or not, the rules see the same residue: a run that keeps nothing computes the same first
pass straight into it (:func:`first_pass`, :func:`activity_counts`), and the tests hold the two
ways to the same findings over events and tickets that change between runs.
"""

from __future__ import annotations

import duckdb

from custos.detect.config import DetectConfig
from custos.detect.tables import EVENT_COLUMNS, TICKET_COLUMNS, create_table

#: Format of the kept tables: bump it when the first pass or the counts change meaning, so that
#: a kept state of the old format is rebuilt instead of read.
FORMAT = "1"
#: A Monday: periods start on Mondays.
ORIGIN = "TIMESTAMP '2000-01-03 00:00:00'"
#: The residue of the first pass, kept: what its cited ticket does not plainly explain.
RESIDUE_COLUMNS = {
    **{c: t for c, t in EVENT_COLUMNS.items() if c not in ("source", "explained")},
    "cited_ok": "BOOLEAN",
    "cited_self": "BOOLEAN",
    # Classified by a join with its cited ticket (so a change of that ticket classifies it
    # again); false when the guarded path explained it as it decided.
    "joined": "BOOLEAN",
}
ACTIVITY_COLUMNS = {
    "principal": "VARCHAR",
    "bucket": "TIMESTAMP",
    "hr": "BIGINT",
    "category": "VARCHAR",
    "g": "BIGINT",
    "n": "BIGINT",
}
#: The columns of a ticket the first pass reads: a change in any of them can change it.
TICKET_FACTS = {c: t for c, t in TICKET_COLUMNS.items() if c != "status"}


#: What :class:`Classification` keeps of the events whose classification depends on their
#: cited ticket (those not explained as decided that cite one): ``th`` is ``hash(ticket)``.
CITE_COLUMNS = {
    "th": "UBIGINT",
    **{c: t for c, t in RESIDUE_COLUMNS.items() if c not in ("cited_ok", "cited_self", "joined")},
}


def bucket(config: DetectConfig, column: str = "time") -> str:
    """The SQL for the period (``window_days`` long, starting on a Monday) of ``column``."""
    return f"time_bucket(to_days({config.window_days}), {column}, {ORIGIN})"


def decided(con: duckdb.DuckDBPyConnection, source: str) -> tuple[int, int]:
    """How many events of ``source`` the guarded path explained by their ticket as it
    decided them, and how many there are."""
    row = con.execute(
        f"SELECT count(*) FILTER (WHERE explained = 'ticket'), count(*) FROM {source}"
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def mostly_decided(explained: int, total: int) -> bool:
    """Whether so many events are explained as decided (three quarters) that the first pass
    should hold the rest in memory first (``few``, see :func:`first_pass`)."""
    return explained >= 0.75 * total > 0


def first_pass(source: str, config: DetectConfig, *, few: bool, tickets: str = "tickets") -> str:
    """A query of the events of ``source`` (a relation with the ``events`` columns) that their
    cited ticket does not plainly explain, classified by it (columns of
    :data:`RESIDUE_COLUMNS`), and of the refusals, exports and break-glass among them.
    ``tickets`` is where the cited tickets are (every ticket any of them may cite).

    Ticket ids are keys, so the join is on the id alone and the other conditions of an
    explanation are checked on the joined row: a hash join on one key is several times cheaper
    than one on four keys with a time range, which DuckDB checks row by row. Events the guarded
    path explained by their ticket as it decided are left out by a filter on that one column,
    which DuckDB applies while reading; those it found explained only by a ticket the principal
    opened are kept without a join. With ``few`` (most of ``source`` is explained as decided,
    or ``source`` is small), what is left is held in memory first, so that the join builds its
    hash table on just the tickets it cites (building it on every ticket took most of the
    statement's time); otherwise holding it would cost more than the whole join.
    """
    retro = f"to_minutes({config.retro_minutes})"
    copied = "MATERIALIZED" if few else "NOT MATERIALIZED"
    cited = "WHERE id IN (SELECT ticket FROM u WHERE explained IS NULL)" if few else ""
    return f"""
        WITH u AS {copied} (
            SELECT id, time, principal, action, subject, category, purpose, ticket,
                   decision, precision, records, break_glass, granted, explained
            FROM {source} WHERE explained IS DISTINCT FROM 'ticket'
        ),
        j AS (
            SELECT e.id, e.time, e.principal, e.action, e.subject, e.category, e.purpose,
                   e.ticket, e.decision, e.precision, coalesce(e.records, 1) AS records,
                   coalesce(e.break_glass, false) AS break_glass,
                   coalesce(e.granted, false) AND NOT coalesce(e.break_glass, false)
                     AS granted,
                   coalesce(e.explained = 'own_ticket', false) OR
                   coalesce(t.assignee = e.principal AND t.subject = e.subject
                            AND t.kind = e.purpose
                            AND (t.lo IS NULL OR e.time >= t.lo)
                            AND (t.hi IS NULL OR e.time <= t.hi), false) AS cited_ok,
                   coalesce(e.explained = 'own_ticket', false) OR t.self AS self,
                   e.explained IS NULL AS joined
            FROM u e
            LEFT JOIN (SELECT id, assignee, subject, kind, opened - {retro} AS lo,
                              closed + {retro} AS hi,
                              coalesce(opened_by = assignee, false) AS self
                       FROM {tickets} {cited}) t
              ON t.id = e.ticket AND e.explained IS NULL
        )
        SELECT * EXCLUDE (self), cited_ok AND self AS cited_self FROM j
        WHERE NOT cited_ok OR self OR decision <> 'allow' OR break_glass OR action = 'export'
    """


def activity_counts(source: str, config: DetectConfig) -> str:
    """A query counting the events of ``source`` per principal and period (baselines), per
    principal and hour of day (usual hours) and per principal and category (rare categories),
    as the rows of :data:`ACTIVITY_COLUMNS`.

    Three small grouping sets instead of one per period and hour keep the hash tables in
    cache. ``grouping()`` sets a bit for each column left out: 0b011 is (principal, bucket),
    0b101 (principal, hr), 0b110 (principal, category).
    """
    return f"""
        SELECT principal, bucket, hr, category, grouping(bucket, hr, category)::BIGINT AS g,
               count(*)::BIGINT AS n
        FROM (SELECT principal, {bucket(config)} AS bucket, hour(time)::BIGINT AS hr, category
              FROM {source})
        GROUP BY GROUPING SETS ((principal, bucket), (principal, hr), (principal, category))
    """


class Classification:
    """The first pass and the activity counts of every event in ``events``, kept in tables of
    the DuckDB catalog ``catalog`` (a database file attached to ``con``, or ``main``):

    - ``det_res``, the residue of the first pass (:data:`RESIDUE_COLUMNS`);
    - ``det_act``, the activity counts (:data:`ACTIVITY_COLUMNS`);
    - ``det_cite``, the events whose classification depends on the ticket they cite (those
      not explained as decided that cite one), with a 64-bit hash of the ticket id so that
      the events citing a changed ticket are found without comparing strings (the ids are
      compared too: a hash only narrows the search, it never decides);
    - ``det_tickets``, unless ``told``: the columns of :data:`TICKET_FACTS` of every ticket as
      last classified against, to find the tickets that changed;
    - ``det_meta``, the settings they were kept for.

    ``told`` says that whoever keeps ``tickets`` tells :meth:`follow_tickets` which tickets
    it wrote and removed since the last run (as the mirror of the custos directory does);
    otherwise every ticket is compared with the snapshot on each run.

    Its contract with whoever keeps ``events``: every event in ``events`` has been passed to
    :meth:`add` exactly once since it was last passed to :meth:`remove` (or since
    :meth:`open` answered that everything must be added), and :meth:`follow_tickets` is
    called once ``events`` and ``tickets`` are as the run will see them. It writes nothing
    outside its own tables; callers commit or roll back around it.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        config: DetectConfig,
        catalog: str,
        *,
        told: bool = False,
    ) -> None:
        self.con = con
        self.config = config
        self.catalog = catalog
        self.told = told
        self.residue = f"{catalog}.det_res"
        self._activity = f"{catalog}.det_act"
        #: Rows of changes ``det_act`` may hold beyond twice its folded counts.
        self.slack = 100_000
        cols = ", ".join(c for c in ACTIVITY_COLUMNS if c != "n")
        #: The activity counts (a relation of :data:`ACTIVITY_COLUMNS`): ``det_act`` keeps
        #: them as they were last folded together plus what each run added or took away
        #: since, which is cheaper to append than to rewrite on every run.
        self.activity = (
            f"(SELECT {cols}, sum(n)::BIGINT AS n FROM {self._activity} "
            f"GROUP BY {cols} HAVING sum(n) <> 0)"
        )
        self._cite = f"{catalog}.det_cite"
        self._tickets = f"{catalog}.det_tickets"

    def _settings(self) -> str:
        c = self.config
        return (
            f"format={FORMAT};retro_minutes={c.retro_minutes};window_days={c.window_days};"
            f"told={self.told}"
        )

    def open(self) -> bool:
        """Make the kept tables if they are missing, or empty them when they were kept for
        other settings or in another format; True when they are (now) empty, so that every
        event in ``events`` must be added and the tickets taken as they are (:meth:`start`)."""
        con, cat = self.con, self.catalog
        con.execute(f"CREATE TABLE IF NOT EXISTS {cat}.det_meta (key VARCHAR, value VARCHAR)")
        row = con.execute(f"SELECT value FROM {cat}.det_meta WHERE key = 'settings'").fetchone()
        if row is not None and row[0] == self._settings():
            return False
        tables = [
            (self.residue, RESIDUE_COLUMNS),
            (self._activity, ACTIVITY_COLUMNS),
            (self._cite, CITE_COLUMNS),
            (self._tickets, TICKET_FACTS),
        ]
        for name, columns in tables:
            con.execute(f"DROP TABLE IF EXISTS {name}")
            if name != self._tickets or not self.told:
                con.execute(create_table(name, columns))
        con.execute(f"DELETE FROM {cat}.det_meta")
        con.execute(f"INSERT INTO {cat}.det_meta VALUES ('settings', ?)", [self._settings()])
        return True

    def start(self) -> None:
        """Classify every event in ``events`` into empty kept tables (and, unless ``told``,
        snapshot the tickets it was classified against)."""
        self.add("events")
        if not self.told:
            facts = ", ".join(TICKET_FACTS)
            self.con.execute(f"INSERT INTO {self._tickets} SELECT {facts} FROM tickets")

    def add(self, source: str) -> None:
        """Classify and count the events of ``source`` (a relation with the ``events``
        columns), which have just joined ``events``."""
        con = self.con
        if source != "events":
            # A run's new events are read four times below: once from wherever they are.
            con.execute(f"CREATE OR REPLACE TEMP TABLE det_new AS SELECT * FROM {source}")
            source = "det_new"
        explained, total = decided(con, source)
        if total:
            con.execute(
                f"INSERT INTO {self.residue} BY NAME "
                f"{first_pass(source, self.config, few=self._few(explained, total))}"
            )
            cite = ", ".join(c for c in CITE_COLUMNS if c != "th")
            con.execute(
                f"INSERT INTO {self._cite} SELECT hash(ticket) AS th, {cite} FROM {source} "
                "WHERE explained IS NULL AND ticket IS NOT NULL"
            )
            self._count(source, 1)
        con.execute("DROP TABLE IF EXISTS det_new")

    def remove(self, source: str) -> None:
        """Forget the events of ``source`` (the versions that were added; a relation with the
        ``events`` columns), which have just left ``events``: out of the residue, and counted
        out of the activity."""
        con = self.con
        row = con.execute(f"SELECT count(*) FROM {source}").fetchone()
        if not row or not row[0]:
            return
        for table in (self.residue, self._cite):
            con.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {source})")
        self._count(source, -1)

    def follow_tickets(self, written: str | None = None, *, removed: str | None = None) -> int:
        """Classify again the events (those not explained as decided) citing a ticket that
        arrived, changed (in a column the first pass reads) or went since the last run;
        returns how many tickets were looked at again.

        When ``told``, ``written`` is a relation of the tickets written since the last run
        (what the directory says: every column of :data:`TICKET_FACTS`, as each ticket is
        now), ``removed`` a relation of the ids of the tickets it removed since (None: none),
        and the events citing any of them are classified again. Otherwise the tickets are
        compared with the snapshot, which is brought up to date: only those of ``written``
        (a relation with their ids) when it is given, else all of them.
        """
        con = self.con
        facts = ", ".join(TICKET_FACTS)
        if self.told:
            if written is None:
                raise ValueError("a classification told of ticket changes needs them")
            gone = removed or "(SELECT NULL::VARCHAR AS id WHERE false)"
            # A ticket both written and removed since is gone: it is not in ``tickets``.
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE det_changed AS SELECT {facts}, true AS present "
                f"FROM {written} WHERE id NOT IN (SELECT id FROM {gone}) "
                f"UNION ALL BY NAME SELECT id, false AS present FROM {gone}"
            )
        else:
            self._compare(written)
        row = con.execute("SELECT count(*) FROM det_changed").fetchone()
        count = int(row[0]) if row else 0
        if count:
            con.execute(
                f"DELETE FROM {self.residue} "
                "WHERE joined AND ticket IN (SELECT id FROM det_changed)"
            )
            # The hash narrows the search to a few rows cheaply; the ids decide. They cite
            # only changed tickets, so the join needs no other.
            citing = (
                f"(SELECT * EXCLUDE (th), NULL::VARCHAR AS explained FROM {self._cite} "
                "WHERE th IN (SELECT hash(id) FROM det_changed) "
                "AND ticket IN (SELECT id FROM det_changed))"
            )
            now = "(SELECT * FROM det_changed WHERE present)"
            con.execute(
                f"INSERT INTO {self.residue} BY NAME "
                f"{first_pass(citing, self.config, few=False, tickets=now)}"
            )
        con.execute("DROP TABLE det_changed")
        return count

    def _compare(self, written: str | None) -> None:
        """``det_changed``: the tickets (of ``written``, or all) that differ from the
        snapshot in a column the first pass reads, or are new, or went (``present`` false),
        as they are now; the snapshot is brought up to date."""
        con = self.con
        changed = " OR ".join(f"t.{c} IS DISTINCT FROM k.{c}" for c in TICKET_FACTS if c != "id")
        facts = ", ".join(TICKET_FACTS)
        only = "" if written is None else f" WHERE id IN (SELECT id FROM {written})"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE det_changed AS
                SELECT coalesce(k.id, t.id) AS id, t.* EXCLUDE (id),
                       t.id IS NOT NULL AS present
                FROM (SELECT {facts} FROM tickets{only}) t
                FULL OUTER JOIN (SELECT {facts} FROM {self._tickets}{only}) k ON k.id = t.id
                WHERE t.id IS NULL OR k.id IS NULL OR {changed}"""
        )
        con.execute(f"DELETE FROM {self._tickets} WHERE id IN (SELECT id FROM det_changed)")
        con.execute(f"INSERT INTO {self._tickets} SELECT {facts} FROM det_changed WHERE present")

    def _few(self, explained: int, total: int) -> bool:
        """Whether to hold what the join needs in memory first (see :func:`first_pass`):
        when most events are explained as decided, or when they are few next to the
        tickets (a run's new events)."""
        if mostly_decided(explained, total):
            return True
        row = self.con.execute("SELECT count(*) FROM tickets").fetchone()
        return row is not None and total - explained < int(row[0])

    def _count(self, source: str, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) the activity of ``source``; once the changes
        appended since the counts were last folded together outnumber them, fold them
        together again (counts that reach zero go), so reading stays cheap."""
        con, cat = self.con, self.catalog
        cols = ", ".join(c for c in ACTIVITY_COLUMNS if c != "n")
        con.execute(
            f"INSERT INTO {self._activity} "
            f"SELECT {cols}, {sign} * n FROM ({activity_counts(source, self.config)})"
        )
        row = con.execute(
            f"SELECT (SELECT count(*) FROM {self._activity}), "
            f"(SELECT max(value::BIGINT) FROM {cat}.det_meta WHERE key = 'folded')"
        ).fetchone()
        rows, folded = (int(row[0]), row[1]) if row else (0, None)
        if folded is not None and rows <= 2 * int(folded) + self.slack:
            return
        con.execute(f"CREATE OR REPLACE TABLE {self._activity} AS SELECT * FROM {self.activity}")
        row = con.execute(f"SELECT count(*) FROM {self._activity}").fetchone()
        con.execute(f"DELETE FROM {cat}.det_meta WHERE key = 'folded'")
        con.execute(
            f"INSERT INTO {cat}.det_meta VALUES ('folded', ?)", [str(int(row[0]) if row else 0)]
        )
