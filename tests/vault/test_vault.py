"""The vault on a real database: encryption at rest, coarse derivatives, validation,
ciphertext binding, and crypto-shredding."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from custos.access import Custos
from custos.errors import IntegrityError, InvalidInput, ValidationFailed
from custos.store.vault import VaultKeyRow, VaultRecordRow
from custos.vault import parse_lines
from custos.vault.coarse import embedded_ipv4, grid_cell, ip_network
from custos.vocabulary import DEFAULT_VOCABULARY
from tests.factories import SUPPORT_WORLD, load_org

UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def records(*items: dict[str, object]) -> list[str]:
    return [json.dumps(item) for item in items]


def login(id_: str, subject: str, when: str, ip: str, ua: str | None = UA) -> dict[str, object]:
    item: dict[str, object] = {
        "id": id_,
        "kind": "login",
        "subject": subject,
        "time": when,
        "ip": ip,
    }
    if ua:
        item["user_agent"] = ua
    return item


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    return system


def test_precise_values_are_never_stored_in_clear(world: Custos, home: Path) -> None:
    world.ingest(
        records(
            login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"),
            {
                "id": "p-1",
                "kind": "location",
                "subject": "user-1",
                "time": "2026-11-20T10:00:00Z",
                "lat": 48.85661,
                "lon": 2.35222,
                "accuracy": 12,
            },
            {
                "id": "c-1",
                "kind": "contact",
                "subject": "user-1",
                "time": "2026-11-20T10:00:00Z",
                "email": "jane.doe@example.org",
                "phone": "+1 555 0199",
            },
        ),
        "t.jsonl",
    )
    if not world.db.is_sqlite:
        pytest.skip("scans the SQLite files on disk")
    world.db.dispose()
    blob = b"".join(p.read_bytes() for p in home.glob("custos.db*"))
    for secret in (b"198.51.100.77", b"48.85661", b"jane.doe", b"555 0199", b"Chrome/120"):
        assert secret not in blob


def test_coarse_derivatives(world: Custos) -> None:
    world.ingest(
        records(
            login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"),
            login("l-2", "user-1", "2026-11-21T10:00:00Z", "2001:db8:abcd:12::1", ua=None),
            {
                "id": "p-1",
                "kind": "location",
                "subject": "user-1",
                "time": "2026-11-20T10:00:00Z",
                "lat": 48.85661,
                "lon": 2.35222,
            },
            {
                "id": "c-1",
                "kind": "contact",
                "subject": "user-1",
                "time": "2026-11-20T10:00:00Z",
                "email": "jane.doe@example.org",
                "phone": "+1 555 0199",
            },
        ),
        "t.jsonl",
    )
    ips = world.vault.release("user-1", "ip_history", "coarse").records
    assert [r["network"] for r in ips] == ["198.51.100.0/24", "2001:db8:abcd::/48"]
    assert all("ip" not in r for r in ips)
    (device,) = world.vault.release("user-1", "device", "coarse").records
    assert (device["browser"], device["os"]) == ("Chrome", "Windows")
    assert "user_agent" not in device
    (place,) = world.vault.release("user-1", "location", "coarse").records
    assert place["grid_km"] == 10.0
    assert abs(place["lat"] - 48.85661) < 0.1
    (contact,) = world.vault.release("user-1", "contact", "coarse").records
    assert contact == {
        "id": "c-1",
        "time": "2026-11-20T10:00:00Z",
        "email": "j***@***.org",
        "phone": "***99",
    }
    precise = world.vault.release("user-1", "ip_history", "precise").records
    assert [r["ip"] for r in precise] == ["198.51.100.77", "2001:db8:abcd:12::1"]


# One world for every example: each record has its own id, and a repeated one is a no-op.
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    when=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2099, 12, 31),
        timezones=st.just(UTC),
    )
)
def test_record_times_come_back_as_they_went_in(world: Custos, when: datetime) -> None:
    """Release reads times back from the driver's own form (SQLite's text, psycopg's
    datetime); whole seconds and microseconds alike must come back as ISO 8601 UTC."""
    record_id = f"t-{when.timestamp()}"
    stamp = when.isoformat().replace("+00:00", "Z")
    world.ingest(records(login(record_id, "user-2", stamp, "192.0.2.1")), "t.jsonl")
    found = {
        r["id"]: r["time"] for r in world.vault.release("user-2", "ip_history", "coarse").records
    }
    assert found[record_id] == stamp


def test_a_bad_file_is_reported_by_line_and_stores_nothing(world: Custos) -> None:
    lines = [
        *records(
            login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"),
            login("l-2", "user-1", "2026-11-20T10:00:00Z", "198.51.100.300"),
            login("l-3", "user-404", "2026-11-20T10:00:00Z", "198.51.100.9"),
            {
                "id": "p-1",
                "kind": "location",
                "subject": "user-1",
                "time": "2026-11-20T10:00:00Z",
                "lat": 123.0,
                "lon": 2.0,
            },
        ),
        "{not json",
        '{"id": "x", "kind": "selfie"}',
        '{"id": "p-2", "kind": "location", "subject": "user-1", '
        '"time": "2026-11-20T10:00:00Z", "lat": true, "lon": "2.0"}',
    ]
    with pytest.raises(ValidationFailed) as caught:
        world.ingest(lines, "bad.jsonl")
    problems = caught.value.problems
    assert any(p.startswith("bad.jsonl: line 2: field 'ip'") for p in problems)
    assert any(p.startswith("bad.jsonl: line 4: field 'lat'") for p in problems)
    assert "bad.jsonl: line 5: not valid JSON" in problems
    assert any(p.startswith("bad.jsonl: line 6: field 'kind'") for p in problems)
    # true is no latitude and "2.0" no longitude, though Python would take both as numbers.
    assert any(p.startswith("bad.jsonl: line 7: field 'lat'") and "lon" in p for p in problems)
    assert any("line 3: field 'subject': unknown subject 'user-404'" in p for p in problems)
    assert "198.51.100.300" not in str(caught.value)  # never the value
    with world.db.session() as session:
        assert session.scalars(select(VaultRecordRow.id)).all() == []


def test_rejects_are_set_aside_and_the_rest_stored(world: Custos, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    lines = records(
        login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"),
        login("l-2", "user-1", "2026-11-20T10:00:00Z", "not-an-ip"),
    )
    report = world.ingest(lines, "t.jsonl", rejects=rejects)
    assert (report.added, report.rejected) == (2, 1)
    assert rejects.read_text().splitlines() == [lines[1]]
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600


def test_ingesting_twice_does_not_duplicate(world: Custos) -> None:
    lines = records(login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"))
    assert world.ingest(lines, "t").added == 2
    again = world.ingest(lines, "t")
    assert (again.added, again.unchanged) == (0, 2)


def test_a_record_id_is_never_reused_within_a_file_or_against_what_is_stored(
    world: Custos, tmp_path: Path
) -> None:
    location = {
        "id": "l-1:device",  # the id of the device record the login on line 1 makes
        "kind": "location",
        "subject": "user-1",
        "time": "2026-11-20T10:00:00Z",
        "lat": 40.7,
        "lon": -74.0,
        "accuracy": 30,
    }
    with pytest.raises(ValidationFailed) as caught:
        world.ingest(
            records(login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"), location),
            "t.jsonl",
        )
    assert caught.value.problems == [
        "t.jsonl: line 2: record id 'l-1:device' is made by line 1 too"
    ]
    world.ingest(records(login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77")), "a")
    with pytest.raises(ValidationFailed, match="already stored differently"):
        world.ingest(records(login("l-1", "user-2", "2026-11-21T10:00:00Z", "198.51.100.8")), "b")
    # A rejects file can be neither the input itself nor somewhere unwritable; either way
    # nothing is stored.
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(records(login("l-9", "user-1", "2026-11-20T10:00:00Z", "x"))))
    result = subprocess.run(
        [sys.executable, "-m", "custos", "vault", "ingest", str(source), "--rejects", str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUSTOS_HOME": str(world.settings.home)},
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "that is the input file" in result.stderr
    with pytest.raises(InvalidInput, match="cannot write the rejects file"):
        world.ingest(
            records(
                login("l-8", "user-1", "2026-11-20T10:00:00Z", "x"),
                login("l-7", "user-1", "2026-11-20T10:00:00Z", "198.51.100.7"),
            ),
            "c",
            rejects=tmp_path / "missing" / "rejects.jsonl",
        )
    assert world.vault.release("user-1", "ip_history", "coarse").count == 1


def test_a_ciphertext_copied_onto_another_row_does_not_decrypt(world: Custos) -> None:
    world.ingest(
        records(
            login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77", ua=None),
            login("l-2", "user-2", "2026-11-20T10:00:00Z", "192.0.2.8", ua=None),
        ),
        "t",
    )
    with world.db.engine.begin() as conn:
        row = conn.execute(
            text("SELECT nonce, ciphertext, key_id FROM vault_records WHERE id = 'l-1'")
        ).one()
        conn.execute(
            text(
                "UPDATE vault_records SET nonce = :n, ciphertext = :c, key_id = :k WHERE id = 'l-2'"
            ),
            {"n": row[0], "c": row[1], "k": row[2]},
        )
    with pytest.raises(IntegrityError) as caught:
        world.vault.release("user-2", "ip_history", "precise")
    assert "record 'l-2' does not decrypt" in caught.value.message
    assert "198.51" not in caught.value.message
    assert "192.0" not in caught.value.message


def test_shredding_makes_expired_precise_values_unrecoverable(world: Custos) -> None:
    world.ingest(
        records(
            login("old", "user-1", "2026-01-05T10:00:00Z", "198.51.100.77"),
            login("new", "user-1", "2026-11-20T10:00:00Z", "198.51.100.78"),
            {
                "id": "c-1",
                "kind": "contact",
                "subject": "user-1",
                "time": "2026-01-05T10:00:00Z",
                "email": "a@example.org",
            },
        ),
        "t",
        now=datetime(2026, 1, 10, tzinfo=UTC),  # "old" arrives well within its retention
    )
    size = world.ledger.size()
    report = world.shred(datetime(2026, 11, 25, tzinfo=UTC))
    assert report.categories == {"ip_history": 1, "device": 1}
    assert json.loads(world.ledger.entry(size))["type"] == "shred"
    # Try every ciphertext left with every data key left: only the unexpired ones open.
    with world.db.session() as session:
        keys = [
            AESGCM(world.vault.keys.unwrap(k.id, k.wrapped))
            for k in session.scalars(select(VaultKeyRow))
            if k.wrapped is not None
        ]
        rows = session.scalars(select(VaultRecordRow)).all()
        opened = set()
        for row in rows:
            for key in keys:
                if row.ciphertext is None or row.nonce is None:
                    continue
                try:
                    key.decrypt(
                        row.nonce,
                        row.ciphertext,
                        f"custos-vault/v1\x1f{row.subject}\x1f{row.category}\x1f{row.id}".encode(),
                    )
                    opened.add(row.id)
                except InvalidTag:
                    pass
        assert opened == {"new", "new:device", "c-1"}
        old = session.get(VaultRecordRow, "old")
        assert old is not None
        assert old.ciphertext is None
        assert old.coarse["network"] == "198.51.100.0/24"
    released = world.vault.release("user-1", "ip_history", "precise")
    assert [r.get("ip") for r in released.records] == [None, "198.51.100.78"]
    assert released.shredded == 1
    assert world.vault.release("user-1", "ip_history", "coarse").count == 2


def openable(world: Custos) -> set[str]:
    """Ids of the records some live data key opens (every ciphertext tried with every key)."""
    with world.db.session() as session:
        keys = [
            AESGCM(world.vault.keys.unwrap(k.id, k.wrapped))
            for k in session.scalars(select(VaultKeyRow))
            if k.wrapped is not None
        ]
        opened = set()
        for row in session.scalars(select(VaultRecordRow)):
            if row.ciphertext is None or row.nonce is None:
                continue
            aad = f"custos-vault/v1\x1f{row.subject}\x1f{row.category}\x1f{row.id}".encode()
            for key in keys:
                try:
                    key.decrypt(row.nonce, row.ciphertext, aad)
                    opened.add(row.id)
                except InvalidTag:
                    pass
    return opened


def test_records_past_retention_arrive_shredded(world: Custos, home: Path) -> None:
    """Ingest keeps only the coarse derivative of a record already past its retention: its
    precise values are never encrypted, so they are never decryptable, not even until the
    next shredding; nothing else changes for the records around it."""
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)  # 90 days' retention: from 2026-09-07 12:00
    report = world.ingest(
        records(
            login("lapsed", "user-1", "2026-09-07T10:00:00Z", "198.51.100.77"),  # 90 d 2 h
            login("kept", "user-1", "2026-09-08T10:00:00Z", "198.51.100.78"),  # same week
            login("ancient", "user-1", "2024-02-01T10:00:00Z", "2002:c633:6363::1", ua=None),
            {
                "id": "p-1",
                "kind": "location",
                "subject": "user-1",
                "time": "2026-08-01T10:00:00Z",
                "lat": 48.85661,
                "lon": 2.35222,
            },
            {  # contact data has no retention: kept until deleted, however old
                "id": "c-1",
                "kind": "contact",
                "subject": "user-1",
                "time": "2020-01-05T10:00:00Z",
                "email": "jane.doe@example.org",
            },
        ),
        "t",
        now=now,
    )
    assert (report.added, report.expired) == (7, 4)  # lapsed, its device, ancient, p-1
    entry = json.loads(world.ledger.entry(world.ledger.size() - 1))
    assert (entry["type"], entry["added"], entry["expired"]) == ("ingest", 7, 4)
    assert openable(world) == {"kept", "kept:device", "c-1"}
    with world.db.session() as session:
        for record_id in ("lapsed", "lapsed:device", "ancient", "p-1"):
            row = session.get(VaultRecordRow, record_id)
            assert row is not None
            assert (row.nonce, row.ciphertext) == (None, None), record_id
        # No data key was made for a week that holds only lapsed records.
        periods = {k.period for k in session.scalars(select(VaultKeyRow))}
    assert "2024-W05" not in periods
    assert "2026-W31" not in periods  # p-1's week
    if world.db.engine.dialect.name == "sqlite":
        blob = b"".join(f.read_bytes() for f in home.glob("custos.db*"))
        for secret in (b"198.51.100.77", b"2002:c633:6363", b"48.85661"):
            assert secret not in blob
    precise = world.vault.release("user-1", "ip_history", "precise")
    assert [(r["id"], r.get("ip"), r["network"]) for r in precise.records] == [
        ("ancient", None, "198.51.99.0/24"),
        ("lapsed", None, "198.51.100.0/24"),
        ("kept", "198.51.100.78", "198.51.100.0/24"),
    ]
    assert precise.shredded == 2
    (place,) = world.vault.release("user-1", "location", "precise").records
    assert place["shredded"] is True
    assert "lat" in place  # the grid cell's centre, coarse
    assert abs(place["lat"] - 48.85661) > 1e-4
    # Nothing was left for shredding to do: it changes nothing and logs nothing.
    size = world.ledger.size()
    assert world.shred(now).keys == []
    assert world.ledger.size() == size


def test_a_record_for_a_shredded_week_arrives_shredded(world: Custos) -> None:
    """A week whose key was shredded can take no precise value again, even when a longer
    retention would keep the record (the key cannot come back): stored coarse only."""
    world.ingest(
        records(login("a", "user-2", "2026-01-05T10:00:00Z", "192.0.2.1", ua=None)),
        "t",
        now=datetime(2026, 1, 6, tzinfo=UTC),
    )
    assert world.shred(datetime(2026, 11, 25, tzinfo=UTC)).keys == ["user-2/ip_history/2026-W02"]
    report = world.ingest(
        records(login("b", "user-2", "2026-01-06T10:00:00Z", "192.0.2.2", ua=None)),
        "t",
        now=datetime(2026, 1, 7, tzinfo=UTC),  # within retention by its own time
    )
    assert (report.added, report.expired) == (1, 1)
    assert openable(world) == set()
    assert world.vault.release("user-2", "ip_history", "precise").shredded == 2


def test_the_cli_says_what_arrived_past_retention(world: Custos, tmp_path: Path) -> None:
    source = tmp_path / "old.jsonl"
    source.write_text(
        "\n".join(records(login("o-1", "user-1", "2025-01-05T10:00:00Z", "192.0.2.1", ua=None)))
        + "\n"
    )
    env = {**os.environ, "CUSTOS_HOME": str(world.settings.home)}
    done = subprocess.run(
        [sys.executable, "-m", "custos", "vault", "ingest", str(source), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["expired"] == 1
    assert openable(world) == set()


def test_key_files_are_private(world: Custos) -> None:
    for name in ("vault.kek", "log.key"):
        assert stat.S_IMODE((world.settings.keys_dir / name).stat().st_mode) == 0o600


def test_geoip_regions_from_a_maxmind_database(home: Path, tmp_path: Path) -> None:
    import netaddr
    from mmdb_writer import MMDBWriter

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(
        netaddr.IPSet(["198.51.100.0/24"]),
        {
            "country": {"iso_code": "US"},
            "subdivisions": [{"iso_code": "CA"}],
            "city": {"names": {"en": "Oakland"}},
        },
    )
    mmdb = tmp_path / "geo.mmdb"
    writer.to_db_file(str(mmdb))
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[vault]\ngeoip = "{mmdb}"\n')
    with Custos.init(home) as system:
        load_org(system, SUPPORT_WORLD)
        system.ingest(
            records(
                login("l-1", "user-1", "2026-11-20T10:00:00Z", "198.51.100.77"),
                # 6to4 of 198.51.100.78: placed by the client's IPv4 address, not the relay's
                login("l-2", "user-1", "2026-11-21T10:00:00Z", "2002:c633:644e::1"),
            ),
            "t",
        )
        found = system.vault.release("user-1", "ip_history", "coarse").records
    assert [(f["network"], f["country"], f["region"]) for f in found] == [
        ("198.51.100.0/24", "US", "CA")
    ] * 2
    assert all("city" not in f for f in found)  # only where configured


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_networks_contain_their_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    network = ipaddress.ip_network(ip_network(str(address)))
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    assert (inner or address) in network
    assert network.prefixlen == (24 if network.version == 4 else 48)


EMBEDDING_PREFIXES = [
    ipaddress.IPv6Network(n)
    for n in ("2002::/16", "2001::/32", "64:ff9b::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "::/96")
]


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses(v=6))
def test_ordinary_ipv6_addresses_stay_at_their_48(address: ipaddress.IPv6Address) -> None:
    if any(address in prefix for prefix in EMBEDDING_PREFIXES) and int(address) > 1:
        return  # the embeddings, below
    assert embedded_ipv4(address) is None
    assert ip_network(str(address)) == str(ipaddress.IPv6Network((address, 48), strict=False))


def embeddings(
    a: ipaddress.IPv4Address, other: ipaddress.IPv4Address, low: int, bits: int
) -> dict[str, str]:
    """Every IPv6 form that carries ``a``; ``other``, ``low`` (80 bits) and ``bits``
    (16 bits) fill the parts that are not ``a`` (a Teredo server, a 6to4 site's subnets and
    hosts, Teredo's flags and port)."""
    v4 = int(a)
    return {
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80) | low)),
        "teredo": str(
            ipaddress.IPv6Address(
                (0x20010000 << 96)
                | (int(other) << 64)
                | (bits << 48)
                | ((low & 0xFFFF) << 32)
                | (v4 ^ 0xFFFFFFFF)
            )
        ),
        "nat64": str(ipaddress.IPv6Address((0x64FF9B << 96) | v4)),
        "mapped": str(ipaddress.IPv6Address((0xFFFF << 32) | v4)),
        "translated": str(ipaddress.IPv6Address((0xFFFF << 48) | v4)),
        "compatible": str(ipaddress.IPv6Address(v4)),
    }


