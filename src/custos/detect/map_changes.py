"""Data map changes that weaken protection, read from the ledger for ``data_map_weakened``.

Guarded SQL decides a query against the data map (``sources.yaml``): which column holds which
category and coarse form, which is the subject key. Whoever can write that file can remap a
column so that queries run unguarded; custos ledgers every map it starts using (a
``data_map`` entry, its canonical body), and this module reads those entries and compares
each map with what came before it.

What is compared is the *data*, not the map's names. A column is known by where it lives:
the PostgreSQL server and database (host, port, database; not the role), the DuckDB file, or
the Parquet glob of an in-memory DuckDB source, with the table (a bare PostgreSQL name in
``public``, a bare DuckDB name in ``main``). A second source pointing at the same database,
or a table that left the map and came back, is compared with how that data was protected
before, under whatever name. Each mapping of a column that is new or changed since the
previous map is held against every mapping the same data had: in the last map that mapped
it (under any name) and elsewhere in the same map. It weakens protection when:

- a category column becomes ``plain`` (no decision at all);
- a column moves to another category that is not more guarded (ranks: the locating and
  sensitive categories of ``[detect]`` above the rest);
- its coarse form now shows more: from ``none`` to anything, to a custom SQL form, to the
  column itself, or to another built-in form (becoming ``none`` never weakens);
- a table's subject key names another column (decisions are then made for whoever that
  column names);
- a PostgreSQL source reaches the same database as another role (the source's own grants
  and row security are then that role's).

Removing a source, a table or a column weakens nothing: the analyzer refuses every table and
column the map does not name (``custos.sql.analyze``: an unmapped table, or a column it
cannot resolve, refuses the query). What was removed is remembered, so mapping it again
weaker is caught. A column mapped for the first time is not judged: nothing says what it
holds.

Continuous detection reads only the entries appended since the last run: with a home, the
position, the remembered mappings, the weakenings found and who first queried under each
weakening map are kept in the detection mirror (``map_meta``, ``map_changes``,
``map_uses``), checked on every run against the ledger (the last entry read and the last map
read must still be there, the same bytes) and rebuilt from the ledger otherwise.

``map_changes(id, entry, time, digest, kind, severity, change, why)`` — one row per
weakening: ``id`` ``ledger-<index>`` of the ``data_map`` entry, ``kind`` one of
:data:`KINDS`, ``severity`` as alerts have it, ``change`` what changed in plain words
(``public.logins.ip in source app: ip_history (coarse ip_prefix) -> plain``), ``why`` why it
matters. Never a value of the data: only names from the map.
``map_uses(entry, used, principal, time)`` — the first guarded SQL entry (``used``, its
index) naming a weakening map's digest as the map it was decided under.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

import duckdb
from sqlalchemy import text

from custos.detect.config import DetectConfig
from custos.errors import ConfigurationError
from custos.store import Database
from custos.times import utc_instant

#: Kinds of weakening, one per row of ``map_changes``.
KINDS: Final = ("column_plain", "category", "coarse", "subject_key", "role", "unreadable")
SEVERITIES: Final = ("low", "medium", "high", "critical")
MAP_CHANGE_COLUMNS: Final = {
    "id": "VARCHAR",
    "entry": "BIGINT",
    "time": "TIMESTAMP",
    "digest": "VARCHAR",
    "kind": "VARCHAR",
    "severity": "VARCHAR",
    "change": "VARCHAR",
    "why": "VARCHAR",
}
#: The first guarded SQL entry (a decision, refusal or release) decided under each
#: weakening map: who queried under it first, and when.
MAP_USE_COLUMNS: Final = {
    "entry": "BIGINT",
    "used": "BIGINT",
    "principal": "VARCHAR",
    "time": "TIMESTAMP",
}
#: Format of the state kept in the mirror: another value makes it start again.
FORMAT: Final = "2"
_MARK: Final = b'"type":"data_map"'


# --- what one map says, per piece of data ----------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    """One mapping of one column: ``kind`` ``subject``, ``plain`` or ``category``."""

    kind: str
    category: str | None
    coarse: str | None
    sql: str | None
    source: str
    table: str
    entry: int

    @property
    def same(self) -> tuple[Any, ...]:
        return (self.kind, self.category, self.coarse, self.sql)

    def shown(self) -> str:
        if self.kind != "category":
            return self.kind
        if self.coarse == "custom":
            form = "custom SQL that is the column itself" if _identity(self) else "custom SQL"
        else:
            form = self.coarse or "none"
        return f"{self.category} (coarse {form})"


@dataclass(frozen=True, slots=True)
class _Table:
    subject: str
    source: str
    table: str
    entry: int


@dataclass(frozen=True, slots=True)
class _Role:
    user: str
    source: str
    entry: int


@dataclass(slots=True)
class _Map:
    """A map's mappings by the place of the data (see the module docstring)."""

    columns: dict[str, list[_Column]]
    tables: dict[str, list[_Table]]
    roles: dict[str, list[_Role]]
    #: name ("source|table|column", "source|table", "source") -> what it says, to tell
    #: what changed since the previous map.
    names: dict[str, Any]
    #: table place -> {column -> mapping} as this map has it (for the subject key's story).
    by_table: dict[tuple[str, str], dict[str, _Column]]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _place(url: str, dialect: str, table: str, file: str | None) -> tuple[str, str]:
    """Where a mapped table's data lives: (location, table) as the module docstring says."""
    if dialect == "postgres":
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "localhost").lower()
            port = parts.port or 5432
            database = parts.path.lstrip("/") or (parts.username or "")
            location = f"postgres://{host}:{port}/{database}"
        except ValueError:
            location = url
        return location, table if "." in table else f"public.{table}"
    path = url.removeprefix("duckdb:")
    if not path:
        return f"parquet:{posixpath.normpath(file or '')}", ""
    return f"duckdb:{posixpath.normpath(path)}", table if "." in table else f"main.{table}"


