"""Signing keys kept as files in the home's ``keys/`` folder (mode 0600).

A key file holds one line: ``PRIVATE+<name>+<base64 raw Ed25519 seed>``. The log's key signs
checkpoints; a witness keeps its own key in its own state folder.

When the log's key is kept in a PKCS#11 token instead (:mod:`custos.ledger.token`), its name
(the log's origin, public) is kept in ``keys/log.origin``, one line.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from custos.errors import ConfigurationError
from custos.ledger.notes import ALG_ED25519, NoteSigner

LOG_KEY_FILE = "log.key"
#: The last tree this host signed (size and root), beside the key: see Ledger.checkpoint.
SIGNED_HEAD_FILE = "log.signed"
#: The log's name when its key is in a token (a key file carries its own name).
ORIGIN_FILE = "log.origin"


def check_key_name(name: str) -> str:
    """``name`` if it can name a signed-note key (and so a log's origin): printable ASCII,
    no space, no '+'. Raises :class:`ConfigurationError`: a bad name, written into the key
    file, would make every checkpoint unparseable for good."""
    if not name or not all("!" <= c <= "~" and c != "+" for c in name):
        raise ConfigurationError(
            f"key name {name!r} must be printable ASCII without spaces or '+' "
            "(for instance custos.example.com/log)"
        )
    return name


def write_new_key(path: Path, name: str) -> bool:
    """Create a new key at ``path`` unless one exists; True when created. Mode 0600.
    Raises :class:`ConfigurationError` for a name no key may have."""
    check_key_name(name)
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed = Ed25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )
    line = f"PRIVATE+{name}+{base64.b64encode(seed).decode()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_key(path: Path, algorithm: int = ALG_ED25519) -> NoteSigner:
    """Load the key at ``path``. Raises :class:`ConfigurationError` (never printing the key)."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no signing key", hint="run `custos keys`") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigurationError(f"{path}: cannot read the signing key") from None
    if mode & 0o077:
        raise ConfigurationError(f"{path}: key file must not be readable by others (chmod 600)")
    try:
        tag, name, material = text.split("+", 2)
        seed = base64.b64decode(material, validate=True)
        if tag != "PRIVATE" or len(seed) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ConfigurationError(f"{path}: not a custos key file") from None
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed), algorithm)


def write_origin(path: Path, name: str) -> bool:
    """Record the log's name at ``path`` unless recorded; True when written. Mode 0600.
    Raises :class:`ConfigurationError` for a name no key may have."""
    check_key_name(name)
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def read_origin(path: Path) -> str:
    """The log's name recorded at ``path``. Raises :class:`ConfigurationError`."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigurationError(f"{path}: no log name", hint="run `custos init`") from None
    except (OSError, UnicodeDecodeError):
        raise ConfigurationError(f"{path}: cannot read the log's name") from None
    return check_key_name(text)
