"""Frontend message parsing: any bytes give a message or a ProtocolViolation, nothing else."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as s

from custos.errors import ProtocolViolation
from custos.wire import messages as m

PARSERS: list[Callable[[bytes], object]] = [
    m.parse_startup,
    m.parse_password,
    m.parse_query,
    m.parse_parse,
    m.parse_bind,
    m.parse_execute,
    lambda body: m.parse_target(body, "Describe"),
]


@pytest.mark.parametrize("parse", PARSERS)
@given(body=s.binary(max_size=64))
def test_any_bytes_parse_or_are_a_protocol_violation(
    parse: Callable[[bytes], object], body: bytes
) -> None:
    try:
        parse(body)
    except ProtocolViolation as exc:
        problem = exc.message
    else:
        return
    assert "message" in problem


def _bind_body(
    portal: str, statement: str, formats: list[int], values: list[bytes | None], results: list[int]
) -> bytes:
    body = portal.encode() + b"\x00" + statement.encode() + b"\x00"
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return body + struct.pack("!h", len(results)) + b"".join(struct.pack("!h", f) for f in results)


NAMES = s.text(alphabet=s.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


@given(
    NAMES,
    NAMES,
    s.lists(s.one_of(s.none(), s.binary(max_size=20)), max_size=6),
    s.sampled_from([0, 1]),
)
def test_bind_round_trips(
    portal: str, statement: str, values: list[bytes | None], fmt: int
) -> None:
    bind = m.parse_bind(_bind_body(portal, statement, [fmt], values, [0]))
    assert (bind.portal, bind.statement, list(bind.parameters)) == (portal, statement, values)
    assert all(bind.format_of(i) == fmt for i in range(len(values)))


def test_bind_refuses_what_the_protocol_forbids() -> None:
    with pytest.raises(ProtocolViolation, match="format codes"):
        m.parse_bind(_bind_body("", "", [2], [b"x"], []))
    with pytest.raises(ProtocolViolation, match="differ in number"):
        m.parse_bind(_bind_body("", "", [0, 0], [b"x"], []))
    with pytest.raises(ProtocolViolation, match="negative parameter length"):
        m.parse_bind(b"\x00\x00" + struct.pack("!hhi", 0, 1, -7) + struct.pack("!h", 0))
    with pytest.raises(ProtocolViolation, match="ends inside its parameter value"):
        m.parse_bind(b"\x00\x00" + struct.pack("!hhi", 0, 1, 1 << 30))


def test_startup_parameters() -> None:
    body = b"user\x00tool\x00database\x00app\x00\x00"
    assert m.parse_startup(body).parameters == {"user": "tool", "database": "app"}
    with pytest.raises(ProtocolViolation, match="repeats"):
        m.parse_startup(b"user\x00a\x00user\x00b\x00\x00")
    with pytest.raises(ProtocolViolation, match="not UTF-8"):
        m.parse_startup(b"user\x00\xff\x00\x00")


def test_backend_messages_never_carry_a_nul_inside_a_field() -> None:
    error = m.error_response("42501", "refused\x00 here")
    # Four fields (severity twice, code, message), each NUL-terminated, and the final NUL.
    assert error[5:].count(b"\x00") == 5
    assert struct.unpack("!i", error[1:5])[0] == len(error) - 1
    assert b"refused here\x00" in error