@settings(max_examples=500, deadline=None)
@given(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 2**80 - 1),
    st.integers(0, 2**16 - 1),
)
def test_every_embedding_of_an_ipv4_address_coarsens_like_it(
    a: ipaddress.IPv4Address, other: ipaddress.IPv4Address, low: int, bits: int
) -> None:
    """A 6to4 /48 is the exact IPv4 address; through the embedded address, every form
    reveals what the IPv4 /24 reveals and no more: the very same network."""
    for form, v6 in embeddings(a, other, low, bits).items():
        if form == "compatible" and int(a) <= 1:
            assert ip_network(v6) == "::/48", form  # :: and ::1 are not IPv4 addresses
            continue
        assert embedded_ipv4(ipaddress.IPv6Address(v6)) == a, form
        assert ip_network(v6) == ip_network(str(a)), form


@pytest.mark.parametrize(
    ("v6", "v4"),
    [
        ("2002:c000:0204::1", "192.0.2.4"),  # RFC 3056's 6to4
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # RFC 4380's Teredo example
        ("64:ff9b::192.0.2.33", "192.0.2.33"),  # RFC 6052
        ("::ffff:192.0.2.128", "192.0.2.128"),
        ("::192.0.2.128", "192.0.2.128"),
    ],
)
def test_the_rfcs_examples_coarsen_through_their_ipv4_address(v6: str, v4: str) -> None:
    assert ip_network(v6) == "192.0.2.0/24"
    assert embedded_ipv4(ipaddress.IPv6Address(v6)) == ipaddress.IPv4Address(v4)


