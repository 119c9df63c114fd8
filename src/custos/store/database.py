"""The :class:`Database` handle: engine, sessions, migrations and fail-closed errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from custos.errors import (
    ConfigurationError,
    CustosError,
    NotInitialised,
    StoreConflict,
    StoreUnavailable,
    UnstorableValue,
)

if TYPE_CHECKING:  # alembic is imported when migrating: opening a home does not need it
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
_CURRENT_HEADS = "SELECT version_num FROM alembic_version"


def _migrations_key() -> str:
    """The migrations as installed: each file's name, size and modification time."""
    digest = hashlib.sha256()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _heads_cache(key: str) -> Path:
    # One file per set of migrations: several checkouts (or versions) of custos used by one
    # user each keep their own instead of evicting each other's.
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "custos" / f"migration-heads-{key[:32]}.json"


def code_heads() -> set[str]:
    """The migration heads of this code (Alembic's ``heads``), remembered per user in
    ``~/.cache/custos`` under the migration files' names, sizes and times: Alembic imports
    every migration to find them, which cost each command a quarter of its start-up. A
    wrong or missing cache only makes custos ask Alembic again (or refuse to open, never
    open a database that is behind)."""
    key = _migrations_key()
    cache = _heads_cache(key)
    try:
        remembered = json.loads(cache.read_text(encoding="utf-8"))
        if remembered.get("key") == key and isinstance(remembered.get("heads"), list):
            return {str(head) for head in remembered["heads"]}
    except (OSError, ValueError, AttributeError):
        pass
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    heads = set(ScriptDirectory.from_config(config).get_heads())
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps({"key": key, "heads": sorted(heads)}), encoding="utf-8")
        partial.replace(cache)
    except OSError:
        pass  # an unwritable cache costs time, nothing else
    return heads


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; FULL makes a commit durable on return
    # (the ledger's promise: an acknowledged entry survives a crash or power loss).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """A connection pool to the custos database.

    ``session()`` yields a session inside a transaction that commits on success and rolls
    back on error. Connection failures surface as :class:`StoreUnavailable` so callers on
    the access path can fail closed.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        url = normalise_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != ":memory:":
                parent = Path(path).parent
                if not parent.exists():
                    raise NotInitialised(
                        f"no custos home at {parent}", hint="run `custos init` first"
                    )
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
            # Hand out the most recently returned connection: SQLite keeps a page cache per
            # connection, and another connection's commit makes it stale, so rotating
            # through the pool (the default) re-reads pages on almost every use.
            kwargs["pool_use_lifo"] = True
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any driver/URL problem is a config problem
            raise ConfigurationError(f"cannot use database URL: {type(exc).__name__}") from None
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The hot cursor's own SQLite connection per thread (see :meth:`cursor`); only for a
        # plain database file, where every connection sees the same database.
        database = self.engine.url.database
        self._hot_path = (
            database
            if self.is_sqlite and database and database != ":memory:" and not self.engine.url.query
            else None
        )
        self._hot = threading.local()
        self._hot_open: weakref.WeakSet[_HotConnection] = weakref.WeakSet()
        self._hot_lock = threading.Lock()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A transactional session; commits on normal exit. Raises :class:`StoreUnavailable`,
        or :class:`StoreConflict` when the commit breaks a uniqueness rule."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            raise _failure(exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextlib.contextmanager
    def cursor(self, *, snapshot: bool = False) -> Iterator[HotCursor]:
        """A driver cursor inside one transaction that commits on normal exit.

        For the few statements on the access path that run for every request, where
        SQLAlchemy's per-statement work costs more than the statement itself. On SQLite each
        thread keeps a connection of its own for this (checking a connection out of the pool
        and back cost as much as a short query); elsewhere the pool's driver connection is
        used without a SQLAlchemy ``Connection``. Write the SQL with ``?`` placeholders (see
        :meth:`HotCursor.execute`). On any error the transaction is rolled back; driver errors
        are raised as :meth:`session` raises them. Not re-entrant per
        thread: a nested call gets a pool connection and a transaction of its own.

        With ``snapshot`` the transaction only reads, and every statement in it sees the
        same snapshot of the database (by default PostgreSQL takes a new one per statement,
        and SQLite's driver runs each ``SELECT`` in a transaction of its own); writes in it
        fail on PostgreSQL.
        """
        errors = self.engine.dialect.loaded_dbapi.Error
        hot = self._hot_connection() if self._hot_path is not None else None
        try:
            raw = hot.connection if hot is not None else self.engine.raw_connection()
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"the database is unavailable: {_describe(exc)}") from exc
        try:
            cursor = raw.cursor()
            try:
                if snapshot:
                    cursor.execute(
                        # SQLite takes its snapshot at the first read after BEGIN.
                        "BEGIN"
                        if self.is_sqlite
                        else "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                    )
                yield HotCursor(cursor, qmark=self.is_sqlite)
            finally:
                cursor.close()
            raw.commit()
        except errors as exc:
            _rollback_quietly(raw)
            if hot is not None:
                self._drop_hot(hot)  # the next use opens a fresh one
            raise _failure(exc) from exc
        except BaseException:
            _rollback_quietly(raw)
            raise
        finally:
            if hot is None:
                raw.close()  # back to the pool
            else:
                hot.busy = False

    def write_rows(self, path: Path, *, sqlite: str, postgresql: str) -> WrittenRows:
        """Write the rows of one query to ``path`` for a bulk reader, in one consistent
        snapshot and without a Python object per row (see :meth:`HotCursor.write_rows`).
        Raises :class:`StoreUnavailable`."""
        with self.cursor() as cursor:
            return cursor.write_rows(path, sqlite=sqlite, postgresql=postgresql)

    def _hot_connection(self) -> _HotConnection | None:
        """This thread's own SQLite connection, opened on first use (and again in a forked
        child); None while the thread is already using it, so that nested cursors never
        share one transaction. Raises :class:`StoreUnavailable` if it cannot be opened."""
        hot: _HotConnection | None = getattr(self._hot, "connection", None)
        if hot is not None and hot.pid == os.getpid():
            if hot.busy:
                return None
            hot.busy = True
            return hot
        assert self._hot_path is not None
        try:
            connection = sqlite3.connect(self._hot_path, check_same_thread=False, timeout=10)
            _sqlite_pragmas(connection, None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the database is unavailable: {_describe(exc)}") from exc
        hot = _HotConnection(connection)
        hot.busy = True
        self._hot.connection = hot
        with self._hot_lock:
            self._hot_open.add(hot)
        return hot

    def _drop_hot(self, hot: _HotConnection) -> None:
        if getattr(self._hot, "connection", None) is hot:
            self._hot.connection = None
        with contextlib.suppress(sqlite3.Error):
            hot.connection.close()

    def _alembic_config(self) -> AlembicConfig:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        return cfg

    def migrate(self, revision: str = "heads") -> None:
        """Bring the schema to ``revision``: by default the newest of every part (Alembic
        ``heads``); one part's revision brings only that part and what it builds on."""
        from alembic import command

        try:
            command.upgrade(self._alembic_config(), revision)
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"cannot migrate the database: {_describe(exc)}") from exc

    def is_current(self) -> bool:
        """True when every migration head has been applied. Raises :class:`StoreUnavailable`
        when the database cannot be read."""
        try:
            with self.engine.connect() as conn:
                current = {row[0] for row in conn.exec_driver_sql(_CURRENT_HEADS)}
        except (OperationalError, DBAPIError):
            # No version table yet, or no database: Alembic tells which, as it always did.
            return self._is_current_by_alembic()
        return current == code_heads()

    def _is_current_by_alembic(self) -> bool:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic_config())
        try:
            with self.engine.connect() as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"the database is unavailable: {_describe(exc)}") from exc
        return current == set(script.get_heads())

    def dispose(self) -> None:
        """Close every connection: the pool's and the hot cursors' of every thread."""
        with self._hot_lock:
            open_now = list(self._hot_open)
            self._hot_open.clear()
        for hot in open_now:
            with contextlib.suppress(sqlite3.Error):
                hot.connection.close()
        self._hot = threading.local()
        self.engine.dispose()


