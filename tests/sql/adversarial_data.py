"""Twin databases for the adversarial suite: the same people, the same coarse values, different
precise values.

Every probe the analyzer lets through runs, rewritten with every category coarse, on both
twins. If its result differs between them, something precise (the last octet of an address,
the local part of an email, the exact coordinate, the city) reached it: the result may depend
on coarse values only. The result must also never hold a precise value itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from custos.sql import DataMap, parse_data_map

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres"

MAP_TEXT = """\
sources:
  lake:
    url: duckdb:twin.duckdb
    tables:
      logins:
        subject: user_id
        columns:
          seen: plain
          device_id: plain
          ip: ip_history
          lat: location
          city: {category: location, coarse: none}
          email: contact
      devices:
        subject: user_id
        columns:
          device_id: plain
          model: device
  app:
    url: postgresql://reader@127.0.0.1:5432/test
    tables:
      logins:
        subject: user_id
        columns:
          seen: plain
          device_id: plain
          ip: ip_history
          lat: location
          city: {category: location, coarse: none}
          email: contact
      devices:
        subject: user_id
        columns:
          device_id: plain
          model: device
"""


def data_map() -> DataMap:
    return parse_data_map(MAP_TEXT)


@dataclass(frozen=True)
class Login:
    user_id: str
    seen: datetime
    device_id: str
    ip: str
    lat: float
    city: str
    email: str


SUBJECTS = ("u-journalist", "u-activist", "u-plain", "u-other")


def logins(twin: int) -> list[Login]:
    """The rows of twin 0 or 1: identical coarse values, different precise ones."""
    rows: list[Login] = []
    for n, user in enumerate(SUBJECTS):
        for i in range(3):
            octet = 7 + 40 * i + 3 * n + 100 * twin  # the last octet differs between twins
            rows.append(
                Login(
                    user_id=user,
                    seen=datetime(2024, 5, 1 + i, 8 + n, 30),
                    device_id=f"dev-{n}-{i % 2}",
                    ip=(
                        f"198.51.{100 + n}.{octet}" if i < 2 else f"2001:db8:{n:x}:{i:x}::{octet:x}"
                    ),
                    lat=48.8 + 0.01 * (n + 1) + 0.05 * twin + 0.001 * i,
                    city=("Paris", "Lyon")[twin] + f"-{n}",
                    email=f"{user[2]}{'abc' if twin == 0 else 'xyz'}{n}@example.org",
                )
            )
    return rows


def devices(twin: int) -> list[tuple[str, str, str]]:
    return [
        (user, f"dev-{n}-{d}", ("Pixel", "iPhone")[twin] + f" {n}{d}")
        for n, user in enumerate(SUBJECTS)
        for d in range(2)
    ]


def precise_values(twin: int) -> set[str]:
    """Every precise value of twin ``twin``, as text, and each address's last part."""
    values: set[str] = set()
    for row in logins(twin):
        values |= {row.ip, row.city, row.email, f"{row.lat}", row.email.split("@")[0]}
    for _, _, model in devices(twin):
        values.add(model)
    return values


def build_duckdb(path: Path, twin: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE logins (user_id VARCHAR, seen TIMESTAMP, device_id VARCHAR,"
            " ip VARCHAR, lat DOUBLE, city VARCHAR, email VARCHAR)"
        )
        con.executemany(
            "INSERT INTO logins VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r.user_id, r.seen, r.device_id, r.ip, r.lat, r.city, r.email) for r in logins(twin)],
        )
        con.execute("CREATE TABLE devices (user_id VARCHAR, device_id VARCHAR, model VARCHAR)")
        con.executemany("INSERT INTO devices VALUES (?, ?, ?)", devices(twin))
        # Not mapped: a query naming it must be refused, never run.
        con.execute("CREATE TABLE secrets (user_id VARCHAR, ip VARCHAR)")
        con.execute("INSERT INTO secrets VALUES ('u-journalist', '203.0.113.99')")


@contextmanager
def pg_twins() -> Iterator[tuple[str, str]]:
    """Two schemas of the test database filled with the twins; dropped afterwards."""
    schemas = (f"custos_adv_{uuid.uuid4().hex[:8]}_0", f"custos_adv_{uuid.uuid4().hex[:8]}_1")
    with psycopg.connect(PG_DSN, autocommit=True) as con:
        for twin, schema in enumerate(schemas):
            con.execute(f'CREATE SCHEMA "{schema}"')
            con.execute(
                f'CREATE TABLE "{schema}".logins (user_id text, seen timestamp, device_id text,'
                " ip inet, lat double precision, city text, email text)"
            )
            with con.cursor() as cur:
                cur.executemany(
                    f'INSERT INTO "{schema}".logins VALUES (%s, %s, %s, %s, %s, %s, %s)',
                    [
                        (r.user_id, r.seen, r.device_id, r.ip, r.lat, r.city, r.email)
                        for r in logins(twin)
                    ],
                )
                con.execute(
                    f'CREATE TABLE "{schema}".devices (user_id text, device_id text, model text)'
                )
                cur.executemany(
                    f'INSERT INTO "{schema}".devices VALUES (%s, %s, %s)', devices(twin)
                )
            con.execute(f'CREATE TABLE "{schema}".secrets (user_id text, ip inet)')
            con.execute(f"INSERT INTO \"{schema}\".secrets VALUES ('u-journalist', '203.0.113.99')")
        try:
            yield schemas
        finally:
            for schema in schemas:
                con.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run_duckdb(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [tuple(row) for row in con.execute(sql).fetchall()]


def run_pg(schema: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN) as con:
        con.read_only = True
        con.execute(f'SET search_path TO "{schema}"')
        con.execute("SET statement_timeout = '5s'")
        return [tuple(row) for row in con.execute(sql).fetchall()]


def canonical(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """Rows as sorted text: twins may order ties differently, which reveals nothing."""
    return sorted(repr(row) for row in rows)


def leaked(rows: Sequence[tuple[Any, ...]], twin: int) -> set[str]:
    """The precise values of ``twin`` found in ``rows`` (as whole values or inside text)."""
    text = " ".join(str(value) for row in rows for value in row)
    found = {value for value in precise_values(twin) if value in text}
    # A precise coordinate read back as a float.
    coordinates = {row.lat for row in logins(twin)}
    found |= {str(value) for row in rows for value in row if value in coordinates}
    return found
