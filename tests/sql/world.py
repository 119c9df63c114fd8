"""Real data sources for the guarded-SQL tests: a DuckDB file, Parquet files, and a schema of
the test's own (with a read-only role) in the PostgreSQL database ``test`` on 127.0.0.1."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

#: Subjects with login rows; user-1..2 and user-42 are in tests.factories.SUPPORT_WORLD.
NAMED = ("user-1", "user-2", "user-42")
#: Many more subjects (not in the directory: aggregates never decide per subject).
CROWD = tuple(f"user-{n}" for n in range(100, 130))

COLUMNS = "user_id VARCHAR, login_at TIMESTAMP, ip VARCHAR, city VARCHAR, lat DOUBLE, email VARCHAR"


def login_rows(per_subject: int = 3) -> list[tuple[Any, ...]]:
    """Login rows: every subject logs in ``per_subject`` times from its own /24; the crowd
    shares two networks and two cities, so aggregates have big groups."""
    start = datetime(2026, 3, 1, tzinfo=UTC).replace(tzinfo=None)
    rows: list[tuple[Any, ...]] = []
    for n, subject in enumerate(NAMED):
        for i in range(per_subject):
            rows.append(
                (
                    subject,
                    start + timedelta(hours=n * 10 + i),
                    f"198.51.{100 + n}.{10 + i}",
                    "Lisbon" if n % 2 else "Paris",
                    48.8566 + n,
                    f"{subject}@example.org",
                )
            )
    for n, subject in enumerate(CROWD):
        for i in range(2):
            rows.append(
                (
                    subject,
                    start + timedelta(days=1, minutes=n * 7 + i),
                    f"203.0.{113 + n % 2}.{n + 1}",
                    "Berlin" if n % 2 else "Oslo",
                    52.52 + n / 100,
                    f"{subject}@example.net",
                )
            )
    return rows


def source_yaml(name: str, url: str, table: str, *, file: str | None = None, **extra: str) -> str:
    """The sources.yaml of one source with one login table mapped."""
    lines = [
        "sources:",
        f"  {name}:",
        f"    url: {url!r}",
        *(f"    {k}: {v}" for k, v in extra.items()),
        "    tables:",
        f"      {table}:",
        "        subject: user_id",
        *([f"        file: {file}"] if file else []),
        "        columns:",
        "          login_at: plain",
        "          ip: ip_history",
        "          city: {category: location, coarse: none}",
        "          lat: {category: location, coarse: grid}",
        "          email: contact",
    ]
    return "\n".join(lines) + "\n"


def make_duckdb(path: Path, rows: list[tuple[Any, ...]] | None = None) -> Path:
    """A DuckDB file holding ``logins``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE logins ({COLUMNS})")
        con.executemany("INSERT INTO logins VALUES (?, ?, ?, ?, ?, ?)", rows or login_rows())
    return path


def make_parquet(folder: Path, rows: list[tuple[Any, ...]] | None = None) -> Path:
    """``logins`` as two Parquet files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = rows or login_rows()
    half = len(data) // 2
    with duckdb.connect(":memory:") as con:
        con.execute(f"CREATE TABLE logins ({COLUMNS})")
        for part, chunk in enumerate((data[:half], data[half:])):
            con.execute("DELETE FROM logins")
            con.executemany("INSERT INTO logins VALUES (?, ?, ?, ?, ?, ?)", chunk)
            target = str(folder / f"part-{part}.parquet").replace("'", "''")
            con.execute(f"COPY logins TO '{target}' (FORMAT parquet)")
    return folder


def pg_reachable() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@dataclass(frozen=True)
class PgSource:
    """A schema of the test's own in the database ``test``, its ``logins`` table, and a
    role that may only read it."""

    schema: str
    role: str

    @property
    def table(self) -> str:
        return f"{self.schema}.logins"

    @property
    def reader_url(self) -> str:
        return f"postgresql://{self.role}@127.0.0.1:5432/test"

    @property
    def admin_url(self) -> str:
        return "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def pg_source(rows: list[tuple[Any, ...]] | None = None) -> Iterator[PgSource]:
    """Create the schema, table and read-only role; drop them on leaving. Skips the test
    when the PostgreSQL at 127.0.0.1:5432 cannot be reached."""
    if not pg_reachable():
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (database test)")
    tag = uuid.uuid4().hex[:10]
    made = PgSource(schema=f"sqlt_{tag}", role=f"custos_reader_{tag}")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {made.schema}")
        admin.execute(
            f"CREATE TABLE {made.table} (user_id text, login_at timestamp, ip inet, city text, "
            "lat double precision, email text, note text)"
        )
        with admin.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {made.table} (user_id, login_at, ip, city, lat, email) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                rows or login_rows(),
            )
        admin.execute(f"CREATE ROLE {made.role} LOGIN PASSWORD 'reader-secret'")
        admin.execute(f"GRANT USAGE ON SCHEMA {made.schema} TO {made.role}")
        admin.execute(f"GRANT SELECT ON {made.table} TO {made.role}")
    try:
        yield made
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [made.role],
            )
            admin.execute(f"DROP SCHEMA {made.schema} CASCADE")
            admin.execute(f"DROP ROLE {made.role}")


def make_ledger_read_only(system: Any) -> None:
    """Make every append to the ledger fail (a trigger), as tests/access do."""
    from sqlalchemy import text

    with system.db.engine.begin() as conn:
        if system.db.is_sqlite:
            conn.execute(
                text(
                    "CREATE TRIGGER ro BEFORE INSERT ON ledger_entries "
                    "BEGIN SELECT RAISE(ABORT, 'read-only'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION ro() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'read-only'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER ro BEFORE INSERT ON ledger_entries "
                    "FOR EACH ROW EXECUTE FUNCTION ro()"
                )
            )


#: Who queries in these tests, besides tests.factories.SUPPORT_WORLD's support agents.
ANALYSTS = {
    "principals": [
        {
            "id": "emp-9001",
            "name": "emp-9001",
            "role": "data_scientist",
            "team": "analytics",
            "country": "US",
        },
    ],
    "subjects": [],
    "tickets": [],
}


def sql_source(system: Any) -> Path:
    """Give ``system``'s home a DuckDB source ``app`` (data/app.duckdb, its ``logins``) and
    the sources.yaml mapping it. Returns the home."""
    home: Path = system.settings.home
    make_duckdb(home / "data" / "app.duckdb")
    (home / "sources.yaml").write_text(
        source_yaml("app", "duckdb:data/app.duckdb", "logins"), encoding="utf-8"
    )
    return home


def sql_home(system: Any) -> Path:
    """:func:`sql_source` with the SUPPORT_WORLD directory and the analysts loaded."""
    from tests.factories import SUPPORT_WORLD, load_org

    load_org(system, SUPPORT_WORLD)
    load_org(system, ANALYSTS)
    return sql_source(system)
