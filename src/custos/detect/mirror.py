"""A copy of an installation's access events and directory in a DuckDB file in its home
(``detect/mirror.duckdb``), kept between detection runs together with the kept
classification (:class:`custos.detect.kept.Classification`), so that a run copies and
classifies only what changed since the last one instead of every stored event.

The database stays the record; the mirror is derived from it and can be deleted at any time
(the next run builds it again). It holds what the database holds about accesses — who looked
at whom — so it is made private to the home's owner (folder 0700, file 0600), like the
database file itself.

How a run knows what changed (see :meth:`EventStore.write_changes` and
:meth:`DirectoryStore.write_changes`): every stored or changed event takes the next number of
the event store's change sequence, and every directory row written is stamped with the
directory version its write created. The mirror remembers the highest of each it has copied,
and the event store's identity, count and highest number as the store reported them with the
rows. A run copies the rows beyond those marks and then checks that its copy holds exactly as
many events as the store, up to the same number; an identity that differs (another database),
marks that went backwards (a restored backup), or a count that disagrees make it copy
everything again, so that a copy that is not the store's is never taken for one.

Rows removed from the directory (a feed deleting a record, ``org import --prune``) stamp
nothing, but move the directory version: whenever it moved, a run also reads the ids of every
directory row (:meth:`DirectoryStore.write_ids`) and drops from the copy each row they do not
name, and the kept classification classifies again the events citing a ticket that went. A
ticket deleted in the ticket system thus stops explaining accesses on the next run, as it
does in a fresh copy.

Everything a run changes in the file is one DuckDB transaction: a run that fails leaves the
mirror as the last run left it. Runs on one home take turns (a lock file beside the mirror).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from custos.detect.config import DetectConfig
from custos.detect.events import EventStore
from custos.detect.kept import Classification
from custos.detect.loading import first_line, literal, read_rows, working_folder, write_grants
from custos.detect.tables import (
    EVENT_COLUMNS,
    GRANT_COLUMNS,
    PRINCIPAL_COLUMNS,
    SUBJECT_COLUMNS,
    TICKET_COLUMNS,
    create_table,
)
from custos.directory import DirectoryStore
from custos.errors import ConfigurationError

#: Format of the mirror's own tables: another value makes a run copy everything again.
#: 2: grants are copied; 3: subjects carry ``link_group``; 4: rows the directory removed are
#: dropped (a mirror of an earlier format may still hold some, so it is copied again once).
FORMAT = "4"
#: The catalog the mirror's file is attached as.
CATALOG = "mirror"
#: What the change export writes per event: the columns the rules read, its number in the
#: change sequence, and whether it is a release folded into its decision (left out).
CHANGED_EVENT_COLUMNS = {**EVENT_COLUMNS, "seq": "BIGINT", "folded": "BOOLEAN"}
_DIRECTORY = {
    "principals": PRINCIPAL_COLUMNS,
    "subjects": SUBJECT_COLUMNS,
    "tickets": TICKET_COLUMNS,
}


@dataclass(frozen=True, slots=True)
class MirrorUpdate:
    """What one run did to the mirror: how many events detection sees in it, how many
    event rows and directory rows it copied, how many directory rows it dropped because
    the directory no longer holds them, and whether it copied everything."""

    events: int
    copied_events: int
    copied_directory: int
    removed_directory: int
    rebuilt: bool


@contextlib.contextmanager
def _turn(folder: Path) -> Iterator[None]:
    """Hold the home's detection lock (waiting for another run to finish)."""
    try:
        fd = os.open(folder / "mirror.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigurationError(
            f"detection cannot write in {folder}: {exc.strerror or type(exc).__name__}",
            hint="check the home folder's owner and permissions",
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def open_mirror(
    home: Path, con: duckdb.DuckDBPyConnection, config: DetectConfig
) -> Iterator[Mirror]:
    """Attach ``home``'s mirror (made if missing) to ``con`` for one run, holding the
    home's detection lock meanwhile. Raises :class:`ConfigurationError` when the folder or
    file cannot be made or opened (the mirror can be removed: it is built again)."""
    folder = home / "detect"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"detection cannot make {folder}: {exc.strerror or type(exc).__name__}",
            hint="check the home folder's owner and permissions",
        ) from None
    path = folder / "mirror.duckdb"
    with _turn(folder):
        try:
            con.execute(f"ATTACH {literal(str(path))} AS {CATALOG}")
            # DuckDB makes the file with the process's umask; the folder is private already.
            path.chmod(0o600)
        except (OSError, duckdb.Error) as exc:
            raise ConfigurationError(
                f"detection cannot open its copy of the events {path} ({first_line(exc)})",
                hint="it is built from the database: remove it and run detection again",
            ) from None
        try:
            yield Mirror(con, config, path)
        finally:
            con.execute(f"DETACH {CATALOG}")


