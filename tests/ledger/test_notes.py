"""Parsers of the C2SP formats (checkpoints, signed notes, verifier keys) against any text:
they accept what they wrote and refuse everything else with :class:`InvalidInput`."""

from __future__ import annotations

import contextlib
import hashlib

from hypothesis import example, given
from hypothesis import strategies as st

from custos.errors import InvalidInput
from custos.ledger import Checkpoint, NoteVerifier, SignedNote

_LINE = st.text(st.characters(blacklist_characters="\n", codec="utf-8"), max_size=40)


@given(
    origin=_LINE.filter(bool),
    size=st.integers(min_value=0, max_value=2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoints_round_trip(origin: str, size: int, root: bytes) -> None:
    checkpoint = Checkpoint(origin, size, root)
    assert Checkpoint.parse_text(checkpoint.text()) == checkpoint


@given(st.text(max_size=300))
@example("custos\n\u00b3\n" + "A" * 43 + "=\n")  # a digit that is not ASCII
@example("custos\n01\n" + "A" * 43 + "=\n")
def test_checkpoint_parser_refuses_anything_else_clearly(text: str) -> None:
    try:
        parsed = Checkpoint.parse_text(text)
    except InvalidInput:
        return
    assert parsed.text() == text


@given(st.text(max_size=300))
def test_note_and_key_parsers_never_fail_unexpectedly(text: str) -> None:
    for parse in (SignedNote.parse, NoteVerifier.parse):
        with contextlib.suppress(InvalidInput):
            parse(text)


def test_a_real_root_parses() -> None:
    root = hashlib.sha256(b"x").digest()
    assert Checkpoint.parse_text(Checkpoint("o", 3, root).text()).root == root
