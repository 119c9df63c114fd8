"""The one parser of times every importer and the API use: zoned instants only, in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custos.times import iso, utc_instant

zones = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Far enough from the ends of the calendar that every offset stays inside it.
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 30))


@given(moments, zones)
def test_any_zoned_time_parses_to_the_same_instant_in_utc(moment: datetime, zone: timezone) -> None:
    zoned = moment.replace(tzinfo=zone)
    for given_as in (zoned.isoformat(), zoned):
        parsed = utc_instant(given_as)
        assert parsed == zoned
        assert parsed.tzinfo is UTC
    assert utc_instant(iso(zoned)) == zoned


@given(moments)
def test_a_time_without_a_zone_is_refused(moment: datetime) -> None:
    for given_as in (moment.isoformat(), moment):
        with pytest.raises(ValueError, match="time zone"):
            utc_instant(given_as)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("9999-12-31T23:59:59-05:00", "out of range"),
        ("0001-01-01T00:00:00+14:00", "out of range"),
        (date(2026, 1, 5), "bare date"),
        ("2026-01-05", "time zone"),
        ("yesterday", "ISO 8601"),
        (1767600000, "ISO 8601"),
        (None, "ISO 8601"),
    ],
)
def test_what_is_not_an_instant_says_why(value: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        utc_instant(value)