class Mirror:
    """The mirror attached to a connection (see :func:`open_mirror`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, config: DetectConfig, path: Path):
        self.con = con
        self.path = path
        self.kept = Classification(con, config, CATALOG, told=True)

    def _meta(self) -> dict[str, str]:
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {CATALOG}.meta (key VARCHAR, value VARCHAR)")
        return dict(self.con.execute(f"SELECT key, value FROM {CATALOG}.meta").fetchall())

    def refresh(self, events: EventStore, directory: DirectoryStore) -> MirrorUpdate:
        """Bring the mirror and its kept classification up to date with the database, and
        make ``events``, ``principals``, ``subjects`` and ``tickets`` views over it (the
        tables :class:`Detector` reads). Raises :class:`StoreUnavailable` when the database
        cannot be read, and :class:`ConfigurationError` when the temporary folder cannot
        take the changes."""
        meta = self._meta()
        whole = meta.get("format") != FORMAT
        if whole:
            self._make()
        for _ in range(2):
            with working_folder() as folder:
                update = self._copy(folder, events, directory, meta, whole)
            if update is not None:
                return update
            whole = True  # the copy was not the store's: everything again
        raise AssertionError("a whole copy always matches the store it was read from")

    def _copy(
        self,
        folder: Path,
        events: EventStore,
        directory: DirectoryStore,
        meta: dict[str, str],
        whole: bool,
    ) -> MirrorUpdate | None:
        """One attempt; None when the copy turned out not to be the store's (nothing of it
        is kept)."""
        con, cat = self.con, CATALOG
        changes = events.write_changes(folder / "events", 0 if whole else int(meta["high"]))
        if not whole and (changes.store != meta["store"] or changes.high < int(meta["high"])):
            return None
        written = directory.write_changes(folder, -1 if whole else int(meta["version"]))
        if not whole and written.version < int(meta["version"]):
            return None
        # Removals stamp no row but move the version: then every id, read after the changes
        # (see DirectoryStore.write_ids), names what the copy may keep.
        present = None
        if not whole and written.version != int(meta["version"]):
            present = directory.write_ids(folder)
        # Read into temporary tables first: a transaction writes to one database only, and
        # temporary tables do not count.
        read_rows(con, "incoming", CHANGED_EVENT_COLUMNS, changes.rows, temporary=True)
        for table, columns in _DIRECTORY.items():
            read_rows(con, f"new_{table}", columns, getattr(written, table), temporary=True)
            if present is not None:
                read_rows(con, f"ids_{table}", {"id": "VARCHAR"}, present[table], temporary=True)
        # Grants are copied whole on every run: they are a few per thousand events, and a
        # grant row changes after it is made (revoked), which no change stamp tells yet.
        grants = write_grants(events.db, folder / "grants")
        read_rows(con, "new_grants", GRANT_COLUMNS, grants, temporary=True)
        self._views()
        con.execute("BEGIN")
        try:
            if whole:
                for table in ("events", *_DIRECTORY):
                    con.execute(f"DELETE FROM {cat}.{table}")
                # The kept classification goes with them: emptied by its next open().
                con.execute(f"DROP TABLE IF EXISTS {cat}.det_meta")
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE replaced AS
                    SELECT * FROM {cat}.events
                    WHERE NOT folded AND id IN (SELECT id FROM incoming)"""
            )
            con.execute(f"DELETE FROM {cat}.events WHERE id IN (SELECT id FROM incoming)")
            con.execute(f"INSERT INTO {cat}.events BY NAME SELECT * FROM incoming")
            for table in _DIRECTORY:
                con.execute(f"DELETE FROM {cat}.{table} WHERE id IN (SELECT id FROM new_{table})")
                con.execute(f"INSERT INTO {cat}.{table} BY NAME SELECT * FROM new_{table}")
                gone = "SELECT NULL::VARCHAR AS id WHERE false"
                if present is not None:
                    gone = (
                        f"SELECT id FROM {cat}.{table} WHERE id NOT IN (SELECT id FROM ids_{table})"
                    )
                con.execute(f"CREATE OR REPLACE TEMP TABLE gone_{table} AS {gone}")
                con.execute(f"DELETE FROM {cat}.{table} WHERE id IN (SELECT id FROM gone_{table})")
            con.execute(f"DELETE FROM {cat}.grants")
            con.execute(f"INSERT INTO {cat}.grants BY NAME SELECT * FROM new_grants")
            row = con.execute(
                f"SELECT count(*), coalesce(max(seq), 0) FROM {cat}.events"
            ).fetchone()
            if row != (changes.count, changes.high):
                con.execute("ROLLBACK")
                return None
            if self.kept.open():
                self.kept.start()
            else:
                self.kept.remove("replaced")
                self.kept.follow_tickets("new_tickets", removed="gone_tickets")
                self.kept.add(f"(SELECT {', '.join(EVENT_COLUMNS)} FROM incoming WHERE NOT folded)")
            con.execute(f"DELETE FROM {cat}.meta")
            con.execute(
                f"INSERT INTO {cat}.meta VALUES ('format', ?), ('store', ?), ('high', ?), "
                "('version', ?)",
                [FORMAT, changes.store, str(changes.high), str(written.version)],
            )
            seen = con.execute("SELECT count(*) FROM events").fetchone()
            removed = con.execute(
                "SELECT "
                + " + ".join(f"(SELECT count(*) FROM gone_{table})" for table in _DIRECTORY)
            ).fetchone()
            con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if not isinstance(exc, duckdb.Error):
                raise
            raise ConfigurationError(
                f"detection cannot bring its copy of the events {self.path} up to date "
                f"({first_line(exc)}); it is as the last run left it",
                hint="it is built from the database: remove it and run detection again",
            ) from None
        finally:
            for name in (
                "incoming",
                "replaced",
                "new_grants",
                *(f"{kind}_{t}" for kind in ("new", "ids", "gone") for t in _DIRECTORY),
            ):
                con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        copied = sum(getattr(written, table).count for table in _DIRECTORY)
        return MirrorUpdate(
            events=int(seen[0]) if seen else 0,
            copied_events=changes.rows.count,
            copied_directory=copied,
            removed_directory=int(removed[0]) if removed else 0,
            rebuilt=whole,
        )

    def _make(self) -> None:
        """Make the mirror's tables anew, empty (new, or of another format)."""
        con, cat = self.con, CATALOG
        tables = {"events": CHANGED_EVENT_COLUMNS, **_DIRECTORY, "grants": GRANT_COLUMNS}
        for table, columns in tables.items():
            con.execute(f"DROP TABLE IF EXISTS {cat}.{table}")
            con.execute(create_table(f"{cat}.{table}", columns))

    def _views(self) -> None:
        """The four tables the rules read, as views over the mirror (the events without the
        releases folded into their decisions)."""
        con, cat = self.con, CATALOG
        for table in (*_DIRECTORY, "grants"):
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {cat}.{table}")
        con.execute(
            f"CREATE OR REPLACE VIEW events AS SELECT {', '.join(EVENT_COLUMNS)} "
            f"FROM {cat}.events WHERE NOT folded"
        )