@settings(max_examples=300, deadline=None)
@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.sampled_from([1.0, 5.0, 10.0, 25.0]))
def test_grid_cells_are_near_their_points(lat: float, lon: float, grid_km: float) -> None:
    cell = grid_cell(lat, lon, grid_km)
    dy = (cell["lat"] - lat) * 111.32
    dx = (cell["lon"] - lon) * 111.32 * math.cos(math.radians(lat))
    assert math.hypot(dx, dy) <= grid_km * 1.5 + 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(max_size=200)
        | st.builds(
            json.dumps,
            st.dictionaries(
                st.sampled_from(
                    ["id", "kind", "subject", "time", "ip", "lat", "lon", "email", "x"]
                ),
                st.none() | st.text(max_size=20) | st.floats() | st.integers(),
                max_size=7,
            ),
        ),
        max_size=8,
    )
)
def test_the_parser_never_crashes_and_never_echoes_values(lines: list[str]) -> None:
    parsed = parse_lines(lines, "fuzz")
    for number, raw, problem in parsed.rejected:
        assert problem.startswith(f"fuzz: line {number}")
        assert raw == lines[number - 1]


SECRET_VALUE = "s3cr3t-diagnosis-7731"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10) | st.just(SECRET_VALUE),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["payment", "health", "ip_history", "Health", "", 7, None]),
    st.one_of(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3), JSON_VALUES),
    st.one_of(
        st.dictionaries(
            st.sampled_from(["area", "time", "id", "x", SECRET_VALUE]), JSON_VALUES, max_size=3
        ),
        JSON_VALUES,
    ),
)
def test_a_record_of_a_pack_category_parses_or_is_refused_without_its_values(
    category: object, precise: object, coarse: object
) -> None:
    """Any ``record`` line either becomes one record of a category the pack declares (with
    its precise values and its stated coarse form as given) or is refused by line and field,
    never repeating a value."""
    line = json.dumps(
        {"id": "r-1", "kind": "record", "subject": "user-1", "time": "2026-01-05T10:00:00Z",
         "category": category, "precise": precise, "coarse": coarse}
    )  # fmt: skip
    parsed = parse_lines([line], "fuzz", DEFAULT_VOCABULARY)
    if parsed.records:
        (record,) = parsed.records
        assert record.category in DEFAULT_VOCABULARY.categories
        assert record.category not in ("ip_history", "device", "location", "contact")
        assert record.precise == precise
        assert precise
        assert record.coarse == coarse
        assert not {"id", "time", "shredded"} & set(record.coarse or {})
    else:
        ((number, raw, problem),) = parsed.rejected
        assert (number, raw) == (1, line)
        assert problem.startswith("fuzz: line 1: field '")
        assert SECRET_VALUE not in problem


def test_secret_material_never_in_error_messages(world: Custos) -> None:
    os.chmod(world.settings.keys_dir / "vault.kek", 0o644)
    from custos.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Custos.open(world.settings.home).vault  # noqa: B018 - property opens the key
    key = (world.settings.keys_dir / "vault.kek").read_text().strip()
    assert key not in str(caught.value)
