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


def _signed(text: str = "custos/test\n5\n" + "A" * 43 + "=\n") -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from custos.ledger import NoteSigner

    signer = NoteSigner("custos/test", Ed25519PrivateKey.generate())
    return text + "\n" + signer.sign_line(text)


def test_a_note_is_opened_as_strictly_as_the_reference_opens_one() -> None:
    """What Go's note.Open refuses, custos refuses: a note that one verifier takes and
    another does not would let a log show witnesses something its own tools reject."""
    good = _signed()
    assert SignedNote.parse(good).render() == good
    sig = good.rsplit("\n\n", 1)[1]
    line = sig.rstrip("\n")
    blob = line.split(" ")[2]
    refused = {
        "no newline after the last signature": good.rstrip("\n"),
        "CRLF line ends": good.replace("\n", "\r\n"),
        "a tab in the text": good.replace("custos/test\n5", "custos/test\t\n5", 1),
        "a NUL": good.replace("5\n", "5\x00\n", 1),
        "a line separator in the block": good[: -len(sig)] + line + "\u2028" + line + "\n",
        "a name with +": good[: -len(sig)] + f"\u2014 a+b {blob}\n",
        "a name with a no-break space": good[: -len(sig)] + f"\u2014 a\u00a0b {blob}\n",
        "101 signatures": good[: -len(sig)] + (line + "\n") * 101,
    }
    for why, note in refused.items():
        with contextlib.suppress(InvalidInput):
            SignedNote.parse(note)
            raise AssertionError(f"accepted a note with {why}")
    hundred = good[: -len(sig)] + (line + "\n") * 100
    assert len(SignedNote.parse(hundred).signatures) == 100
    # As in Go, the block starts after the *last* blank line: what precedes it is text
    # (and the signature over the shorter text then no longer verifies).
    doubled = good[: -len(sig)] + line + "\n\n" + line + "\n"
    assert SignedNote.parse(doubled).text == good[: -len(sig)] + line + "\n"