def _role(url: str) -> str | None:
    try:
        return urlsplit(url).username
    except ValueError:
        return None


def _readable(body: Any) -> bool:
    """Whether ``body`` has a map's shape down to its columns (the parts :func:`_read` takes)."""
    sources = body.get("sources") if isinstance(body, dict) else None
    if not isinstance(sources, dict):
        return False
    for source in sources.values():
        tables = source.get("tables") if isinstance(source, dict) else None
        if not isinstance(tables, dict) or not isinstance(source.get("url"), str):
            return False
        for table in tables.values():
            columns = table.get("columns") if isinstance(table, dict) else None
            if not isinstance(columns, dict) or not all(
                isinstance(c, dict) for c in columns.values()
            ):
                return False
    return True


def _read(body: Any, entry: int) -> _Map:
    """The mappings of a ledgered map body (:func:`custos.sql.datamap.to_json`); parts of
    the wrong shape are left out (never raises: the ledger vouches for the bytes, not for
    every writer's shape)."""
    found = _Map({}, {}, {}, {}, {})
    sources = body.get("sources") if isinstance(body, dict) else None
    for sname, source in (sources if isinstance(sources, dict) else {}).items():
        if not isinstance(source, dict):
            continue
        url, dialect = _str(source.get("url")) or "", _str(source.get("dialect")) or ""
        user = _role(url) if dialect == "postgres" else None
        tables = source.get("tables")
        for tname, table in (tables if isinstance(tables, dict) else {}).items():
            if not isinstance(table, dict):
                continue
            location, tkey = _place(url, dialect, str(tname), _str(table.get("file")))
            if user is not None:
                found.roles.setdefault(location, []).append(_Role(user, str(sname), entry))
                found.names[f"{sname}"] = (location, user)
            where = f"{location}\x1f{tkey}"
            subject = _str(table.get("subject"))
            if subject is not None:
                found.tables.setdefault(where, []).append(
                    _Table(subject, str(sname), str(tname), entry)
                )
                found.names[f"{sname}|{tname}"] = (where, subject)
            columns = table.get("columns")
            mine = found.by_table.setdefault((location, tkey), {})
            for cname, column in (columns if isinstance(columns, dict) else {}).items():
                if not isinstance(column, dict):
                    continue
                coarse = column.get("coarse")
                sql = coarse.get("sql") if isinstance(coarse, dict) else None
                category = _str(column.get("category"))
                mapping = _Column(
                    kind="subject"
                    if column.get("subject") is True
                    else ("plain" if category is None else "category"),
                    category=category,
                    coarse=_str(coarse.get("name")) if isinstance(coarse, dict) else None,
                    sql=_str(sql.get(dialect)) if isinstance(sql, dict) else None,
                    source=str(sname),
                    table=str(tname),
                    entry=entry,
                )
                key = f"{where}\x1f{cname}"
                found.columns.setdefault(key, []).append(mapping)
                found.names[f"{sname}|{tname}|{cname}"] = (key, mapping.same)
                mine[str(cname)] = mapping
    return found


