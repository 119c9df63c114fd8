"""Merkle tree maths of RFC 9162, over stored perfect subtrees.

A node is named ``(level, index)``: it is the root of the perfect subtree over leaves
``[index·2^level, (index+1)·2^level)``. Custos stores every such node once it is complete, so
any range hash, inclusion proof or consistency proof needs only O(log n) stored nodes:
:func:`inclusion_nodes` / :func:`consistency_nodes` say which, and :func:`inclusion_proof` /
:func:`consistency_proof` build the proof from them. The verifiers follow RFC 9162 §2.1.3.2
and §2.1.4.2 literally and share nothing with the builders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from custos.ledger.hashing import EMPTY_ROOT, node_hash

Node = tuple[int, int]
NodeGetter = Callable[[Iterable[Node]], Mapping[Node, bytes]]


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees that make up leaves ``[start, end)``, left to right.

    Valid for the ranges RFC 9162's recursion produces (``start`` aligned to a power of two
    at least as large as the range).
    """
    nodes: list[Node] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # Largest aligned perfect subtree starting at `start` that fits.
        while start % (1 << level):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine perfect-subtree hashes (left to right, decreasing sizes) into one range hash."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = node_hash(left, acc)
    return acc


def _inclusion_ranges(m: int, start: int, end: int, out: list[tuple[int, int]]) -> None:
    # PATH(m, D[start:end]) of RFC 9162 §2.1.3.1: the sibling ranges, bottom-up.
    n = end - start
    if n <= 1:
        return
    k = _largest_power_of_two_below(n)
    if m < k:
        _inclusion_ranges(m, start, start + k, out)
        out.append((start + k, end))
    else:
        _inclusion_ranges(m - k, start + k, end, out)
        out.append((start, start + k))


def _consistency_ranges(
    m: int, start: int, end: int, complete: bool, out: list[tuple[int, int]]
) -> None:
    # SUBPROOF(m, D[start:end], b) of RFC 9162 §2.1.4.1.
    n = end - start
    if m == n:
        if not complete:
            out.append((start, end))
        return
    k = _largest_power_of_two_below(n)
    if m <= k:
        _consistency_ranges(m, start, start + k, complete, out)
        out.append((start + k, end))
    else:
        _consistency_ranges(m - k, start + k, end, False, out)
        out.append((start, start + k))


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form the inclusion proof of ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    out: list[tuple[int, int]] = []
    _inclusion_ranges(index, 0, size, out)
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form the consistency proof from ``old`` to ``new``."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    out: list[tuple[int, int]] = []
    if 0 < old < new:
        _consistency_ranges(old, 0, new, True, out)
    return out


def hashes_for(ranges: Sequence[tuple[int, int]], get: NodeGetter) -> list[bytes]:
    """Range hashes for ``ranges``, fetching every node needed in one call of ``get``."""
    plans = [range_nodes(a, b) for a, b in ranges]
    found = get({node for plan in plans for node in plan})
    return [fold([found[node] for node in plan]) for plan in plans]


def root(size: int, get: NodeGetter) -> bytes:
    """MTH of the first ``size`` leaves."""
    return hashes_for([(0, size)], get)[0] if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """The RFC 9162 inclusion proof (audit path) of leaf ``index`` in a tree of ``size``."""
    return hashes_for(inclusion_ranges(index, size), get)


def consistency_proof(old: int, new: int, get: NodeGetter) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``old`` and ``new``."""
    return hashes_for(consistency_ranges(old, new), get)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show leaf hash ``leaf`` at ``index`` under the root?"""
    if index >= size or index < 0:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(
    old: int, new: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: does ``proof`` show the tree of size ``old`` is a prefix of ``new``?"""
    if old < 0 or old > new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
