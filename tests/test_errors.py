"""Messages about unknown ids never repeat what looks like personal data."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from custos.errors import shown_id


@pytest.mark.parametrize("ours", ["user-42", "emp-3001", "T-10", "al-7", "case-3", "req-ab12"])
def test_ids_of_ours_are_quoted(ours: str) -> None:
    assert shown_id(ours) == repr(ours)


@pytest.mark.parametrize(
    "personal",
    [
        "198.51.100.7",
        " 198.51.100.7 ",
        "198.51.100.0/24",
        "2001:db8::1",
        "jane@example.org",
        "+1 (555) 010-0199",
        "5550100199",
    ],
)
def test_what_looks_like_an_address_or_number_is_not_repeated(personal: str) -> None:
    shown = shown_id(personal)
    assert personal.strip() not in shown
    assert "not repeated" in shown


@given(st.ip_addresses())
def test_no_ip_address_is_ever_repeated(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    for text in (str(address), f"{address}/{address.max_prefixlen}", address.exploded):
        assert text not in shown_id(text)


@given(st.text(max_size=300))
def test_anything_else_is_quoted_whole_or_not_at_all(value: str) -> None:
    shown = shown_id(value)
    assert shown == repr(value) or "not repeated here" in shown
    if len(value) > 128:
        assert value not in shown
