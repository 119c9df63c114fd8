"""PKCS#11 tokens: where the keys that must not sit beside the data are kept.

With ``[keys] provider = "pkcs11"`` the vault's key-encryption key and the log's signing key
are generated inside a token (an HSM, a cloud KMS's PKCS#11 library, SoftHSM2 in tests),
marked sensitive and never extractable, and used there: a copy of the home folder and the
database holds no key, and nothing signs or unwraps without the token and its PIN.

One process keeps **one logged-in session per token** and shares it between the keys on that
token: in PKCS#11 a login belongs to the whole application, so a second login fails and a
logout (closing a session) logs every session out. All calls into the module are serialised
under one lock (a session runs one operation at a time); a session invalidated underneath
(the module re-initialised, the token removed, the process forked) is opened again once
before an operation is given up.

The PIN comes from ``$CUSTOS_PKCS11_PIN`` only — never from ``config.toml`` — and appears in
no message, log or exception.

This module imports ``pkcs11`` (python-pkcs11), which takes tens of milliseconds; it is
imported only when a token is configured.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pkcs11
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from custos.config import PIN_ENV, KeysConfig
from custos.errors import ConfigurationError, CustosError

T = TypeVar("T")

#: Errors after which the session (not the request) is at fault: log in again and retry.
_STALE_SESSION = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.UserNotLoggedIn,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
)
#: Errors after which a found object's handle is at fault: find it again and retry.
_STALE_OBJECT = (p11.ObjectHandleInvalid, p11.KeyHandleInvalid)
_BAD_PIN = (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange)


class _Library:
    """One loaded PKCS#11 module in this process, and the logins on its tokens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.lib = pkcs11.lib(str(path))
        except p11.PKCS11Error:
            raise ConfigurationError(
                f"[keys] module {path}: cannot be loaded as a PKCS#11 library"
            ) from None
        self.pid = os.getpid()
        self.generation = 0
        self.logins: dict[str, _Login] = {}

    def reload(self) -> None:
        """Finalise and initialise the module again: a forked child must, and a module reads
        its configuration (for SoftHSM2 its token folder) only then. Every session ends."""
        # A child's inherited state may refuse finalising; initialising is what counts.
        with contextlib.suppress(p11.PKCS11Error):
            self.lib.finalize()
        try:
            self.lib.initialize()
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"[keys] module {self.path}: cannot be initialised ({type(exc).__name__})"
            ) from None
        self.pid = os.getpid()
        self.generation += 1
        self.logins.clear()


@dataclass
class _Login:
    session: pkcs11.Session
    generation: int
    pin_check: bytes
    objects: dict[tuple[ObjectClass, str], pkcs11.Object] = field(default_factory=dict)


_LOCK = threading.RLock()
_LIBRARIES: dict[Path, _Library] = {}
#: Compares PINs without keeping a second copy: an HMAC under a key that dies with the process.
_PIN_KEY = secrets.token_bytes(32)


def _pin_check(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode(), hashlib.sha256).digest()


def _library(path: Path) -> _Library:
    if not path.is_file():
        raise ConfigurationError(f"[keys] module {path}: no such file (the PKCS#11 library)")
    library = _LIBRARIES.get(path)
    if library is None:
        library = _LIBRARIES[path] = _Library(path)
    elif library.pid != os.getpid():
        library.reload()
    return library


