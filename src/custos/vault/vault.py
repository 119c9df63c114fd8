"""The vault: envelope-encrypted sensitive records, released coarse or precise, and shredded
when their retention ends.

Each record's precise values are encrypted with AES-GCM under a data key for its subject,
category and ISO week; the associated data binds the ciphertext to that subject, category and
record id, so a ciphertext copied onto another row does not decrypt. Data keys are stored
only wrapped by the key-encryption key of a :class:`KeyProvider`. Shredding deletes a data
key (and the ciphertexts under it): without it the precise values cannot be recovered by
anyone, the key-encryption key's holder included. Coarse derivatives are kept in clear.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, insert, select, update

from custos import telemetry
from custos.errors import IntegrityError, InvalidInput, ValidationFailed
from custos.store import Database
from custos.store.directory import SubjectRow
from custos.store.vault import VaultKeyRow, VaultRecordRow
from custos.textfiles import write_rejects
from custos.times import iso
from custos.vault import coarse
from custos.vault.keys import KeyProvider
from custos.vault.records import SensitiveRecord, parse_lines
from custos.vault.retention import DEFAULT_RETENTION_DAYS
from custos.vocabulary import DEFAULT_VOCABULARY, Vocabulary

DEFAULT_GRID_KM = 10.0
_KEY_CACHE_SECONDS = 60.0
_KEY_CACHE_SIZE = 4096


def week_of(moment: datetime) -> tuple[str, datetime]:
    """The ISO week holding ``moment`` and the instant it ends (next Monday 00:00 UTC)."""
    moment = moment.astimezone(UTC)
    year, week, weekday = moment.isocalendar()
    monday = (moment - timedelta(days=weekday - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return f"{year}-W{week:02d}", monday + timedelta(days=7)


_RELEASE_SQL = (
    "SELECT r.id, r.time, r.key_id, r.nonce, r.ciphertext, CAST(r.coarse AS TEXT), k.shredded "
    "FROM vault_records r LEFT OUTER JOIN vault_keys k ON k.id = r.key_id "
    "WHERE r.subject = ? AND r.category = ? ORDER BY r.time, r.id"
)


def _iso(stored: datetime | str) -> str:
    """A record time as ISO 8601 UTC, from either driver: SQLite hands back the stored text
    (UTC without a zone, always with microseconds), psycopg a timezone-aware datetime."""
    if isinstance(stored, str) and len(stored) == 26 and stored[10] == " ":
        # Fifty of these per read: string slicing is several times cheaper than parsing,
        # and gives what isoformat() would (which drops zero microseconds).
        clock = stored[11:19] if stored.endswith(".000000") else stored[11:]
        return f"{stored[:10]}T{clock}Z"
    moment = datetime.fromisoformat(stored) if isinstance(stored, str) else stored
    return iso(moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment)


def _aad(subject: str, category: str, record_id: str) -> bytes:
    return f"custos-vault/v1\x1f{subject}\x1f{category}\x1f{record_id}".encode()


@dataclass(frozen=True)
class IngestReport:
    """What an ingest stored: ``added`` records (``expired`` of them past retention on
    arrival, so stored coarse only), ``unchanged`` ids already present, ``rejected`` lines,
    and the added records per category."""

    added: int
    unchanged: int
    rejected: int
    categories: dict[str, int] = field(default_factory=dict)
    expired: int = 0


@dataclass(frozen=True)
class Release:
    """What the vault releases for one subject and category at one precision."""

    precision: str
    records: list[dict[str, Any]]
    shredded: int = 0

    @property
    def count(self) -> int:
        return len(self.records)


@dataclass(frozen=True)
class ShredReport:
    """A shredding, described without any value: what the ledger records."""

    keys: list[str]
    records: int
    categories: dict[str, int]
    before: str


class Vault:
    """Sensitive records of every subject. Thread-safe."""

    def __init__(
        self,
        db: Database,
        keys: KeyProvider,
        *,
        retention_days: Mapping[str, int] | None = None,
        grid_km: float = DEFAULT_GRID_KM,
        geo: coarse.GeoLookup | None = None,
        vocabulary: Callable[[], Vocabulary] | None = None,
    ) -> None:
        """``vocabulary`` gives the active pack's words: every ingested record's category
        must be one of its categories (default: the shipped pack's)."""
        self.db = db
        self.vocabulary = vocabulary or (lambda: DEFAULT_VOCABULARY)
        self.keys = keys
        self.retention_days = dict(
            DEFAULT_RETENTION_DAYS if retention_days is None else retention_days
        )
        self.grid_km = grid_km
        self.geo = geo
        self._cache: OrderedDict[str, tuple[float, AESGCM]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def default_retention() -> dict[str, int]:
        """Days precise values are kept, per category (others are kept until deleted)."""
        return dict(DEFAULT_RETENTION_DAYS)

    # -- ingest ----------------------------------------------------------------------------

    def coarse_of(self, record: SensitiveRecord) -> dict[str, Any]:
        """The coarse derivative of a record (what leaves custos by default): computed for
        the structured categories, as its ingester stated it for any other."""
        if record.coarse is not None:
            return dict(record.coarse)
        p = record.precise
        if record.category == "ip_history":
            found: dict[str, Any] = {"network": coarse.ip_network(p["ip"])}
            if self.geo is not None:
                found.update(self.geo.lookup(coarse.geo_address(p["ip"])))
            return found
        if record.category == "location":
            return coarse.grid_cell(p["lat"], p["lon"], self.grid_km)
        if record.category == "device":
            return coarse.device_family(p["user_agent"])
        if record.category == "contact":
            masked: dict[str, Any] = {}
            if "email" in p:
                masked["email"] = coarse.mask_email(p["email"])
            if "phone" in p:
                masked["phone"] = coarse.mask_phone(p["phone"])
            return masked
        raise InvalidInput(f"the vault holds no category {record.category!r}")

    def ingest_lines(
        self,
        lines: Sequence[str],
        source: str,
        *,
        rejects: Path | None = None,
        now: datetime | None = None,
    ) -> IngestReport:
        """Validate and store records, all or nothing.

        Raises :class:`ValidationFailed` listing every bad line (by number and field, never
        with its value; a category the active pack does not declare is one) unless
        ``rejects`` is given, in which case bad lines are written
        there (mode 0600) and the good ones stored. Subjects must be in the directory.
        Records already stored (same id) are left as they are. A record already past its
        category's retention at ``now`` (default: the current time), or in a week whose data
        key was shredded, is stored as shredding leaves it: its coarse derivative only, its
        precise values never encrypted or kept (counted in ``expired``).
        """
        parsed = parse_lines(list(lines), source, self.vocabulary())
        problems = [problem for _, _, problem in parsed.rejected]
        subjects = {r.subject for r in parsed.records}
        with self.db.session() as session:
            known: set[str] = set()
            ordered = sorted(subjects)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                known.update(session.scalars(select(SubjectRow.id).where(SubjectRow.id.in_(chunk))))
        unknown = [r for r in parsed.records if r.subject not in known]
        if unknown:
            lines_of = _line_numbers(lines)
            for record in unknown:
                base = record.id.removesuffix(":device")
                problems.append(
                    f"{source}: line {lines_of.get(base, '?')}: field 'subject': "
                    f"unknown subject {record.subject!r}"
                )
        if problems and rejects is None:
            raise ValidationFailed(
                f"{source}: {len(problems)} bad line(s); nothing was stored",
                problems,
                hint="fix them, or pass --rejects FILE to set them aside",
            )
        if rejects is not None and problems:
            _write_rejects(rejects, parsed.rejected, lines, unknown)
        records = [r for r in parsed.records if r.subject in known]
        return self._store(records, now or datetime.now(UTC), len(problems))

    def past_retention(self, category: str, moment: datetime, now: datetime) -> bool:
        """Whether a record of ``category`` at ``moment`` is past its retention at ``now``:
        older than the category's retention (categories without one never are)."""
        days = self.retention_days.get(category)
        return days is not None and moment <= now - timedelta(days=days)

    def _store(self, records: list[SensitiveRecord], now: datetime, rejected: int) -> IngestReport:
        added = unchanged = expired = 0
        categories: dict[str, int] = {}
        with self.db.session() as session:
            existing: set[str] = set()
            clashes: list[str] = []
            by_id = {r.id: r for r in records}
            ids = list(by_id)
            for start in range(0, len(ids), 500):
                for record_id, subject, category, moment in session.execute(
                    select(
                        VaultRecordRow.id,
                        VaultRecordRow.subject,
                        VaultRecordRow.category,
                        VaultRecordRow.time,
                    ).where(VaultRecordRow.id.in_(ids[start : start + 500]))
                ):
                    existing.add(record_id)
                    new = by_id[record_id]
                    if (subject, category, moment) != (new.subject, new.category, new.time):
                        clashes.append(f"record {record_id!r} is stored already as another record")
            if clashes:
                # Stored records are never replaced; a reused id would lose one silently.
                raise ValidationFailed(
                    f"{len(clashes)} record id(s) already stored differently; nothing was stored",
                    clashes,
                )
            fresh = [r for r in records if r.id not in existing]
            unchanged = len(records) - len(fresh)
            periods = {r.id: week_of(r.time) for r in fresh}
            key_of = {r.id: f"{r.subject}/{r.category}/{periods[r.id][0]}" for r in fresh}
            # Past retention on arrival: never encrypted, so never decryptable, not even
            # until the next shredding; no data key is made for it.
            lapsed = {r.id for r in fresh if self.past_retention(r.category, r.time, now)}
            keys = self._data_keys(
                session, [r for r in fresh if r.id not in lapsed], key_of, periods, now
            )
            rows: list[dict[str, Any]] = []
            seen: set[str] = set()
            for record in fresh:
                if record.id in seen:
                    unchanged += 1
                    continue
                seen.add(record.id)
                key_id = key_of[record.id]
                aead = None if record.id in lapsed else keys[key_id]
                nonce = ciphertext = None
                if aead is None:
                    expired += 1
                else:
                    nonce = os.urandom(12)
                    plaintext = json.dumps(record.precise, sort_keys=True).encode()
                    ciphertext = aead.encrypt(
                        nonce, plaintext, _aad(record.subject, record.category, record.id)
                    )
                rows.append(
                    {
                        "id": record.id,
                        "subject": record.subject,
                        "category": record.category,
                        "time": record.time,
                        "key_id": key_id,
                        "nonce": nonce,
                        "ciphertext": ciphertext,
                        "coarse": self.coarse_of(record),
                    }
                )
                categories[record.category] = categories.get(record.category, 0) + 1
            # One bulk statement: the unit of work's per-object bookkeeping would cost more
            # than encrypting the records.
            for chunk in range(0, len(rows), 1000):
                session.execute(insert(VaultRecordRow), rows[chunk : chunk + 1000])
            added = len(rows)
        return IngestReport(added, unchanged, rejected, categories, expired)

    def _data_keys(
        self,
        session: Any,
        records: list[SensitiveRecord],
        key_of: dict[str, str],
        periods: dict[str, tuple[str, datetime]],
        now: datetime,
    ) -> dict[str, AESGCM | None]:
        """The data key of every record's period, unwrapping stored keys and creating the
        missing ones; None for a period whose key was shredded (its records are past
        retention as that shredding judged it, and the key cannot come back)."""
        wanted = sorted(set(key_of.values()))
        stored: dict[str, bytes | None] = {}
        for chunk in range(0, len(wanted), 500):
            for key_id, wrapped in session.execute(
                select(VaultKeyRow.id, VaultKeyRow.wrapped).where(
                    VaultKeyRow.id.in_(wanted[chunk : chunk + 500])
                )
            ):
                stored[key_id] = wrapped
        keys: dict[str, AESGCM | None] = {}
        new_rows: list[dict[str, Any]] = []
        for record in records:
            key_id = key_of[record.id]
            if key_id in keys:
                continue
            if key_id in stored:
                wrapped = stored[key_id]
                keys[key_id] = (
                    None if wrapped is None else AESGCM(self.keys.unwrap(key_id, wrapped))
                )
                continue
            data_key = AESGCM.generate_key(bit_length=256)
            period, period_end = periods[record.id]
            new_rows.append(
                {
                    "id": key_id,
                    "subject": record.subject,
                    "category": record.category,
                    "period": period,
                    "period_end": period_end,
                    "kek": self.keys.kek_id,
                    "wrapped": self.keys.wrap(key_id, data_key),
                    "created": now,
                }
            )
            keys[key_id] = AESGCM(data_key)
        if new_rows:
            session.execute(insert(VaultKeyRow), new_rows)
        return keys

    # -- release ---------------------------------------------------------------------------

    def release(
        self, subject: str, category: str, precision: str, now: datetime | None = None
    ) -> Release:
        """Records of ``subject`` in ``category``: coarse fields only, or precise too.

        Raises :class:`IntegrityError` (naming the record id, never a value) when a
        ciphertext does not decrypt for its row.
        """
        with telemetry.span(
            "custos.vault.read", **{"custos.category": category, "custos.precision": precision}
        ) as current:
            released = self._release(subject, category, precision, now)
            telemetry.annotate(
                current,
                **{"custos.records": len(released.records), "custos.shredded": released.shredded},
            )
            return released

    def _release(
        self, subject: str, category: str, precision: str, now: datetime | None
    ) -> Release:
        if precision not in ("coarse", "precise"):
            raise InvalidInput(f"unknown precision {precision!r}")
        # Driver SQL: this runs on every guarded read, and building 50 ORM rows cost more
        # than the query. The key's ``shredded`` is read with the records, so that a key
        # shredded by another process is never used from this one's key cache.
        with self.db.cursor() as cursor:
            rows = cursor.execute(_RELEASE_SQL, (subject, category))
        if not rows:
            return Release(precision, [], 0)
        coarse_values = json.loads("[" + ",".join([row[5] for row in rows]) + "]")
        out: list[dict[str, Any]] = [
            {"id": row[0], "time": _iso(row[1]), **values}
            for row, values in zip(rows, coarse_values, strict=True)
        ]
        if precision == "coarse":
            return Release(precision, out, 0)
        keys = self._unwrapped({row[2] for row in rows if row[6] is None and row[4] is not None})
        aad_prefix = _aad(subject, category, "")
        shredded = 0
        plain: list[bytes] = []
        opened: list[dict[str, Any]] = []
        for (record_id, _, key_id, nonce, ciphertext, _, gone), item in zip(rows, out, strict=True):
            aead = keys.get(key_id) if gone is None else None
            if aead is None or ciphertext is None or nonce is None:
                shredded += 1
                item["shredded"] = True
                continue
            try:
                plain.append(aead.decrypt(nonce, ciphertext, aad_prefix + record_id.encode()))
            except InvalidTag:
                raise IntegrityError(
                    f"record {record_id!r} does not decrypt for subject {subject!r} and "
                    f"category {category!r}: its ciphertext belongs to another row"
                ) from None
            opened.append(item)
        if plain:
            for item, values in zip(
                opened, json.loads(b"[" + b",".join(plain) + b"]"), strict=True
            ):
                item.update(values)
        return Release(precision, out, shredded)

    def _unwrapped(self, key_ids: set[str]) -> dict[str, AESGCM | None]:
        found: dict[str, AESGCM | None] = {}
        now = time.monotonic()
        missing = []
        with self._lock:
            for key_id in key_ids:
                cached = self._cache.get(key_id)
                if cached is not None and now - cached[0] < _KEY_CACHE_SECONDS:
                    found[key_id] = cached[1]
                else:
                    missing.append(key_id)
        if missing:
            with self.db.session() as session:
                rows = session.execute(
                    select(VaultKeyRow.id, VaultKeyRow.wrapped).where(VaultKeyRow.id.in_(missing))
                ).all()
            for key_id, wrapped in rows:
                if wrapped is None:
                    found[key_id] = None
                    continue
                aead = AESGCM(self.keys.unwrap(key_id, wrapped))
                found[key_id] = aead
                with self._lock:
                    self._cache[key_id] = (now, aead)
                    while len(self._cache) > _KEY_CACHE_SIZE:
                        self._cache.popitem(last=False)
        return found

    # -- retention -------------------------------------------------------------------------

    def expired_keys(self, now: datetime) -> list[tuple[str, str]]:
        """(key id, category) of live data keys whose retention has ended at ``now``."""
        found: list[tuple[str, str]] = []
        with self.db.session() as session:
            for category, days in self.retention_days.items():
                cutoff = now - timedelta(days=days)
                found.extend(
                    (key_id, category)
                    for key_id in session.scalars(
                        select(VaultKeyRow.id).where(
                            VaultKeyRow.category == category,
                            VaultKeyRow.period_end <= cutoff,
                            VaultKeyRow.wrapped.is_not(None),
                        )
                    )
                )
        return found

    def live_categories(self) -> dict[str, int]:
        """See :func:`live_categories`."""
        return live_categories(self.db)

    def shred(self, keys: Sequence[tuple[str, str]], now: datetime) -> ShredReport:
        """Destroy these data keys and the ciphertexts under them; coarse data stays."""
        ids = [key_id for key_id, _ in keys]
        categories: dict[str, int] = {}
        records = 0
        with self.db.session() as session:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                session.execute(
                    update(VaultKeyRow)
                    .where(VaultKeyRow.id.in_(chunk), VaultKeyRow.wrapped.is_not(None))
                    .values(wrapped=None, shredded=now)
                )
                result = session.execute(
                    update(VaultRecordRow)
                    .where(VaultRecordRow.key_id.in_(chunk))
                    .values(nonce=None, ciphertext=None)
                )
                records += int(getattr(result, "rowcount", 0) or 0)
        for _, category in keys:
            categories[category] = categories.get(category, 0) + 1
        with self._lock:
            for key_id in ids:
                self._cache.pop(key_id, None)
        return ShredReport(ids, records, categories, now.isoformat().replace("+00:00", "Z"))


def live_categories(db: Database) -> dict[str, int]:
    """How many data keys of each category are not shredded yet: the categories whose
    precise values still exist, which a policy pack must keep declaring (retention is
    configured by category, and a read names its category)."""
    with db.session() as session:
        return {
            str(category): int(n)
            for category, n in session.execute(
                select(VaultKeyRow.category, func.count())
                .where(VaultKeyRow.wrapped.is_not(None))
                .group_by(VaultKeyRow.category)
            )
        }


def _line_numbers(lines: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(data, dict) and isinstance(data.get("id"), str):
            found.setdefault(data["id"], number)
    return found


def _write_rejects(
    path: Path,
    rejected: list[tuple[int, str, str]],
    lines: Sequence[str],
    unknown: list[SensitiveRecord],
) -> None:
    numbers = {n for n, _, _ in rejected}
    by_id = _line_numbers(lines)
    numbers.update(
        by_id[r.id.removesuffix(":device")]
        for r in unknown
        if r.id.removesuffix(":device") in by_id
    )
    write_rejects(path, numbers, lines)
