"""A signed-note / tlog-checkpoint verifier written from the C2SP specifications for the tests.

Shares no code with ``custos.ledger.notes``.
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def parse_vkey(vkey: str) -> tuple[str, bytes, int, bytes]:
    name, hex_id, b64 = vkey.split("+", 2)
    raw = base64.b64decode(b64)
    assert hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4] == bytes.fromhex(hex_id)
    return name, bytes.fromhex(hex_id), raw[0], raw[1:]


def verify_note(note: str, vkey: str) -> str:
    """Return the verified text of ``note``; raise AssertionError if not signed by ``vkey``."""
    name, kid, alg, key = parse_vkey(vkey)
    text, sep, sigs = note.rpartition("\n\n")
    assert sep, "no signature block"
    text += "\n"
    public = Ed25519PublicKey.from_public_bytes(key)
    for line in sigs.rstrip("\n").split("\n"):
        dash, signer, b64 = line.split(" ")
        assert dash == "\u2014"
        blob = base64.b64decode(b64)
        if signer != name or blob[:4] != kid:
            continue
        if alg == 0x01:
            message, signature = text.encode(), blob[4:]
        else:
            assert alg == 0x04
            (timestamp,) = struct.unpack(">Q", blob[4:12])
            message = f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()
            signature = blob[12:]
        try:
            public.verify(signature, message)
        except InvalidSignature as exc:
            raise AssertionError("bad signature") from exc
        return text
    raise AssertionError(f"no signature by {name}")


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    origin, size, root, *_ = text.split("\n")
    return origin, int(size), base64.b64decode(root)
