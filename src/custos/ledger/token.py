"""The log's Ed25519 signing key kept in a PKCS#11 token (``[keys] provider = "pkcs11"``).

The key pair is generated inside the token (CKM_EC_EDWARDS_KEY_PAIR_GEN on edwards25519),
the private half sensitive and never extractable, and checkpoints are signed there
(CKM_EDDSA, pure Ed25519). The signatures and the verifier key are those of a key file's
key, byte for byte, so every existing verifier and witness accepts them. The log's name (its
origin) is not secret and is kept in ``keys/log.origin`` (see :mod:`custos.ledger.keys`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import SignMixin

from custos.errors import ConfigurationError
from custos.hsm import Token, check_unexportable
from custos.ledger.keys import read_origin
from custos.ledger.notes import ALG_ED25519, NoteSigner

#: CKA_EC_PARAMS of edwards25519: the DER of OID 1.3.101.112 (id-Ed25519) is what we write;
#: PKCS#11 3.0 also allows the curve's name as a PrintableString, which some tokens report.
_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_NAME = bytes.fromhex("130c") + b"edwards25519"
_PROBE = b"custos: does this token key sign for its public key?"


def _raw_point(point: bytes) -> bytes:
    """The 32-byte public key from CKA_EC_POINT: DER OCTET STRING (what the standard asks
    for) or the raw bytes (what some modules return)."""
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise ValueError("not an Ed25519 point")


class TokenSigningKey:
    """An :class:`~custos.ledger.notes.Ed25519Signing` key whose private half stays in a
    PKCS#11 token.

    Opening finds the private and public keys labelled ``label``, checks they are edwards25519
    keys, that the private one is sensitive and not extractable, and that it signs for the
    public one (one probe signature); otherwise raises :class:`ConfigurationError`.
    """

    def __init__(self, token: Token, label: str) -> None:
        self._token = token
        self._label = label

        def inspect(session: pkcs11.Session) -> bytes:
            private = self._private(session)
            public = token.find(session, ObjectClass.PUBLIC_KEY, label)
            if not isinstance(public, pkcs11.PublicKey):
                raise ConfigurationError(
                    f"token {token.label!r}: no public key labelled {label!r} beside the "
                    "log's signing key",
                )
            try:
                params = bytes(public[Attribute.EC_PARAMS])
                raw = _raw_point(bytes(public[Attribute.EC_POINT]))
            except (pkcs11.PKCS11Error, ValueError):
                params, raw = b"", b""
            if (
                private[Attribute.KEY_TYPE] != KeyType.EC_EDWARDS
                or params not in (_ED25519_OID, _ED25519_NAME)
                or not raw
            ):
                raise ConfigurationError(
                    f"token {token.label!r}: key {label!r} is not an Ed25519 key pair"
                )
            check_unexportable(private, "log's signing key", token.label)
            return raw

        self._public = Ed25519PublicKey.from_public_bytes(
            token.run("reading the log's signing key", inspect)
        )
        try:
            self._public.verify(self.sign(_PROBE), _PROBE)
        except InvalidSignature:
            raise ConfigurationError(
                f"token {token.label!r}: the keys labelled {label!r} are not one pair"
            ) from None

    def _private(self, session: pkcs11.Session) -> SignMixin:
        key = self._token.find(session, ObjectClass.PRIVATE_KEY, self._label)
        if not isinstance(key, pkcs11.PrivateKey) or not isinstance(key, SignMixin):
            raise ConfigurationError(
                f"token {self._token.label!r}: no signing key labelled {self._label!r}",
                hint="run `custos init` to generate it in the token",
            )
        return key

    @staticmethod
    def create(token: Token, label: str) -> bool:
        """Generate the key pair inside ``token`` unless a private key is labelled ``label``;
        True when created. Raises :class:`ConfigurationError` when the token refuses (one
        without Ed25519 among them)."""

        def generate(session: pkcs11.Session) -> bool:
            if token.find(session, ObjectClass.PRIVATE_KEY, label) is not None:
                return False
            session.generate_keypair(
                KeyType.EC_EDWARDS,
                id=os.urandom(16),
                label=label,
                store=True,
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                public_template={Attribute.EC_PARAMS: _ED25519_OID, Attribute.VERIFY: True},
                private_template={
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                    Attribute.DERIVE: False,
                },
            )
            return True

        created = token.run("generating the log's signing key", generate)
        token.forget_objects()
        return created

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data``, made inside the token."""

        def sign(session: pkcs11.Session) -> bytes:
            return bytes(self._private(session).sign(data, mechanism=Mechanism.EDDSA))

        return self._token.run("signing", sign)

    def public_key(self) -> Ed25519PublicKey:
        return self._public


def read_token_key(token: Token, label: str, origin: Path) -> NoteSigner:
    """The log's signer: the key labelled ``label`` in ``token``, named by the origin kept in
    the file ``origin``. Raises :class:`ConfigurationError`."""
    return NoteSigner(read_origin(origin), TokenSigningKey(token, label), ALG_ED25519)