# --- judging one mapping against another -------------------------------------------------


def _identity(column: _Column) -> bool:
    """Whether a custom coarse form is the column itself (a cast of it, in parentheses)."""
    if column.sql is None:
        return False
    # sqlglot only when a custom form changed: a run without map changes stays light.
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    try:
        tree = sqlglot.parse_one(column.sql.replace("{col}", "custos_coarse_probe"))
    except (SqlglotError, ValueError):
        return False
    while isinstance(tree, (exp.Cast, exp.TryCast, exp.Paren)):
        tree = tree.this
    return isinstance(tree, exp.Column) and tree.name == "custos_coarse_probe"


@dataclass(frozen=True, slots=True)
class _Weakening:
    kind: str
    severity: int  # index into SEVERITIES
    why: str


def _judge(old: _Column, new: _Column, grave: frozenset[str]) -> _Weakening | None:
    """How ``new`` weakens ``old`` (two mappings of the same data), or None. The subject
    column is judged with its table (:func:`_judge_table`)."""
    if old.kind != "category" or new.kind == "subject" or old.category is None:
        return None
    was_grave = old.category in grave
    if new.kind == "plain":
        return _Weakening(
            "column_plain",
            3 if was_grave else 2,
            "a plain column is read and searched with no decision: no purpose, ticket or "
            "grant is asked for, its precise values leave in every query and every count, "
            "and no ledger entry says whose they were",
        )
    assert new.category is not None
    if new.category != old.category:
        if new.category in grave and not was_grave:
            return None  # a more guarded category: a strengthening
        return _Weakening(
            "category",
            2 if was_grave and new.category not in grave else 1,
            f"it is now decided as {new.category}: whoever the policies let see "
            f"{new.category} now sees what they guarded as {old.category}, at the precision "
            f"{new.category} allows",
        )
    if (new.coarse, new.sql) == (old.coarse, old.sql) or new.coarse == "none" or _identity(old):
        return None
    if new.coarse == "custom" and _identity(new):
        return _Weakening(
            "coarse",
            3 if was_grave else 2,
            "its coarse form is the value itself: the precise value leaves wherever only the "
            "coarse form may (every query without a grant, every count's groups)",
        )
    if old.coarse == "none" or old.coarse is None:
        what = "something now leaves at coarse level where nothing did"
    elif new.coarse == "custom":
        what = "custom SQL custos cannot judge now makes what leaves at coarse level"
    else:
        # Between two forms custos knows (or from custom SQL to one), it cannot rank them.
        what = "another form now makes what leaves at coarse level; it may show more"
        return _Weakening("coarse", 1 if was_grave and old.coarse != "custom" else 0, what)
    return _Weakening("coarse", 2 if was_grave else 1, what)


def _where(source: str, table: str, column: str | None = None) -> str:
    return f"{table}{'.' + column if column else ''} in source {source}"


def _from(old: _Column | _Table, new: _Column | _Table) -> str:
    """Which mapping ``new`` was held against: the same name's earlier one, or another
    name's (in this map or an earlier one)."""
    if old.entry == new.entry:
        return f" (as {_where(old.source, old.table)} maps the same data in this map)"
    if (old.source, old.table) == (new.source, new.table):
        return f" (ledger entry {old.entry})"
    return f" (as {_where(old.source, old.table)} mapped the same data, ledger entry {old.entry})"


# --- following the ledger -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MapChange:
    """One weakening found (a row of ``map_changes``)."""

    entry: int
    time: datetime
    digest: str
    kind: str
    severity: str
    change: str
    why: str

    def row(self) -> list[Any]:
        return [
            f"ledger-{self.entry}",
            self.entry,
            self.time.replace(tzinfo=None),
            self.digest,
            self.kind,
            self.severity,
            self.change,
            self.why,
        ]


