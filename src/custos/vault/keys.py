"""Key providers: where the key-encryption key (KEK) lives and how data keys are wrapped."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custos.errors import ConfigurationError, IntegrityError

if TYPE_CHECKING:
    from custos.config import Settings
    from custos.hsm import Token

KEK_FILE = "vault.kek"


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with a key-encryption key the vault never sees.

    - ``kek_id`` names the KEK in use; it is stored beside every wrapped key so that a KEK
      can be rotated and old keys still found.
    - ``wrap(key_id, data_key)`` returns an opaque blob binding ``data_key`` to ``key_id``
      (unwrapping it under another id must fail).
    - ``unwrap(key_id, blob)`` returns the data key, or raises :class:`IntegrityError` when
      the blob was not made by ``wrap`` for that id with this KEK.

    Implementations: :class:`LocalKeyFile` (default, a 0600 file in the home's ``keys/``); a
    KMS-backed provider implements the same three members.
    """

    @property
    def kek_id(self) -> str: ...

    def wrap(self, key_id: str, data_key: bytes) -> bytes: ...

    def unwrap(self, key_id: str, blob: bytes) -> bytes: ...


class LocalKeyFile:
    """A 256-bit KEK in a local file (mode 0600), wrapping data keys with AES-GCM."""

    def __init__(self, path: Path) -> None:
        try:
            mode = path.stat().st_mode & 0o777
            raw = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
        except FileNotFoundError:
            raise ConfigurationError(
                f"{path}: no vault key-encryption key", hint="run `custos init`"
            ) from None
        except (OSError, UnicodeDecodeError, binascii.Error):
            raise ConfigurationError(f"{path}: not a vault key file") from None
        if mode & 0o077:
            raise ConfigurationError(f"{path}: key file must not be readable by others")
        if len(raw) != 32:
            raise ConfigurationError(f"{path}: not a 256-bit key")
        self._aead = AESGCM(raw)
        self._id = "local:" + hashlib.sha256(b"custos-kek-id" + raw).hexdigest()[:16]

    @staticmethod
    def create(path: Path) -> bool:
        """Create a new KEK file unless one exists (mode 0600). True when created."""
        if path.exists():
            return False
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True

    @property
    def kek_id(self) -> str:
        return self._id

    def wrap(self, key_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, key_id.encode())

    def unwrap(self, key_id: str, blob: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], key_id.encode())
        except (InvalidTag, ValueError):
            raise IntegrityError(f"data key {key_id!r} does not unwrap with this KEK") from None


def kek_provider(settings: Settings, token: Callable[[], Token] | None = None) -> KeyProvider:
    """The key-encryption key ``settings`` name: ``keys/vault.kek``, or with ``[keys]
    provider = "pkcs11"`` the token's key labelled ``kek_label``. ``token`` gives the
    logged-in token to use (default: one opened from ``[keys]``). Raises
    :class:`ConfigurationError` (no such token or key, no or a wrong PIN)."""
    keys = settings.keys
    if keys.provider == "pkcs11":
        from custos.vault.token import TokenKek

        if token is None:
            from custos.hsm import Token

            return TokenKek(Token.from_config(keys), keys.kek_label)
        return TokenKek(token(), keys.kek_label)
    return LocalKeyFile(settings.keys_dir / KEK_FILE)
