"""Checkpoints as C2SP signed notes, and witness cosignatures.

- ``tlog-checkpoint``: the note text is ``<origin>\\n<size>\\n<base64 root>\\n`` (optionally
  followed by extension lines).
- ``signed-note``: after the text, a blank line, then one line per signature:
  ``— <key name> <base64(key id ‖ signature)>``. For Ed25519 the key id is the first four
  bytes of SHA-256(name ‖ "\\n" ‖ 0x01 ‖ public key), and the signature covers the text.
  A verifier key is written ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``.
- ``tlog-cosignature`` (v1): algorithm byte 0x04; the witness signs
  ``cosignature/v1\\ntime <unix seconds>\\n`` followed by the checkpoint text, and its
  signature line carries key id ‖ 8-byte big-endian time ‖ Ed25519 signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from custos.errors import IntegrityError, InvalidInput

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
_DASH = "\u2014"
#: As many signatures as a note may carry (the reference implementation's bound).
_MAX_SIGNATURES = 100


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, algorithm: int, public: bytes) -> bytes:
    """The 4-byte key id of a note key: SHA-256(name ‖ "\\n" ‖ alg ‖ key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public).digest()[:4]


def _valid_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def _check_name(name: str) -> str:
    if not _valid_name(name):
        raise InvalidInput(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


class Ed25519Signing(Protocol):
    """An Ed25519 private key, wherever it is kept.

    - ``sign(data)`` returns the 64-byte Ed25519 signature (RFC 8032, pure Ed25519) of
      ``data``.
    - ``public_key()`` returns the matching public key.

    ``cryptography``'s :class:`Ed25519PrivateKey` is one (a key file's); a key inside a
    PKCS#11 token (:class:`custos.ledger.token.TokenSigningKey`) is another.
    """

    def sign(self, data: bytes) -> bytes: ...

    def public_key(self) -> Ed25519PublicKey: ...


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signer (``algorithm`` 0x01 for logs, 0x04 for witness cosignatures)."""

    name: str
    private: Ed25519Signing
    algorithm: int = ALG_ED25519

    @property
    def public(self) -> bytes:
        return _raw_public(self.private.public_key())

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.algorithm, self.public)

    def verifier_key(self) -> str:
        """The verifier key string ``name+hexid+base64(alg ‖ key)``."""
        material = base64.b64encode(bytes([self.algorithm]) + self.public).decode()
        return f"{_check_name(self.name)}+{self.key_id.hex()}+{material}"

    def sign_line(self, text: str) -> str:
        """A signature line for ``text`` (a note body ending in a newline)."""
        sig = self.private.sign(text.encode())
        return f"{_DASH} {self.name} {base64.b64encode(self.key_id + sig).decode()}\n"

    def cosign_line(self, checkpoint_text: str, timestamp: int) -> str:
        """A C2SP cosignature/v1 line over ``checkpoint_text`` at ``timestamp``."""
        message = f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()
        sig = self.private.sign(message)
        blob = self.key_id + struct.pack(">Q", timestamp) + sig
        return f"{_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class NoteVerifier:
    """A verifier parsed from a verifier key string."""

    name: str
    key_id: bytes
    algorithm: int
    public: Ed25519PublicKey

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexid+base64key``. Raises :class:`InvalidInput` when malformed."""
        try:
            name, hex_id, material = vkey.strip().split("+", 2)
            raw = base64.b64decode(material, validate=True)
            kid = bytes.fromhex(hex_id)
        except (ValueError, binascii.Error):
            raise InvalidInput("malformed verifier key (expected name+hexid+base64key)") from None
        if len(raw) != 33 or raw[0] not in (ALG_ED25519, ALG_COSIGNATURE_V1) or len(kid) != 4:
            raise InvalidInput("verifier key is not an Ed25519 note or cosignature key")
        if key_id(name, raw[0], raw[1:]) != kid:
            raise InvalidInput("verifier key id does not match its name and key")
        return cls(name, kid, raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))


@dataclass(frozen=True)
class Signature:
    name: str
    blob: bytes