class MapHistory:
    """What the maps ledgered so far said of each piece of data: the last mappings each had
    (kept when it left the map) and the previous map's names. :meth:`follow` takes the next
    ledgered map and returns how it weakens protection."""

    def __init__(self, grave: Iterable[str]) -> None:
        self.grave = frozenset(grave)
        self.columns: dict[str, list[_Column]] = {}
        self.tables: dict[str, list[_Table]] = {}
        self.roles: dict[str, list[_Role]] = {}
        self.names: dict[str, Any] = {}

    # -- kept between runs as JSON --------------------------------------------------------

    def dump(self) -> str:
        """The state as JSON (see :meth:`load`)."""

        def listed(items: Mapping[str, list[Any]]) -> dict[str, list[list[Any]]]:
            return {k: [list(_fields(v)) for v in vs] for k, vs in items.items()}

        return json.dumps(
            {
                "columns": listed(self.columns),
                "tables": listed(self.tables),
                "roles": listed(self.roles),
                "names": self.names,
            },
            sort_keys=True,
        )

    def load(self, dumped: str) -> None:
        """Take the state :meth:`dump` wrote. Raises ``ValueError`` when it is not that."""
        state = json.loads(dumped)
        self.columns = {k: [_Column(*v) for v in vs] for k, vs in state["columns"].items()}
        self.tables = {k: [_Table(*v) for v in vs] for k, vs in state["tables"].items()}
        self.roles = {k: [_Role(*v) for v in vs] for k, vs in state["roles"].items()}
        self.names = {
            k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
            for k, v in state["names"].items()
        }

    # -- one more map ----------------------------------------------------------------------

    def _new(self, name: str, says: Any) -> bool:
        return bool(self.names.get(name) != says)

    def follow(self, entry: int, time: datetime, digest: str, body: Any) -> list[MapChange]:
        """Take the map ledgered at ``entry``; return how it weakens protection (most severe
        first). A body that is not a map's (custos never writes one) is itself a weakening:
        what it changed cannot be told. Never raises."""
        if not _readable(body):
            return [
                MapChange(
                    entry,
                    time,
                    digest,
                    "unreadable",
                    "high",
                    "the ledgered map is not a data map's body",
                    "custos cannot tell what it changed, so it cannot vouch that it "
                    "weakens nothing; the maps after it are held against the one before it",
                )
            ]
        now = _read(body, entry)
        out: list[MapChange] = []

        def add(kind: str, severity: int, change: str, why: str) -> None:
            out.append(MapChange(entry, time, digest, kind, SEVERITIES[severity], change, why))

        for key, mappings in now.columns.items():
            column = key.rsplit("\x1f", 1)[1]
            changed = [self._new(f"{m.source}|{m.table}|{column}", (key, m.same)) for m in mappings]
            earlier = self._known(key)
            for n, new in enumerate(mappings):
                # Only what changed is judged: against the data's earlier mappings and the
                # other mappings of the same data in this map (a second way to the same data).
                if not changed[n]:
                    continue
                against = [*earlier, *(m for i, m in enumerate(mappings) if i != n)]
                worst: tuple[_Weakening, _Column] | None = None
                for old in against:
                    found = _judge(old, new, self.grave)
                    if found is not None and (worst is None or found.severity > worst[0].severity):
                        worst = (found, old)
                if worst is not None:
                    found, old = worst
                    add(
                        found.kind,
                        found.severity,
                        f"{_where(new.source, new.table, column)}: {old.shown()} -> "
                        f"{new.shown()}{_from(old, new)}",
                        found.why,
                    )
        for key, tables in now.tables.items():
            moved = [self._new(f"{t.source}|{t.table}", (key, t.subject)) for t in tables]
            before = self.tables.get(key, [])
            for n, table in enumerate(tables):
                if not moved[n]:
                    continue
                # A subject key has no order: one the data had before is right; with no
                # history, one another source gives the same table in this map is.
                held = before or [t for i, t in enumerate(tables) if i != n]
                if not held or table.subject in {t.subject for t in held}:
                    continue
                old_table = held[0]
                location, tkey = key.split("\x1f", 1)
                was = now.by_table.get((location, tkey), {}).get(old_table.subject)
                left = (
                    f" {old_table.subject} is now {was.shown() if was else 'unmapped'} here."
                    if was is None or was.kind != "subject"
                    else ""
                )
                add(
                    "subject_key",
                    3,
                    f"{_where(table.source, table.table)}: subject key {old_table.subject} -> "
                    f"{table.subject}{_from(old_table, table)}",
                    "every query on it is now decided for whoever "
                    f"{table.subject} names: protected flags, tickets and grants are checked "
                    f"against that person, not the one the rows are about.{left}".rstrip("."),
                )
        for location, roles in now.roles.items():
            # Only against earlier maps: two sources of one map may well use two roles.
            earlier_roles = self.roles.get(location, [])
            users = {r.user for r in earlier_roles}
            for new_role in {(r.source, r.user): r for r in roles}.values():
                if new_role.user in users or not self._new(
                    new_role.source, (location, new_role.user)
                ):
                    continue
                old_role = earlier_roles[0] if earlier_roles else None
                if old_role is None:
                    continue
                add(
                    "role",
                    0,
                    f"source {new_role.source}: connects as role {new_role.user} where source "
                    f"{old_role.source} connected as {old_role.user} (ledger entry "
                    f"{old_role.entry})",
                    "the database's own grants and row security are now that role's, and "
                    "custos relies on a role that may only read",
                )
        # Remember: the last mappings of everything this map maps; the rest stays as it was.
        self.columns.update(now.columns)
        self.tables.update(now.tables)
        self.roles.update(now.roles)
        self.names = now.names
        out.sort(key=lambda c: (-SEVERITIES.index(c.severity), c.change))
        return out

    def _known(self, key: str) -> list[_Column]:
        """Earlier mappings of the data at ``key``: the same place, and for a Parquet glob
        every earlier glob it reaches (a wider glob reads those files too)."""
        found = list(self.columns.get(key, []))
        if key.startswith("parquet:"):
            glob, _, column = key.partition("\x1f")
            column = column.rsplit("\x1f", 1)[-1]
            for other, mappings in self.columns.items():
                if other == key or not other.startswith("parquet:"):
                    continue
                place, _, rest = other.partition("\x1f")
                if rest.rsplit("\x1f", 1)[-1] == column and fnmatch.fnmatchcase(
                    place.removeprefix("parquet:"), glob.removeprefix("parquet:")
                ):
                    found += mappings
        return found


