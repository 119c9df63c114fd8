"""Times as every custos format writes them (DESIGN.md): ISO 8601 in UTC, with a ``Z``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any


def iso(moment: datetime) -> str:
    """``moment`` (timezone-aware) in UTC as ISO 8601 with a trailing ``Z``; microseconds
    only when there are any."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_instant(value: Any) -> datetime:
    """An instant from ISO 8601 text or a ``datetime`` (YAML's unquoted timestamps), in UTC.

    Raises ``ValueError`` saying what is wrong, for a validator to report with its field:
    not a time, a bare date, no time zone, or beyond what a UTC time can hold.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO 8601 time such as 2026-01-05T10:00:00Z") from None
    if not isinstance(value, datetime):
        if isinstance(value, date):
            raise ValueError("must be a time with a zone, not a bare date")
        raise ValueError("must be an ISO 8601 time string")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time zone (e.g. a trailing Z for UTC)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: it lies beyond the years 1 to 9999 in UTC") from None
