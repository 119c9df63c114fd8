"""TLS for the SQL front: ``[sql] tls_cert``, ``tls_key`` and ``tls_client_ca`` checked and
turned into a server-side :class:`ssl.SSLContext`, and the rule that keeps API tokens off the
network in clear (:func:`check_exposure`).

Every file is read and checked here, once, when the front is opened, so a mistake is a
:class:`ConfigurationError` naming the file and the key rather than a client's handshake
failing later: a missing or unreadable file, something that is not PEM, a key file others may
read (the rule of ``keys/``), an encrypted key, a key that is not the certificate's, a
certificate outside its validity period.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from custos.errors import ConfigurationError

#: The ALPN protocol name PostgreSQL 17 defined; a direct TLS connection must offer it.
ALPN = "postgresql"


def _read(path: Path, key: str, origin: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{origin}: [sql] {key}: no file at {path}") from None
    except OSError as exc:
        raise ConfigurationError(
            f"{origin}: [sql] {key}: cannot read {path} ({exc.strerror or 'not a file'})"
        ) from None


def _certificates(path: Path, key: str, origin: str) -> list[x509.Certificate]:
    data = _read(path, key, origin)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ConfigurationError(f"{origin}: [sql] {key}: {path} holds no PEM certificate")
    return found


def _spki(public_key: object) -> bytes:
    encoded: bytes = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded


def server_context(
    cert: Path, key: Path, client_ca: Path | None = None, *, origin: str = "config.toml"
) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or later, Python's default secure ciphers, ALPN
    ``postgresql``, the chain in ``cert`` (leaf first) with the private key in ``key``; with
    ``client_ca``, a client certificate signed by one of its CAs is required. ``origin`` (the
    config file) starts every message. Raises :class:`ConfigurationError` naming the key
    (``tls_cert``, ``tls_key``, ``tls_client_ca``) and the file, never the key's material."""
    chain = _certificates(cert, "tls_cert", origin)
    now = datetime.now(UTC)
    leaf = chain[0]
    if leaf.not_valid_after_utc <= now:
        raise ConfigurationError(
            f"{origin}: [sql] tls_cert: the certificate in {cert} expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}",
            hint="renew it: clients that verify the server refuse an expired certificate",
        )
    if leaf.not_valid_before_utc > now:
        raise ConfigurationError(
            f"{origin}: [sql] tls_cert: the certificate in {cert} is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        mode = key.stat().st_mode & 0o777
    except FileNotFoundError:
        raise ConfigurationError(f"{origin}: [sql] tls_key: no file at {key}") from None
    except OSError as exc:
        raise ConfigurationError(
            f"{origin}: [sql] tls_key: cannot read {key} ({exc.strerror})"
        ) from None
    if mode & 0o077:
        # As keys/vault.kek and keys/log.key: a key others can read is no secret.
        raise ConfigurationError(
            f"{origin}: [sql] tls_key: key file {key} must not be readable by others (chmod 600)"
        )
    material = _read(key, "tls_key", origin)
    try:
        private = serialization.load_pem_private_key(material, password=None)
    except TypeError:
        raise ConfigurationError(
            f"{origin}: [sql] tls_key: the key in {key} is encrypted",
            hint="custos reads an unencrypted PEM key, kept readable by its owner only",
        ) from None
    except (ValueError, NotImplementedError):
        raise ConfigurationError(
            f"{origin}: [sql] tls_key: {key} holds no PEM private key"
        ) from None
    if _spki(private.public_key()) != _spki(leaf.public_key()):
        raise ConfigurationError(
            f"{origin}: [sql] tls_key: the key in {key} is not the key of the certificate "
            f"in {cert} ([sql] tls_cert)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols([ALPN])
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError):
        raise ConfigurationError(
            f"{origin}: [sql] tls_cert / tls_key: OpenSSL refused {cert} with {key}"
        ) from None
    if client_ca is not None:
        _certificates(client_ca, "tls_client_ca", origin)
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError):
            raise ConfigurationError(
                f"{origin}: [sql] tls_client_ca: OpenSSL refused the certificates in {client_ca}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def is_loopback(address: str) -> bool:
    """True for an address on the loopback network (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_exposure(
    addresses: Iterable[str], *, tls: bool, allow_cleartext: bool, origin: str
) -> None:
    """Refuse to listen in clear beyond loopback: every address ``[sql] listen`` resolved to must be
    loopback unless TLS is configured or ``[sql] allow_cleartext = true`` says TLS is
    terminated in front of custos. Raises :class:`ConfigurationError` naming the file and keys."""
    if tls or allow_cleartext:
        return
    if not all(is_loopback(a) for a in addresses):
        # The address is not repeated: messages carry no IP address (custos.errors).
        raise ConfigurationError(
            f"{origin}: [sql] listen (or --listen) is not a loopback address and [sql] "
            "tls_cert / tls_key are not set: API tokens would cross the network in clear",
            hint="set [sql] tls_cert and tls_key (PEM files), or [sql] allow_cleartext = true "
            "only if a TLS proxy in front of custos is the sole way in",
        )


def resolve_path(value: object, key: str, home: Path, origin: str) -> Path | None:
    """``[sql] <key>`` as a path (relative to the home folder), None when unset. Raises
    :class:`ConfigurationError` for a value that is not a non-empty string."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{origin}: [sql] {key} must be the path of a PEM file")
    path = Path(os.path.expanduser(value.strip()))
    return path if path.is_absolute() else home / path