@dataclass(frozen=True)
class WrittenRows:
    """Rows written by :meth:`Database.write_rows`: where, in which format, how many."""

    path: Path
    format: Literal["csv", "json_arrays"]
    count: int


class _HotConnection:
    """One thread's SQLite connection for :meth:`Database.cursor`; it closes itself when the
    thread ends (the thread's locals go, and with them the last reference)."""

    __slots__ = ("__weakref__", "busy", "connection", "pid")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.pid = os.getpid()
        self.busy = False


class HotCursor:
    """A driver cursor that takes SQL written with ``?`` placeholders on every backend.

    ``qmark`` says the driver takes ``?`` itself: SQLite's (PostgreSQL's takes ``%s``).
    """

    def __init__(self, cursor: Any, *, qmark: bool) -> None:
        self._cursor = cursor
        self._qmark = qmark

    def _sql(self, sql: str) -> str:
        # The statements are fixed strings of ours with no literal '?' and no '%'.
        return sql if self._qmark else sql.replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (an empty list for statements without rows)."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (any iterable: taken as it goes)."""
        self._cursor.executemany(self._sql(sql), rows)

    def chunks(
        self, sql: str, params: Sequence[Any] = (), size: int = 10_000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Run one query and yield its rows ``size`` at a time, for results too large to hold
        at once. On PostgreSQL the driver holds the whole result; use :meth:`copy_csv`."""
        self._cursor.execute(self._sql(sql), tuple(params))
        while rows := self._cursor.fetchmany(size):
            yield rows

    def write_rows(self, path: Path, *, sqlite: str, postgresql: str) -> WrittenRows:
        """Write the rows of one query (no parameters) to ``path`` for a bulk reader, without
        a Python object per row: on SQLite, ``sqlite`` selects one column, a
        ``json_array(…)`` per row, written one per line; on PostgreSQL the rows of
        ``postgresql`` are copied out as CSV (:meth:`copy_csv`). One statement, so one
        snapshot; with others in the same snapshot, use ``Database.cursor(snapshot=True)``.
        Raises :class:`OSError` when ``path`` cannot be written, and the driver's errors."""
        if not self._qmark:
            with path.open("wb") as binary:
                return WrittenRows(path, "csv", self.copy_csv(postgresql, binary))
        count = 0
        with path.open("w", encoding="utf-8") as out:
            for rows in self.chunks(sqlite, size=20_000):
                out.write("\n".join([row[0] for row in rows]))
                out.write("\n")
                count += len(rows)
        return WrittenRows(path, "json_arrays", count)

    def copy_in(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """PostgreSQL only: insert ``rows`` (values of ``columns``, as :meth:`execute` takes
        them; JSON as its text) into ``table`` with ``COPY … FROM STDIN``, in this
        transaction: one statement, the rows streamed, none parsed as SQL. A row that breaks
        a key fails the whole statement, as ``executemany`` would fail at it."""
        names = ", ".join(columns)
        with self._cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    def copy_csv(self, sql: str, out: BinaryIO) -> int:
        """PostgreSQL only: stream the rows of query ``sql`` (no parameters) into ``out`` as
        CSV (``COPY … TO STDOUT``: NULL as an empty field, ``"`` quoting); returns the number
        of rows."""
        with self._cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            for data in copy:
                out.write(data)
        return int(self._cursor.rowcount)


def _rollback_quietly(raw: Any) -> None:
    """Roll back after a failure, keeping the first error as the one to report. A pool
    connection too broken to roll back fails the pool's own reset on return too, and the pool
    discards it; a thread's own SQLite connection is dropped by :meth:`Database.cursor`."""
    with contextlib.suppress(Exception):
        raw.rollback()


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``postgres://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def _failure(exc: BaseException) -> CustosError:
    """The error a failed statement is reported as: a broken uniqueness rule is a conflict
    (409), named without the driver's text (it quotes the table and the key's values); a
    value the database refuses is the request's fault (422); anything else, other
    constraints included, means the database is unavailable."""
    if _is_unique_violation(exc):
        return StoreConflict(
            "the change conflicts with data already stored (it exists already, perhaps "
            "written meanwhile); nothing was changed"
        )
    if _is_bad_value(exc):
        # Not the driver's text: PostgreSQL's quotes the value it refused.
        return UnstorableValue(
            "a value in the request cannot be stored (a NUL character, or a number out of "
            "range); nothing was changed"
        )
    return StoreUnavailable(f"the database is unavailable: {_describe(exc)}")


def _is_unique_violation(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL's unique_violation
        return True
    return isinstance(orig, sqlite3.IntegrityError) and str(orig).startswith(
        "UNIQUE constraint failed"
    )


def _is_bad_value(exc: BaseException) -> bool:
    """A refused value (DB-API ``DataError``, SQLSTATE class 22), not a database fault."""
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("22"):
        return True
    # Every DB-API driver names it so (PEP 249); psycopg raises it for NUL before sending.
    return any(cls.__name__ == "DataError" for cls in type(orig).__mro__)


def _describe(exc: BaseException) -> str:
    """A short, secret-free description of a driver error (no SQL, no parameters)."""
    # SQLAlchemy wraps the driver's error in ``orig`` (its own text would carry the SQL and
    # parameters); the hot path's cursor raises the driver's error itself.
    orig = getattr(exc, "orig", None)
    if orig is None and not isinstance(exc, SQLAlchemyError):
        orig = exc
    text = str(orig) if orig is not None else type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__


def open_database(url: str, *, migrate: bool = False) -> Database:
    """Open ``url``; with ``migrate`` apply pending migrations, else require a current schema.

    Raises :class:`NotInitialised` when the schema is missing or behind.
    """
    db = Database(url)
    if migrate:
        db.migrate()
    elif not db.is_current():
        raise NotInitialised(
            "the custos database is not initialised or is behind this version of custos",
            hint="run `custos init`",
        )
    return db
