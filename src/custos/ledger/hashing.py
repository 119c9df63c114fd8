"""Entry encoding and RFC 9162 hashing.

Entries are canonical JSON (RFC 8785, JCS). Most entries hold only strings, integers, booleans,
nulls, lists and objects with ASCII keys; for those, Python's ``json`` with sorted keys and no
whitespace produces exactly the JCS bytes, an order of magnitude faster than a general JCS
implementation. Anything else (floats, non-ASCII keys) goes through ``rfc8785``. A property test
checks the two agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
_MAX_SAFE_INT = 2**53 - 1
_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Spliced:
    """An entry given as ``entry`` (every member but one) and ``text``: the JSON text of its
    member ``member``, already canonical (RFC 8785). The ledger encodes and salts ``entry``
    as any other, then splices ``text`` in as ``member``'s value.

    For entries of thousands of rows whose writer encodes them faster than a general encoder
    can (``custos org import``'s authority entries, built from rows it validated itself):
    the writer vouches that ``text`` is canonical JSON, and must hold its encoder to
    :func:`~custos.ledger.hashing.canonical_json` by test. Spliced entries carry no chain
    links: the chain sees only ``entry``, so ``member`` must be one it does not read.
    """

    entry: Mapping[str, Any]
    member: str
    text: str


def _simple(value: Any) -> bool:
    """True when ``value`` encodes identically under ``json`` and JCS.

    Iterative, with exact type checks: this runs for every ledger entry on the hot path.
    """
    stack = [value]
    seen = 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > 100_000:
            return False
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INT <= item <= _MAX_SAFE_INT:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of ``value``. Raises ``ValueError`` for non-JSON values."""
    if _simple(value):
        return _encoder.encode(value).encode("utf-8")
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError) as exc:
        raise ValueError(f"not canonicalisable as JSON: {exc}") from None


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 ‖ entry) — RFC 9162 §2.1.1."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right) — RFC 9162 §2.1.1."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()
