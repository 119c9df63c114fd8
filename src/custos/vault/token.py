"""A key-encryption key kept in a PKCS#11 token (``[keys] provider = "pkcs11"``).

The KEK is an AES-256 key generated inside the token, sensitive and never extractable. Data
keys are wrapped and unwrapped inside the token with CKM_AES_GCM, the data key's id as
associated data, so the blob binds the key to its id exactly as :class:`LocalKeyFile`'s does
(and has its layout: 12-byte nonce ‖ ciphertext ‖ 16-byte tag). CKM_AES_KEY_WRAP_PAD was
the other choice SoftHSM2 offers; it has no associated data, so a wrapped key moved to
another id would unwrap there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin

from custos.errors import ConfigurationError, IntegrityError
from custos.hsm import Token, check_unexportable

_NONCE = 12
_TAG = 16
#: Tag failures as token modules report them (SoftHSM2 answers CKR_GENERAL_ERROR).
_NOT_OURS = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.GeneralError,
    p11.FunctionFailed,
    p11.DataInvalid,
)


def _whole(result: bytes | Iterator[bytes]) -> bytes:
    """python-pkcs11 answers bytes for bytes given, an iterator for an iterator given."""
    return result if isinstance(result, bytes) else b"".join(result)


class _Kek(pkcs11.SecretKey, EncryptMixin, DecryptMixin):
    """What the KEK is at run time: a secret key that may encrypt and decrypt (a type for
    the checker; python-pkcs11 composes such classes from the key's capabilities)."""


class TokenKek:
    """A :class:`~custos.vault.keys.KeyProvider` whose KEK never leaves a PKCS#11 token.

    Opening checks that the token holds exactly one secret key labelled ``label``, that it
    is a 256-bit AES key, and that it is sensitive and not extractable; otherwise raises
    :class:`ConfigurationError`. ``kek_id`` is ``pkcs11:`` and the key's CKA_ID in hex.
    """

    def __init__(self, token: Token, label: str) -> None:
        self._token = token
        self._label = label

        def inspect(session: pkcs11.Session) -> bytes:
            key = self._key(session)
            if key[Attribute.KEY_TYPE] != KeyType.AES or key[Attribute.VALUE_LEN] != 32:
                raise ConfigurationError(
                    f"token {token.label!r}: key {label!r} is not a 256-bit AES key"
                )
            check_unexportable(key, "vault key-encryption key", token.label)
            return bytes(key[Attribute.ID])

        self._id = "pkcs11:" + token.run("reading the vault key", inspect).hex()

    def _key(self, session: pkcs11.Session) -> _Kek:
        key = self._token.find(session, ObjectClass.SECRET_KEY, self._label)
        if not isinstance(key, pkcs11.SecretKey):
            raise ConfigurationError(
                f"token {self._token.label!r}: no vault key-encryption key labelled "
                f"{self._label!r}",
                hint="run `custos init` to generate it in the token",
            )
        if not isinstance(key, EncryptMixin) or not isinstance(key, DecryptMixin):
            raise ConfigurationError(
                f"token {self._token.label!r}: key {self._label!r} may not encrypt and decrypt"
            )
        return key  # type: ignore[return-value]  # checked: both mixins

    @staticmethod
    def create(token: Token, label: str) -> bool:
        """Generate the KEK inside ``token`` unless one is labelled ``label``; True when
        created. Raises :class:`ConfigurationError` when the token refuses."""

        def generate(session: pkcs11.Session) -> bool:
            if token.find(session, ObjectClass.SECRET_KEY, label) is not None:
                return False
            session.generate_key(
                KeyType.AES,
                256,
                id=os.urandom(16),
                label=label,
                store=True,
                template={
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                    Attribute.SIGN: False,
                    Attribute.VERIFY: False,
                    Attribute.DERIVE: False,
                },
            )
            return True

        created = token.run("generating the vault key", generate)
        token.forget_objects()
        return created

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        """``data_key`` encrypted inside the token, bound to ``key_id``."""
        nonce = os.urandom(_NONCE)
        params = GCMParams(nonce, key_id.encode())

        def encrypt(session: pkcs11.Session) -> bytes:
            return _whole(
                self._key(session).encrypt(
                    data_key, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )

        return nonce + self._token.run("wrapping a data key", encrypt)

    def unwrap(self, key_id: str, blob: bytes) -> bytes:
        """The data key of ``blob``. Raises :class:`IntegrityError` when it was not wrapped
        for ``key_id`` by this KEK, :class:`ConfigurationError` when the token fails."""
        refused = IntegrityError(f"data key {key_id!r} does not unwrap with this KEK")
        if len(blob) < _NONCE + _TAG:
            raise refused
        params = GCMParams(blob[:_NONCE], key_id.encode())

        def decrypt(session: pkcs11.Session) -> bytes | None:
            key = self._key(session)
            try:
                return _whole(
                    key.decrypt(blob[_NONCE:], mechanism=Mechanism.AES_GCM, mechanism_param=params)
                )
            except _NOT_OURS:
                return None

        opened = self._token.run("unwrapping a data key", decrypt)
        if opened is None:
            raise refused
        return opened
