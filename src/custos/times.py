"""Times as every custos format writes them (DESIGN.md): ISO 8601 in UTC, with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """``moment`` (timezone-aware) in UTC as ISO 8601 with a trailing ``Z``; microseconds
    only when there are any."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
