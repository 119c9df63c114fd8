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
from typing import Any

import rfc8785

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
_MAX_SAFE_INT = 2**53 - 1
_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _simple(value: Any, depth: int = 0) -> bool:
    """True when ``value`` encodes identically under ``json`` and JCS."""
    if depth > 64:
        return False
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT
    if isinstance(value, (list, tuple)):
        return all(_simple(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(
            isinstance(k, str) and k.isascii() and _simple(v, depth + 1) for k, v in value.items()
        )
    return False


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
