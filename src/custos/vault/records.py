"""Reading sensitive records from JSON Lines, all or nothing.

One record per line::

    {"id": "l-1", "kind": "login", "subject": "user-42", "time": "2026-01-05T10:00:00Z",
     "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 …"}
    {"id": "p-1", "kind": "location", "subject": "user-42", "time": "…",
     "lat": 48.8566, "lon": 2.3522, "accuracy": 25}
    {"id": "c-1", "kind": "contact", "subject": "user-42", "time": "…",
     "email": "jane@example.org", "phone": "+1 555 0100"}
    {"id": "h-1", "kind": "record", "category": "health", "subject": "user-42", "time": "…",
     "precise": {"diagnosis": "…"}, "coarse": {"area": "respiratory"}}

A login gives an ``ip_history`` record (and a ``device`` record ``<id>:device`` when it has a
user agent); a location a ``location`` record; contact details a ``contact`` record. A
``record`` is any other category of the active policy pack's vocabulary (``health``,
``payment``…): custos cannot derive a coarse form of values it does not know, so the ingester
states it (``coarse``, default nothing: a coarse read then shows only that a record exists and
when). Every record's category must be a word of the active pack (``words``).
Every problem is reported by line number and field, **never with the value**: these are
the very values custos exists to protect.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from custos.textfiles import strict_json
from custos.timefields import UtcTime

if TYPE_CHECKING:
    from custos.vocabulary import Vocabulary

Time = UtcTime
RecordId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")]
SubjectId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")]
MAX_LINE = 64 * 1024


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: RecordId
    subject: SubjectId
    time: Time


class Login(_Base):
    kind: Literal["login"]
    ip: str
    user_agent: Annotated[str, Field(max_length=2048)] | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("not an IPv4 or IPv6 address") from None


class Location(_Base):
    kind: Literal["location"]
    lat: Annotated[float, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)]
    accuracy: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = None


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class Contact(_Base):
    kind: Literal["contact"]
    email: str | None = None
    phone: Annotated[str, Field(max_length=32, pattern=r"^[0-9+() .\-]{4,32}$")] | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value


#: The categories whose records have a kind of their own, so that custos computes their
#: coarse form itself: an ingester may not state it (a "coarse" IP address could be precise).
STRUCTURED: dict[str, str] = {
    "ip_history": "login",
    "device": "login",
    "location": "location",
    "contact": "contact",
}
#: Keys a release puts beside a record's coarse values; a stated coarse form may not use them.
_RELEASE_KEYS = frozenset({"id", "time", "shredded"})


class Record(_Base):
    """A record of any other category of the pack: precise values (encrypted) and the coarse
    form the ingester states (kept in clear, released at coarse precision)."""

    kind: Literal["record"]
    category: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    precise: Annotated[dict[str, Any], Field(min_length=1)]
    coarse: dict[str, Any] = Field(default_factory=dict)

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        if value in STRUCTURED:
            raise ValueError(f"{value} records come as kind {STRUCTURED[value]}")
        return value

    @field_validator("coarse")
    @classmethod
    def _coarse(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(_RELEASE_KEYS & set(value))
        if clash:
            raise ValueError(f"may not use the key(s) {', '.join(clash)}: a release sets them")
        return value


_KINDS: dict[str, type[_Base]] = {
    "login": Login,
    "location": Location,
    "contact": Contact,
    "record": Record,
}


@dataclass(frozen=True, slots=True)
class SensitiveRecord:
    """One record to store: precise values (to encrypt) under a category, and the coarse
    form its ingester stated (None: custos derives it, for the structured categories)."""

    id: str
    subject: str
    category: str
    time: datetime
    precise: dict[str, Any]
    coarse: dict[str, Any] | None = None


@dataclass(frozen=True)
class ParsedRecords:
    records: list[SensitiveRecord]
    rejected: list[tuple[int, str, str]]  # (line number, raw line, problem)


def _describe(err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "(record)"
    if err["type"] == "extra_forbidden":
        return f"field '{field}': unknown field"
    # Never the input value: only what was wrong with it.
    return f"field '{field}': {str(err['msg']).removeprefix('Value error, ')}"


def split_record(entry: _Base) -> list[SensitiveRecord]:
    """The records one line makes (a login with a user agent makes two)."""
    if isinstance(entry, Record):
        return [
            SensitiveRecord(
                entry.id, entry.subject, entry.category, entry.time, entry.precise, entry.coarse
            )
        ]
    if isinstance(entry, Login):
        found = [
            SensitiveRecord(entry.id, entry.subject, "ip_history", entry.time, {"ip": entry.ip})
        ]
        if entry.user_agent:
            found.append(
                SensitiveRecord(
                    f"{entry.id}:device",
                    entry.subject,
                    "device",
                    entry.time,
                    {"user_agent": entry.user_agent},
                )
            )
        return found
    if isinstance(entry, Location):
        precise: dict[str, Any] = {"lat": entry.lat, "lon": entry.lon}
        if entry.accuracy is not None:
            precise["accuracy"] = entry.accuracy
        return [SensitiveRecord(entry.id, entry.subject, "location", entry.time, precise)]
    assert isinstance(entry, Contact)
    values = {k: v for k, v in (("email", entry.email), ("phone", entry.phone)) if v}
    return [SensitiveRecord(entry.id, entry.subject, "contact", entry.time, values)]


#: The field of a line that makes a record of each structured category (named in messages).
_FIELD_OF = {"ip_history": "kind", "device": "user_agent", "location": "kind", "contact": "kind"}


def parse_lines(lines: list[str], source: str, words: Vocabulary | None = None) -> ParsedRecords:
    """Validate every line; return the records and the rejected lines (with reasons). With
    ``words`` (the active pack's), every record's category must be one of its categories."""
    records: list[SensitiveRecord] = []
    rejected: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    made: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{source}: line {number}"
        if len(line) > MAX_LINE:
            rejected.append((number, raw, f"{where}: longer than {MAX_LINE} bytes"))
            continue
        try:
            data = strict_json(line)
        except (ValueError, RecursionError):
            rejected.append((number, raw, f"{where}: not valid JSON"))
            continue
        if not isinstance(data, dict):
            rejected.append((number, raw, f"{where}: must be a JSON object"))
            continue
        kind = data.get("kind")
        model = _KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            rejected.append(
                (number, raw, f"{where}: field 'kind' must be login, location, contact or record")
            )
            continue
        try:
            entry = model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            rejected.append((number, raw, f"{where}: {problems}"))
            continue
        if entry.id in seen:
            rejected.append(
                (number, raw, f"{where}: duplicate id (first on line {seen[entry.id]})")
            )
            continue
        derived = split_record(entry)
        if words is not None:
            unknown = [
                f"field '{_FIELD_OF.get(r.category, 'category')}': "
                f"{words.unknown('category', r.category)}"
                for r in derived
                if not words.knows("category", r.category)
            ]
            if unknown:
                rejected.append((number, raw, f"{where}: {'; '.join(unknown)}"))
                continue
        # A login also makes a device record, "<id>:device": another line may not use it.
        clash = next((r.id for r in derived if r.id in made), None)
        if clash is not None:
            rejected.append(
                (number, raw, f"{where}: record id {clash!r} is made by line {made[clash]} too")
            )
            continue
        seen[entry.id] = number
        made.update((r.id, number) for r in derived)
        records.extend(derived)
    return ParsedRecords(records, rejected)
