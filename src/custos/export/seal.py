"""Tamper-evident export cursors: each ``export_cursors`` row carries an HMAC-SHA256 over a
canonical encoding of what decides what its destination is sent next (its name, the ledger
and alert cursors, the two in-flight marks, the last ledger index sent), under a key the
database does not hold.

The key (:class:`CursorKey`) is 32 random bytes made once per home and kept in
``keys/export.key`` *wrapped by the vault's key-encryption key* (the
:class:`~custos.vault.keys.KeyProvider`: the local ``keys/vault.kek`` or a PKCS#11 token), so
a copy of the database, or of the ``keys/`` folder without the token, cannot seal a row. The
MAC key proper is derived from it for this one use (HMAC of a fixed label), so the stored
secret can gain other uses later without one's MACs standing for the other's.

A stored MAC reads ``v1:<key id>:<hex>``: the key id (public, 16 hex digits) lets a
mismatch say "sealed under another home's key" rather than only "changed".

The window in which unsealed rows (NULL MAC, left by migration ``0090_export_cursor_mac``)
are sealed as they stand is the step that creates ``keys/export.key``: only the host can
reopen it (by deleting that file), never the database (see docs/design/export.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Final

from custos.config import Settings
from custos.errors import ConfigurationError, IntegrityError
from custos.vault.keys import KeyProvider, kek_provider

#: The export key's file in the home's ``keys/`` folder (the wrapped key, base64, mode 0600).
KEY_FILE: Final = "export.key"
#: The id the export key is wrapped under (the AEAD's associated data): a blob made for
#: another purpose, or another home, does not unwrap as this one.
KEY_ID: Final = "custos/export-cursors/v1"
_LABEL: Final = b"custos export cursor mac v1"
_VERSION: Final = "v1"


def encode(
    name: str,
    ledger: int,
    alert: int,
    ledger_inflight: int | None,
    alert_inflight: int | None,
    ledger_last: int | None,
) -> bytes:
    """The canonical bytes a cursor's MAC is over: a JSON array (compact, ASCII) of a label,
    the destination's name, the two cursors, the two marks and the index of the last ledger
    event sent (each ``null`` when clear): everything that decides what is sent next and
    how. JSON strings and integers cannot run into each other, so distinct rows never encode
    alike."""
    return json.dumps(
        ["custos export cursor", name, ledger, alert, ledger_inflight, alert_inflight, ledger_last],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


class CursorKey:
    """Seals and checks cursor rows with one home's export key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ConfigurationError("the export key must be 256 bits")
        self._key = hmac.new(secret, _LABEL, hashlib.sha256).digest()
        #: Public: names the key in a stored MAC (never enough to forge one).
        self.id = hmac.new(secret, b"custos export key id", hashlib.sha256).hexdigest()[:16]

    def seal(
        self,
        name: str,
        ledger: int,
        alert: int,
        ledger_inflight: int | None,
        alert_inflight: int | None,
        ledger_last: int | None,
    ) -> str:
        """The MAC to store with these values."""
        body = encode(name, ledger, alert, ledger_inflight, alert_inflight, ledger_last)
        digest = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        return f"{_VERSION}:{self.id}:{digest}"

    def problem(
        self,
        mac: str | None,
        name: str,
        ledger: int,
        alert: int,
        ledger_inflight: int | None,
        alert_inflight: int | None,
        ledger_last: int | None,
    ) -> str | None:
        """None when ``mac`` seals these values under this key; else why not, in words
        that name no value (the row itself is the evidence)."""
        if mac is None:
            return "it carries no MAC"
        parts = mac.split(":")
        if len(parts) != 3 or parts[0] != _VERSION:
            return "its MAC is not one custos writes"
        if parts[1] != self.id:
            return (
                f"sealed under another export key ({parts[1][:16]!r}, this home's is {self.id!r})"
            )
        expected = self.seal(name, ledger, alert, ledger_inflight, alert_inflight, ledger_last)
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode("ascii")):
            return "its positions or name are not those it was sealed with"
        return None


def load_key(settings: Settings, provider: KeyProvider | None = None) -> tuple[CursorKey, bool]:
    """The home's export key and whether this call made it (then the caller seals rows left
    unsealed by the migration, and only then). Raises :class:`ConfigurationError` when
    ``keys/export.key`` is unreadable or was not made with this home's key-encryption key."""
    provider = provider or kek_provider(settings)
    path = settings.keys_dir / KEY_FILE
    made = False
    if not path.exists():
        made = _create(path, provider)
    return CursorKey(_read(path, provider)), made


def _create(path: Path, provider: KeyProvider) -> bool:
    blob = base64.b64encode(provider.wrap(KEY_ID, os.urandom(32))).decode("ascii")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole beside it, then linked into place: of two processes making it at once
    # one wins and the other reads its key; neither ever reads half a file.
    spare = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(blob + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(spare, path)
        except FileExistsError:
            return False
        return True
    finally:
        spare.unlink(missing_ok=True)


def _read(path: Path, provider: KeyProvider) -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
        blob = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error):
        raise ConfigurationError(f"{path}: not an export key file") from None
    if mode & 0o077:
        raise ConfigurationError(f"{path}: key file must not be readable by others (chmod 600)")
    try:
        return provider.unwrap(KEY_ID, blob)
    except IntegrityError:
        raise ConfigurationError(
            f"{path}: was not made with this home's vault key-encryption key",
            hint="every host of one installation needs the same keys/export.key",
        ) from None