class Token:
    """One PKCS#11 token, used as its normal user with a PIN from the environment.

    Creating one loads the module, finds the token and logs in, so that every setup mistake
    surfaces at once as a :class:`ConfigurationError`: the module is missing or no PKCS#11
    library, no token has the label, ``$CUSTOS_PKCS11_PIN`` is unset, the PIN is wrong or
    locked. The keys on the token are found by label with :meth:`find` inside :meth:`run`.
    """

    def __init__(self, module: Path, label: str, pin: str | None) -> None:
        if not pin:
            raise ConfigurationError(
                f"token {label!r}: no PIN (the keys are kept in a PKCS#11 token)",
                hint=f"set ${PIN_ENV} to the token's user PIN",
            )
        self.module = module
        self.label = label
        self._pin = pin
        with _LOCK:
            self._session()

    @classmethod
    def from_config(cls, config: KeysConfig) -> Token:
        """The configured token, logged in with ``$CUSTOS_PKCS11_PIN``.
        Raises :class:`ConfigurationError` (see the class)."""
        if config.module is None or config.token is None:
            raise ConfigurationError("[keys] provider is not 'pkcs11'")
        return cls(config.module, config.token, os.environ.get(PIN_ENV))

    def _find_token(self, library: _Library) -> pkcs11.Token:
        for attempt in (1, 2):
            try:
                return library.lib.get_token(token_label=self.label)
            except p11.NoSuchToken:
                if attempt == 2:
                    break
                # A token made after the module was initialised is seen only after a reload.
                library.reload()
            except p11.MultipleTokensReturned:
                raise ConfigurationError(
                    f"[keys] token {self.label!r}: several tokens have this label in {self.module}"
                ) from None
        raise ConfigurationError(
            f"[keys] token {self.label!r}: no such token in {library.path}",
            hint="check the label (softhsm2-util --show-slots lists SoftHSM2's)",
        )

    def _session(self) -> _Login:
        library = _library(self.module)
        check = _pin_check(self._pin)
        login = library.logins.get(self.label)
        if login is not None and login.generation == library.generation:
            # Logged in already in this process: a login cannot be checked twice, so compare.
            if not hmac.compare_digest(login.pin_check, check):
                raise ConfigurationError(f"token {self.label!r}: wrong PIN")
            return login
        token = self._find_token(library)
        try:
            session = token.open(rw=True, user_pin=self._pin)
        except _BAD_PIN:
            raise ConfigurationError(
                f"token {self.label!r}: wrong PIN", hint=f"check ${PIN_ENV}"
            ) from None
        except p11.PinLocked:
            raise ConfigurationError(
                f"token {self.label!r}: the user PIN is locked after too many wrong tries",
                hint="its security officer must unlock it",
            ) from None
        except p11.UserPinNotInitialized:
            raise ConfigurationError(f"token {self.label!r}: has no user PIN yet") from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"token {self.label!r}: cannot log in ({type(exc).__name__})"
            ) from None
        login = library.logins[self.label] = _Login(session, library.generation, check)
        return login

    def _forget(self, *, session: bool) -> None:
        """Drop the found objects, and with ``session`` the login too: its session is closed
        (which logs out), so the next login is a real one that checks the PIN."""
        library = _LIBRARIES.get(self.module)
        login = library.logins.get(self.label) if library is not None else None
        if library is None or login is None:
            return
        login.objects.clear()
        if session:
            del library.logins[self.label]
            with contextlib.suppress(p11.PKCS11Error):
                login.session.close()

    def run(self, what: str, action: Callable[[pkcs11.Session], T]) -> T:
        """``action(session)`` on the logged-in session, under the process's PKCS#11 lock.

        A session found stale is logged in again (a stale object found again) and the action
        retried once. Errors of custos raised by ``action`` pass through; any other PKCS#11
        error becomes a :class:`ConfigurationError` saying ``what`` failed on which token (its
        kind only).
        """
        with _LOCK:
            for attempt in (1, 2):
                login = self._session()
                try:
                    return action(login.session)
                except CustosError:
                    raise
                except (*_STALE_SESSION, *_STALE_OBJECT) as exc:
                    self._forget(session=isinstance(exc, _STALE_SESSION))
                    if attempt == 2:
                        raise ConfigurationError(
                            f"token {self.label!r}: {what} failed ({type(exc).__name__})"
                        ) from None
                except p11.PKCS11Error as exc:
                    raise ConfigurationError(
                        f"token {self.label!r}: {what} failed ({type(exc).__name__})"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def find(
        self, session: pkcs11.Session, object_class: ObjectClass, label: str
    ) -> pkcs11.Object | None:
        """The object of ``object_class`` labelled ``label`` on this token, or None; call
        inside :meth:`run`. Raises :class:`ConfigurationError` when several share the label
        (which one signs would be the token's choice)."""
        library = _LIBRARIES[self.module]
        login = library.logins[self.label]
        found = login.objects.get((object_class, label))
        if found is not None:
            return found
        objects = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
        if len(objects) > 1:
            raise ConfigurationError(
                f"token {self.label!r}: {len(objects)} objects are labelled {label!r}",
                hint="give every custos key its own label",
            )
        if objects:
            login.objects[(object_class, label)] = objects[0]
            return objects[0]
        return None

    def forget_objects(self) -> None:
        """Drop the found objects (after creating or destroying one)."""
        with _LOCK:
            library = _LIBRARIES.get(self.module)
            login = library.logins.get(self.label) if library else None
            if login is not None:
                login.objects.clear()


def check_unexportable(obj: pkcs11.Object, what: str, token: str) -> None:
    """Refuse a key that could leave the token: it must be sensitive and never have been
    extractable. Raises :class:`ConfigurationError`."""
    if not obj[Attribute.SENSITIVE] or obj[Attribute.EXTRACTABLE]:
        raise ConfigurationError(
            f"token {token!r}: the {what} is extractable or not sensitive; custos uses only "
            "keys that cannot leave the token",
            hint="destroy it and let `custos init` generate one",
        )