@dataclass(frozen=True)
class SignedNote:
    """A parsed note: its text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[Signature, ...]

    @classmethod
    def parse(cls, note: str) -> SignedNote:
        """Parse a signed note, as strictly as the reference implementation opens one (Go's
        ``note.Open``; callers decode the bytes as strict UTF-8 first): no control character
        but newline anywhere, the signature block after the last blank line, every line of
        it ``— name base64`` ending in a newline, names without spaces or ``+``, at most 100
        signatures. A note one verifier takes and another refuses would let a log show
        witnesses something its own tools reject.

        Raises :class:`InvalidInput` when it is not one.
        """
        bad = next((c for c in note if c < " " and c != "\n"), None)
        if bad is not None:
            raise InvalidInput(
                f"not a signed note: control character U+{ord(bad):04X} (only newlines may be)"
            )
        if "\n\n" not in note:
            raise InvalidInput("not a signed note: no blank line before the signatures")
        text, _, sigs = note.rpartition("\n\n")
        text += "\n"
        if not sigs.endswith("\n"):
            raise InvalidInput("not a signed note: the last signature line has no newline")
        lines = sigs[:-1].split("\n")
        if len(lines) > _MAX_SIGNATURES:
            raise InvalidInput(f"not a signed note: more than {_MAX_SIGNATURES} signatures")
        signatures = []
        for line in lines:
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != _DASH:
                raise InvalidInput("not a signed note: malformed signature line")
            name = parts[1]
            if not _valid_name(name):
                raise InvalidInput(
                    "not a signed note: a signer's name is empty or has a space or +"
                )
            try:
                blob = base64.b64decode(parts[2], validate=True)
            except binascii.Error:
                raise InvalidInput("not a signed note: signature is not base64") from None
            if len(blob) < 5:
                raise InvalidInput("not a signed note: signature too short")
            signatures.append(Signature(name, blob))
        return cls(text, tuple(signatures))

    def render(self) -> str:
        lines = "".join(
            f"{_DASH} {s.name} {base64.b64encode(s.blob).decode()}\n" for s in self.signatures
        )
        return f"{self.text}\n{lines}"

    def verify(self, verifier: NoteVerifier) -> bool:
        """True when a signature by ``verifier`` over the text is present and valid."""
        for sig in self.signatures:
            if sig.name != verifier.name or sig.blob[:4] != verifier.key_id:
                continue
            try:
                if verifier.algorithm == ALG_COSIGNATURE_V1:
                    if len(sig.blob) != 4 + 8 + 64:
                        continue
                    (ts,) = struct.unpack(">Q", sig.blob[4:12])
                    message = f"cosignature/v1\ntime {ts}\n{self.text}".encode()
                    verifier.public.verify(sig.blob[12:], message)
                else:
                    verifier.public.verify(sig.blob[4:], self.text.encode())
                return True
            except InvalidSignature:
                return False
        return False


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, root hash (and extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        body = f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"
        return body + "".join(f"{line}\n" for line in self.extensions)

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body. Raises :class:`InvalidInput`."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise InvalidInput("not a checkpoint: expected origin, size and root lines")
        origin, size_text, root_text, *rest = lines[:-1]
        if (
            not origin
            or not (size_text.isascii() and size_text.isdigit())
            or (size_text != "0" and size_text[0] == "0")
            or len(size_text) > 19
            or int(size_text) >= 2**63  # a tree size is a uint64; databases hold int64
        ):
            raise InvalidInput("not a checkpoint: bad origin or size line")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error:
            raise InvalidInput("not a checkpoint: root is not base64") from None
        if len(root) != 32:
            raise InvalidInput("not a checkpoint: root is not a SHA-256 hash")
        return cls(origin, int(size_text), root, tuple(rest))


def open_checkpoint(note: str, verifier: NoteVerifier) -> tuple[Checkpoint, SignedNote]:
    """Verify a signed checkpoint note with the log's key and parse it.

    Raises :class:`IntegrityError` when the log's signature is missing or invalid, and
    :class:`InvalidInput` when the note is malformed.
    """
    signed = SignedNote.parse(note)
    if not signed.verify(verifier):
        raise IntegrityError(f"checkpoint is not validly signed by {verifier.name}")
    checkpoint = Checkpoint.parse_text(signed.text)
    return checkpoint, signed