def _fields(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, name) for name in value.__slots__)


# --- reading the ledger ---------------------------------------------------------------------


def _entries(db: Database, after: int, upto: int) -> Iterator[tuple[int, bytes]]:
    """``data_map`` entries (by a byte search of the stored entries) with ``after`` < index
    ≤ ``upto``, in index order."""
    test = "instr(entry, :mark) > 0" if db.is_sqlite else "position(:mark in entry) > 0"
    query = text(
        f"SELECT idx, entry FROM ledger_entries WHERE idx > :after AND idx <= :upto AND {test} "  # noqa: S608 - fixed text
        "ORDER BY idx"
    )
    with db.session() as session:
        for idx, raw in session.execute(query, {"mark": _MARK, "after": after, "upto": upto}):
            yield int(idx), bytes(raw)


def _last_index(db: Database) -> int:
    with db.session() as session:
        value = session.scalar(text("SELECT max(idx) FROM ledger_entries"))
    return -1 if value is None else int(value)


def _parsed(raw: bytes) -> tuple[datetime, str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("type") != "data_map":
        return None
    when, digest = entry.get("time"), entry.get("digest")
    if not isinstance(when, str) or not isinstance(digest, str):
        return None
    try:
        return utc_instant(when), digest, entry.get("body")
    except ValueError:
        return None


def follow_ledger(
    history: MapHistory, db: Database, after: int, upto: int
) -> tuple[list[MapChange], tuple[int, str] | None]:
    """Fold the ``data_map`` entries after ``after`` up to ``upto`` into ``history``;
    the weakenings found and the last entry folded (index, digest), if any."""
    found: list[MapChange] = []
    last: tuple[int, str] | None = None
    for index, raw in _entries(db, after, upto):
        parsed = _parsed(raw)
        if parsed is None:
            continue
        when, digest, body = parsed
        found += history.follow(index, when, digest, body)
        last = (index, digest)
    return found, last


def create_map_changes(con: duckdb.DuckDBPyConnection, schema: str | None = None) -> None:
    """Make empty ``map_changes`` and ``map_uses`` tables in ``con`` (in ``schema``) unless
    there are (sources without a ledger have no data map changes)."""
    prefix = f"{schema}." if schema else ""
    for name, table in (("map_changes", MAP_CHANGE_COLUMNS), ("map_uses", MAP_USE_COLUMNS)):
        columns = ", ".join(f"{c} {kind}" for c, kind in table.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {prefix}{name} ({columns})")


_USE_MARK: Final = b'"data_map":"'


def _first_uses(
    db: Database, digests: Mapping[str, list[int]], after: int, upto: int
) -> list[list[Any]]:
    """The first entry after ``after`` up to ``upto`` naming each of ``digests`` as the map
    it was decided under (``"data_map":"<digest>"``), as ``map_uses`` rows for every weakening
    entry of that digest that it follows. One pass over the range: the database finds the
    guarded SQL entries by one byte search, and only those are looked at here."""
    if not digests:
        return []
    test = "instr(entry, :mark) > 0" if db.is_sqlite else "position(:mark in entry) > 0"
    query = text(
        f"SELECT idx, entry FROM ledger_entries WHERE idx > :after AND idx <= :upto "  # noqa: S608
        f"AND {test} ORDER BY idx"
    )
    # Digest -> the weakening entries of that digest still without a first use.
    pending = {d: sorted(entries) for d, entries in digests.items()}
    rows: list[list[Any]] = []
    with db.session() as session:
        found = session.execute(query, {"mark": _USE_MARK, "after": after, "upto": upto})
        for idx, raw in found:
            data = bytes(raw)
            start = data.find(_USE_MARK) + len(_USE_MARK)
            digest = data[start : data.find(b'"', start)].decode("ascii", "replace")
            resolved = [w for w in pending.get(digest, ()) if w < int(idx)]
            if not resolved:
                continue
            try:
                entry = json.loads(data)
                when = utc_instant(entry["time"]).replace(tzinfo=None)
                principal = str(entry["principal"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("data_map") != digest:
                continue  # the bytes were inside another field's text
            rows += [[w, int(idx), principal, when] for w in resolved]
            pending[digest] = [w for w in pending[digest] if w >= int(idx)]
            if not pending[digest]:
                del pending[digest]
            if not pending:
                break
    return rows


def _by_digest(changes: Iterable[MapChange | tuple[int, str]]) -> dict[str, list[int]]:
    """Weakening map entries by digest (a map ledgered twice is two entries)."""
    out: dict[str, list[int]] = {}
    for change in changes:
        entry, digest = (change.entry, change.digest) if isinstance(change, MapChange) else change
        if entry not in out.setdefault(digest, []):
            out[digest].append(entry)
    return out


def _unused(con: duckdb.DuckDBPyConnection, kept: str, uses: str) -> list[tuple[int, str]]:
    """The weakening maps kept so far that no guarded SQL entry named yet."""
    rows = con.execute(
        f"SELECT DISTINCT entry, digest FROM {kept} "  # noqa: S608 - fixed names
        f"WHERE entry NOT IN (SELECT entry FROM {uses})"
    ).fetchall()
    return [(int(e), str(d)) for e, d in rows]


def _insert_uses(con: duckdb.DuckDBPyConnection, table: str, rows: list[list[Any]]) -> None:
    if rows:
        con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)  # noqa: S608


def _insert(con: duckdb.DuckDBPyConnection, table: str, changes: list[MapChange]) -> None:
    if changes:
        marks = ", ".join("?" for _ in MAP_CHANGE_COLUMNS)
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", [c.row() for c in changes])  # noqa: S608


def load_map_changes(
    con: duckdb.DuckDBPyConnection,
    db: Database,
    config: DetectConfig,
    *,
    catalog: str | None = None,
) -> int:
    """Fill ``con``'s ``map_changes`` (made anew) with every weakening the ledgered maps
    hold; returns how many rows. With ``catalog`` (the attached mirror), only the entries
    appended since the last run are read, and the state kept there (see the module
    docstring). Raises :class:`StoreUnavailable` (the database) and
    :class:`ConfigurationError` (the mirror cannot be written: it is as the last run left
    it)."""
    grave = (*config.locating_categories, *config.sensitive_categories)
    con.execute("DROP TABLE IF EXISTS map_changes")
    con.execute("DROP TABLE IF EXISTS map_uses")
    create_map_changes(con)
    upto = _last_index(db)
    history = MapHistory(grave)
    if catalog is None:
        found, _ = follow_ledger(history, db, -1, upto)
        _insert(con, "map_changes", found)
        _insert_uses(con, "map_uses", _first_uses(db, _by_digest(found), -1, upto))
        return len(found)
    meta_table, kept = f"{catalog}.map_meta", f"{catalog}.map_changes"
    uses = f"{catalog}.map_uses"
    con.execute(f"CREATE TABLE IF NOT EXISTS {meta_table} (key VARCHAR, value VARCHAR)")
    create_map_changes(con, catalog)
    meta = dict(con.execute(f"SELECT key, value FROM {meta_table}").fetchall())  # noqa: S608
    position = -1
    # The state counts only if the ledger still holds what it was read from: the last entry
    # read and the last map read, byte for byte (not another database, not a rewound one).
    if meta.get("format") == FORMAT and _holds(db, meta.get("tip", ""), upto):
        try:
            history.load(meta["state"])
            position = int(meta["position"])
        except (KeyError, ValueError, TypeError):
            history, position = MapHistory(grave), -1
    if position >= 0 and not _holds(db, meta.get("anchor", ""), upto):
        history, position = MapHistory(grave), -1
    found, last = follow_ledger(history, db, position, upto)
    # Who first queried under a weakening map: looked for only in what is new, and only
    # for the maps no one has queried under yet.
    waiting = [] if position < 0 else _unused(con, kept, uses)
    first = _first_uses(db, _by_digest([*waiting, *found]), position, upto)
    anchor = _mark(db, last[0]) if last else (meta.get("anchor", "") if position >= 0 else "")
    tip = _mark(db, upto) if upto >= 0 else ""
    marks = [["position", str(max(upto, position))], ["tip", tip]]
    if position < 0 or last is not None or "state" not in meta:
        # The state is written only when a map was read: a run without one writes two marks.
        marks += [["format", FORMAT], ["anchor", anchor], ["state", history.dump()]]
    con.execute("BEGIN")
    try:
        if position < 0:
            con.execute(f"DELETE FROM {kept}")  # noqa: S608 - fixed names
            con.execute(f"DELETE FROM {uses}")  # noqa: S608 - fixed names
        _insert(con, kept, found)
        _insert_uses(con, uses, first)
        con.executemany(f"DELETE FROM {meta_table} WHERE key = ?", [[k] for k, _ in marks])  # noqa: S608
        con.executemany(f"INSERT INTO {meta_table} VALUES (?, ?)", marks)  # noqa: S608
        con.execute("COMMIT")
    except duckdb.Error as exc:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise ConfigurationError(
            f"detection cannot keep what it read of the data map changes ({exc})",
            hint="the mirror is built from the database: remove it and run detection again",
        ) from None
    con.execute(f"INSERT INTO map_changes SELECT * FROM {kept}")  # noqa: S608 - fixed names
    con.execute(f"INSERT INTO map_uses SELECT * FROM {uses}")  # noqa: S608 - fixed names
    row = con.execute("SELECT count(*) FROM map_changes").fetchone()
    return int(row[0]) if row else 0


def _mark(db: Database, index: int) -> str:
    """``index:sha256`` of the ledger entry at ``index`` (empty when there is none)."""
    with db.session() as session:
        raw = session.scalar(text("SELECT entry FROM ledger_entries WHERE idx = :i"), {"i": index})
    return "" if raw is None else f"{index}:{hashlib.sha256(bytes(raw)).hexdigest()}"


def _holds(db: Database, mark: str, upto: int) -> bool:
    """Whether the ledger holds the entry ``mark`` (:func:`_mark`) names, the same bytes;
    an empty mark (nothing read yet) holds."""
    if not mark:
        return True
    index, _, _ = mark.partition(":")
    try:
        at = int(index)
    except ValueError:
        return False
    return at <= upto and _mark(db, at) == mark
