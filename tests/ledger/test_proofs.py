"""Ledger maths against an independent RFC 9162 implementation, on a real database."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.ledger import Ledger, canonical_json, tree
from tests.ledger import rfc9162
from tests.ledger.signed_note import parse_checkpoint, verify_note


@pytest.fixture(scope="module")
def big_log(module_system: Custos) -> tuple[Ledger, list[bytes]]:
    """A log of 2,000 entries, appended in uneven batches, with the leaf hashes expected."""
    ledger = module_system.ledger
    leaves = [rfc9162.leaf(ledger.entry(i)) for i in range(ledger.size())]
    batch = 1
    while ledger.size() < 2000:
        count = min(batch, 2000 - ledger.size())
        receipts = ledger.append_many(
            {"type": "test", "n": ledger.size() + i} for i in range(count)
        )
        leaves.extend(rfc9162.leaf(ledger.entry(r.index)) for r in receipts)
        assert [r.leaf_hash for r in receipts] == leaves[-count:]
        batch = batch * 3 % 97 + 1
    return ledger, leaves


def test_roots_match_the_reference_at_every_size(big_log: tuple[Ledger, list[bytes]]) -> None:
    ledger, leaves = big_log
    for size in [*range(0, 70), 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025, 2000]:
        assert ledger.root(size) == rfc9162.mth(leaves[:size]), size


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_inclusion_proofs_verify_independently(
    big_log: tuple[Ledger, list[bytes]], data: st.DataObject
) -> None:
    ledger, leaves = big_log
    size = data.draw(st.integers(1, 2000), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    found = ledger.inclusion_proof(index, size)
    hashes = list(found.hashes)
    assert hashes == rfc9162.path(index, leaves[:size])
    root = rfc9162.mth(leaves[:size])
    assert rfc9162.verify_inclusion(leaves[index], index, size, hashes, root)
    assert tree.verify_inclusion(leaves[index], index, size, hashes, root)
    if hashes:  # a wrong proof never verifies
        broken = [*hashes[:-1], bytes(32)]
        assert not rfc9162.verify_inclusion(leaves[index], index, size, broken, root)
        assert not tree.verify_inclusion(leaves[index], index, size, broken, root)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_consistency_proofs_verify_independently(
    big_log: tuple[Ledger, list[bytes]], data: st.DataObject
) -> None:
    ledger, leaves = big_log
    new = data.draw(st.integers(1, 2000), label="new")
    old = data.draw(st.integers(1, new), label="old")
    found = ledger.consistency_proof(old, new)
    hashes = list(found.hashes)
    assert hashes == rfc9162.proof(old, leaves[:new])
    old_root, new_root = rfc9162.mth(leaves[:old]), rfc9162.mth(leaves[:new])
    assert rfc9162.verify_consistency(old, new, hashes, old_root, new_root)
    assert tree.verify_consistency(old, new, hashes, old_root, new_root)
    assert not tree.verify_consistency(old, new, hashes, bytes(32), new_root)


def test_every_index_of_small_trees(big_log: tuple[Ledger, list[bytes]]) -> None:
    ledger, leaves = big_log
    for size in range(1, 65):
        root = rfc9162.mth(leaves[:size])
        for index in range(size):
            hashes = list(ledger.inclusion_proof(index, size).hashes)
            assert rfc9162.verify_inclusion(leaves[index], index, size, hashes, root)
        for old in range(1, size + 1):
            hashes = list(ledger.consistency_proof(old, size).hashes)
            assert rfc9162.verify_consistency(old, size, hashes, rfc9162.mth(leaves[:old]), root)


def test_proof_json_has_the_documented_shape(big_log: tuple[Ledger, list[bytes]]) -> None:
    ledger, _ = big_log
    inclusion = ledger.inclusion_proof(5, 10).to_json()
    assert set(inclusion) == {"index", "size", "hashes"}
    assert all(len(base64.b64decode(h)) == 32 for h in inclusion["hashes"])
    assert set(ledger.consistency_proof(3, 10).to_json()) == {"old_size", "new_size", "hashes"}


def test_checkpoints_verify_with_an_independent_note_verifier(
    big_log: tuple[Ledger, list[bytes]],
) -> None:
    ledger, leaves = big_log
    note = ledger.checkpoint()
    text = verify_note(note, ledger.signer.verifier_key())
    origin, size, root = parse_checkpoint(text)
    assert (origin, size, root) == (ledger.origin, 2000, rfc9162.mth(leaves))
    with pytest.raises(AssertionError):
        verify_note(note.replace("\n2000\n", "\n1999\n"), ledger.signer.verifier_key())


json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(), json_values | st.floats(allow_nan=False, allow_infinity=False), max_size=6
    )
)
def test_canonical_json_is_rfc8785(value: dict[str, object]) -> None:
    import rfc8785

    assert canonical_json(value) == rfc8785.dumps(value)
