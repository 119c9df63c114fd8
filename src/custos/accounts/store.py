"""Accounts, tokens and sessions in the custos database."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from custos.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    UnknownAccount,
    shown_id,
)
from custos.store import Database
from custos.store.accounts import AccountRow, ApiTokenRow, SessionRow

#: Roles a person can hold on the admin plane.
ADMIN_PLANE_ROLES = ("auditor", "investigator", "approver", "privacy_officer", "admin")
#: Roles a token can hold: ``tool`` acts as its principal on the guarded path; the others
#: read as their admin-plane namesakes (a witness or monitor holds ``auditor``).
TOKEN_ROLES = ("tool", "auditor", "investigator")
#: Roles an admin may not hold as well: whoever manages accounts must not also approve.
_NOT_WITH_ADMIN = {"approver", "privacy_officer"}
#: Roles whose rules need to know who acts: independence for answers, own-case for triage.
_NEEDS_PRINCIPAL = {"approver", "privacy_officer", "investigator"}
_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
_TOKEN = re.compile(r"^cst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
MIN_PASSWORD = 12
SESSION_LIFETIME = timedelta(hours=8)
_TOKEN_CACHE_SECONDS = 2.0


def same_secret(presented: str, expected: str) -> bool:
    """Whether two secrets are equal, in time that does not depend on where they differ.

    Compares bytes: ``hmac.compare_digest`` refuses ``str`` with non-ASCII characters, which
    anyone can put in a header, cookie or query parameter.
    """
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Account:
    username: str
    roles: tuple[str, ...]
    principal: str | None
    disabled: bool

    def has(self, *roles: str) -> bool:
        return bool(set(roles) & set(self.roles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "roles": list(self.roles),
            "principal": self.principal,
            "disabled": self.disabled,
        }


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    principal: str | None
    roles: tuple[str, ...]
    created: datetime
    revoked: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "principal": self.principal,
            "roles": list(self.roles),
            "created": self.created.isoformat(),
            "revoked": self.revoked.isoformat() if self.revoked else None,
        }


@dataclass(frozen=True)
class SignedIn:
    """A live browser session: who, and the CSRF token their forms must carry."""

    account: Account
    csrf: str
    expires: datetime


def _account(row: AccountRow) -> Account:
    return Account(row.username, tuple(row.roles), row.principal, row.disabled)


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(row.id, row.name, row.principal, tuple(row.roles), row.created, row.revoked)


class Accounts:
    """People, tokens and sessions. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._hasher = PasswordHasher()
        # Verifying an unknown user costs as much as a known one: no username oracle.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, ApiToken]] = {}

    # -- people ------------------------------------------------------------------------

    def add(
        self,
        username: str,
        password: str | None,
        roles: list[str],
        principal: str | None = None,
        *,
        oidc_subject: str | None = None,
    ) -> Account:
        """Create an account. Raises :class:`InvalidInput` (bad name, weak password, unknown
        role, admin combined with approving roles, approving roles without a principal) and
        :class:`Conflict` (name or OpenID identity taken).

        ``oidc_subject`` (``issuer|subject``) lets that OpenID Connect identity sign in; an
        account with one may have no password (then only OpenID sign-in works).
        """
        problems = []
        if not _USERNAME.match(username):
            problems.append("username must be 2-64 of a-z, 0-9, '_', '.', '-', starting a-z")
        if password is None and oidc_subject is None:
            problems.append("an account needs a password or an OpenID identity")
        if password is not None and len(password) < MIN_PASSWORD:
            problems.append(f"password must be at least {MIN_PASSWORD} characters")
        unknown = sorted(set(roles) - set(ADMIN_PLANE_ROLES))
        if unknown:
            problems.append(f"unknown role(s) {', '.join(unknown)}")
        if not roles:
            problems.append("at least one role is needed")
        if "admin" in roles and _NOT_WITH_ADMIN & set(roles):
            problems.append("an admin may not also be an approver or privacy officer")
        if _NEEDS_PRINCIPAL & set(roles) and not principal:
            problems.append(
                "approvers, privacy officers and investigators must be linked to a principal"
            )
        if problems:
            raise InvalidInput(f"cannot create account {username!r}: " + "; ".join(problems))
        with self.db.session() as session:
            if session.get(AccountRow, username) is not None:
                raise Conflict(f"account {username!r} already exists")
            if oidc_subject is not None and session.scalar(
                select(AccountRow.username).where(AccountRow.oidc_subject == oidc_subject)
            ):
                raise Conflict("that OpenID identity already belongs to an account")
            row = AccountRow(
                username=username,
                # "!" is no argon2 hash: password sign-in is impossible for such accounts.
                password_hash=self._hasher.hash(password) if password is not None else "!",
                roles=sorted(set(roles)),
                principal=principal,
                created=datetime.now(UTC),
                disabled=False,
                oidc_subject=oidc_subject,
            )
            session.add(row)
            return _account(row)

    def get(self, username: str) -> Account:
        """The account ``username``. Raises :class:`UnknownAccount`."""
        with self.db.session() as session:
            row = session.get(AccountRow, username)
            if row is None:
                raise UnknownAccount(f"unknown account {shown_id(username)}")
            return _account(row)

    def all(self) -> list[Account]:
        with self.db.session() as session:
            return [_account(r) for r in session.scalars(select(AccountRow))]

    def disable(self, username: str) -> Account:
        """Disable an account and end its sessions. Raises :class:`UnknownAccount`."""
        with self.db.session() as session:
            row = session.get(AccountRow, username)
            if row is None:
                raise UnknownAccount(f"unknown account {shown_id(username)}")
            row.disabled = True
            session.execute(delete(SessionRow).where(SessionRow.username == username))
            return _account(row)

    def authenticate(self, username: str, password: str) -> Account:
        """The account if the password is right. Raises :class:`AuthenticationFailed`,
        with the same message for an unknown name, a wrong password or a disabled account."""
        # A name no account can have is not looked up (PostgreSQL refuses a NUL in it), but
        # costs the same hashing as any other.
        with self.db.session() as session:
            row = session.get(AccountRow, username) if _USERNAME.match(username) else None
            stored = row.password_hash if row is not None else self._dummy
            account = _account(row) if row is not None else None
        if not stored.startswith("$argon2"):
            # An SSO-only account ("!"): hash anyway, so timing does not tell it apart.
            stored, account = self._dummy, None
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            account = None
        if account is None or account.disabled:
            raise AuthenticationFailed("wrong username or password")
        return account

    def by_oidc(self, oidc_subject: str) -> Account:
        """The enabled account an OpenID identity signs in as. Raises
        :class:`AuthenticationFailed` when none is linked (or it is disabled)."""
        with self.db.session() as session:
            row = session.scalar(select(AccountRow).where(AccountRow.oidc_subject == oidc_subject))
            if row is None or row.disabled:
                raise AuthenticationFailed("this identity is not linked to a custos account")
            return _account(row)

    # -- sessions ----------------------------------------------------------------------

    def start_session(self, account: Account) -> tuple[str, SignedIn]:
        """A new session: the cookie value (secret) and what it signs in."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        signed = SignedIn(account, secrets.token_urlsafe(32), now + SESSION_LIFETIME)
        with self.db.session() as session:
            session.add(
                SessionRow(
                    id_hash=_sha256(secret),
                    username=account.username,
                    csrf=signed.csrf,
                    created=now,
                    expires=signed.expires,
                )
            )
        return secret, signed

    def session(self, secret: str) -> SignedIn | None:
        """The live session behind a cookie value, or None (expired, ended, disabled)."""
        if not secret or len(secret) > 128:
            return None
        with self.db.session() as session:
            row = session.get(SessionRow, _sha256(secret))
            if row is None or row.expires <= datetime.now(UTC):
                return None
            account = session.get(AccountRow, row.username)
            if account is None or account.disabled:
                return None
            return SignedIn(_account(account), row.csrf, row.expires)

    def end_session(self, secret: str) -> None:
        with self.db.session() as session:
            session.execute(delete(SessionRow).where(SessionRow.id_hash == _sha256(secret)))

    # -- tokens ------------------------------------------------------------------------

    def create_token(
        self, name: str, roles: list[str], principal: str | None = None
    ) -> tuple[ApiToken, str]:
        """A new token; returns it and its secret string (shown once, stored hashed).

        Raises :class:`InvalidInput`: unknown roles, ``tool`` without a principal or with
        another role.
        """
        unknown = sorted(set(roles) - set(TOKEN_ROLES))
        problems = [f"unknown token role(s) {', '.join(unknown)}"] if unknown else []
        if not roles:
            problems.append("at least one role is needed")
        if "tool" in roles and not principal:
            problems.append("a tool token acts as a principal: give --principal")
        if "tool" in roles and len(set(roles)) > 1:
            # Whoever reads personal data must not also oversee the reading (or its alerts).
            problems.append("a tool token may hold no other role")
        if not name.strip():
            problems.append("a token needs a name")
        if problems:
            raise InvalidInput("cannot create token: " + "; ".join(problems))
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        row = ApiTokenRow(
            id=token_id,
            secret_hash=_sha256(secret),
            name=name.strip(),
            principal=principal,
            roles=sorted(set(roles)),
            created=datetime.now(UTC),
            revoked=None,
        )
        with self.db.session() as session:
            session.add(row)
            token = _token(row)
        return token, f"cst_{token_id}_{secret}"

    def cached_token(self, presented: str) -> ApiToken | None:
        """The token behind ``presented`` if it was verified here within two seconds."""
        match = _TOKEN.match(presented)
        if match is None:
            return None
        with self._lock:
            cached = self._tokens.get(_sha256(match.group(2)))
        if cached is not None and time.monotonic() - cached[0] < _TOKEN_CACHE_SECONDS:
            return cached[1]
        return None

    def verify_token(self, presented: str) -> ApiToken:
        """The live token behind ``presented``. Raises :class:`AuthenticationFailed`.

        Verified tokens are cached for two seconds per process: a revocation elsewhere
        takes effect within that time, here at once.
        """
        cached = self.cached_token(presented)
        if cached is not None:
            return cached
        match = _TOKEN.match(presented)
        if match is None:
            raise AuthenticationFailed("invalid API token")
        token_id, secret = match.groups()
        digest = _sha256(secret)
        now = time.monotonic()
        with self.db.session() as session:
            row = session.get(ApiTokenRow, token_id)
            token = _token(row) if row is not None else None
            stored = row.secret_hash if row is not None else "0" * 64
        if token is None or not hmac.compare_digest(stored, digest) or token.revoked:
            raise AuthenticationFailed("invalid API token")
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[digest] = (now, token)
        return token

    def revoke_token(self, token_id: str) -> ApiToken:
        """Revoke a token now. Raises :class:`UnknownAccount` for an unknown id."""
        with self.db.session() as session:
            row = session.get(ApiTokenRow, token_id)
            if row is None:
                raise UnknownAccount(f"unknown token {token_id!r}")
            if row.revoked is None:
                row.revoked = datetime.now(UTC)
            token = _token(row)
        with self._lock:
            self._tokens.clear()
        return token

    def tokens(self) -> list[ApiToken]:
        with self.db.session() as session:
            return [_token(r) for r in session.scalars(select(ApiTokenRow))]
