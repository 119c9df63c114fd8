"""Accounts, tokens and sessions in the custos database."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from custos.authority import Record, Vouch
from custos.errors import (
    AuthenticationFailed,
    AuthorityMismatch,
    Conflict,
    InvalidInput,
    UnknownAccount,
    shown_id,
)
from custos.store import Database
from custos.store.accounts import AccountRow, ApiTokenRow, SessionRow
from custos.times import iso

#: Roles a person can hold on the admin plane.
ADMIN_PLANE_ROLES = ("auditor", "investigator", "approver", "privacy_officer", "admin")
#: Roles a token can hold: ``tool`` acts as its principal on the guarded path;
#: ``provisioner`` feeds the directory (SCIM, ``/v1/subjects``, ``/v1/tickets``) and nothing
#: else; the others read as their admin-plane namesakes (a witness or monitor holds
#: ``auditor``).
TOKEN_ROLES = ("tool", "auditor", "investigator", "provisioner")
#: Token roles that must stand alone: whoever reads personal data must not also oversee the
#: reading, and whoever writes the authority decisions rest on must not also use or oversee it.
_ALONE = ("tool", "provisioner")
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
    """A token. ``account`` is set for a person's token: then ``roles`` and ``principal``
    are that account's (as they were when the token was read)."""

    id: str
    name: str
    principal: str | None
    roles: tuple[str, ...]
    created: datetime
    revoked: datetime | None
    account: str | None = None
    #: A tool's token that may act on behalf of staff members (custos.accounts.onbehalf).
    on_behalf: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "principal": self.principal,
            "roles": list(self.roles),
            "created": self.created.isoformat(),
            "revoked": self.revoked.isoformat() if self.revoked else None,
            "account": self.account,
            "on_behalf": self.on_behalf,
        }


@dataclass(frozen=True)
class SignedIn:
    """A live browser session: who, and the CSRF token their forms must carry."""

    account: Account
    csrf: str
    expires: datetime


def _account(row: AccountRow) -> Account:
    return Account(row.username, tuple(row.roles), row.principal, row.disabled)


def _token(row: ApiTokenRow, owner: AccountRow | None = None) -> ApiToken:
    if owner is not None:
        return ApiToken(
            row.id,
            row.name,
            owner.principal,
            tuple(owner.roles),
            row.created,
            row.revoked,
            owner.username,
        )
    return ApiToken(
        row.id,
        row.name,
        row.principal,
        tuple(row.roles),
        row.created,
        row.revoked,
        row.account,
        bool(row.on_behalf),
    )


def _account_facts(row: AccountRow) -> dict[str, Any]:
    """What of an account decides who may act as what, as ledgered: the password and OpenID
    identity only as SHA-256 of what is stored (a hash of an argon2 hash reveals nothing a
    guess could be checked against without the salt, which stays in the database)."""
    return {
        "id": row.username,
        "roles": list(row.roles),
        "principal": row.principal,
        "disabled": bool(row.disabled),
        "password_sha256": _sha256(row.password_hash),
        "oidc_sha256": _sha256(row.oidc_subject) if row.oidc_subject else None,
    }


def _token_facts(row: ApiTokenRow) -> dict[str, Any]:
    """What of a token decides whom it acts for, as ledgered (its secret only as stored: a
    SHA-256 of 256 random bits). ``on_behalf`` only when true, so that the entries of tokens
    made before it existed still equal their rows."""
    facts: dict[str, Any] = {
        "id": row.id,
        "secret_hash": row.secret_hash,
        "name": row.name,
        "principal": row.principal,
        "roles": list(row.roles),
        "account": row.account,
        "revoked": row.revoked is not None,
    }
    if row.on_behalf:
        facts["on_behalf"] = True
    return facts


def _session_facts(row: SessionRow) -> dict[str, Any]:
    return {"id": row.id_hash, "account": row.username, "expires": iso(row.expires)}


class Accounts:
    """People, tokens and sessions. Thread-safe.

    With ``record``, every account, token and session is ledgered (an ``authority`` entry)
    before its row is written, and the row names that entry; with ``vouch``, a row is
    honoured only while it equals its entry (:class:`AuthorityMismatch` otherwise): a token
    or session inserted with SQL, or an account given roles by hand, never acts.
    """

    def __init__(
        self, db: Database, *, vouch: Vouch | None = None, record: Record | None = None
    ) -> None:
        self.db = db
        self.vouch = vouch
        self.record = record
        self._hasher = PasswordHasher()
        # Verifying an unknown user costs as much as a known one: no username oracle.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, ApiToken]] = {}

    def _ledgered(
        self, kind: str, facts: Mapping[str, Any], why: str, by: Mapping[str, Any] | None
    ) -> int | None:
        """The index of the entry setting ``facts`` (None without ``record``). Raises
        :class:`LedgerUnavailable`: then nothing may be written."""
        if self.record is None:
            return None
        return self.record(kind, [facts], why, by)[0]

    def _check(self, kind: str, key: str, index: int | None, facts: Mapping[str, Any]) -> None:
        if self.vouch is not None:
            self.vouch(kind, key, index, facts)

    def _checked(self, row: AccountRow) -> AccountRow:
        self._check("account", row.username, row.auth_idx, _account_facts(row))
        return row

    # -- people ------------------------------------------------------------------------

    def add(
        self,
        username: str,
        password: str | None,
        roles: list[str],
        principal: str | None = None,
        *,
        oidc_subject: str | None = None,
        by: Mapping[str, Any] | None = None,
    ) -> Account:
        """Create an account (ledgered first, naming ``by``, with ``record``). Raises
        :class:`InvalidInput` (bad name, weak password, unknown role, admin combined with
        approving roles, approving roles without a principal), :class:`Conflict` (name or
        OpenID identity taken) and :class:`LedgerUnavailable` (nothing created).

        ``oidc_subject`` (``issuer|subject``) lets that OpenID Connect identity sign in; an
        account with one may have no password (then only OpenID sign-in works).
        """
        self.check_new_account(username, password, roles, principal, oidc_subject=oidc_subject)
        with self.db.session() as session:
            self._refuse_taken(session, username, oidc_subject)
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
        row.auth_idx = self._ledgered("account", _account_facts(row), "account added", by)
        with self.db.session() as session:
            # Checked again in the writing transaction: taken in between is a Conflict.
            self._refuse_taken(session, username, oidc_subject)
            session.add(row)
            return _account(row)

    @staticmethod
    def _refuse_taken(session: Session, username: str, oidc_subject: str | None) -> None:
        if session.get(AccountRow, username) is not None:
            raise Conflict(f"account {username!r} already exists")
        if oidc_subject is not None and session.scalar(
            select(AccountRow.username).where(AccountRow.oidc_subject == oidc_subject)
        ):
            raise Conflict("that OpenID identity already belongs to an account")

    def check_new_account(
        self,
        username: str,
        password: str | None,
        roles: list[str],
        principal: str | None = None,
        *,
        oidc_subject: str | None = None,
    ) -> None:
        """Raise what :meth:`add` would raise for these values, changing nothing: callers
        that must log an account before it exists check it first, so that the log never
        announces an account that was then refused."""
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

    def get(self, username: str) -> Account:
        """The account ``username``. Raises :class:`UnknownAccount`."""
        with self.db.session() as session:
            row = session.get(AccountRow, username)
            if row is None:
                raise UnknownAccount(f"unknown account {shown_id(username)}")
            return _account(self._checked(row))

    def all(self) -> list[Account]:
        with self.db.session() as session:
            return [_account(r) for r in session.scalars(select(AccountRow))]

    def disable(self, username: str, by: Mapping[str, Any] | None = None) -> Account:
        """Disable an account and end its sessions (ledgered first, with ``record``).
        Raises :class:`UnknownAccount`, :class:`LedgerUnavailable` (nothing changed)."""
        with self.db.session() as session:
            row = session.get(AccountRow, username)
            if row is None:
                raise UnknownAccount(f"unknown account {shown_id(username)}")
            facts = {**_account_facts(row), "disabled": True}
        index = self._ledgered("account", facts, "account disabled", by)
        with self.db.session() as session:
            row = session.get(AccountRow, username)
            if row is None:
                raise UnknownAccount(f"unknown account {shown_id(username)}")
            row.disabled = True
            if index is not None:
                if _account_facts(row) != facts:
                    raise Conflict(f"account {username!r} changed while it was being disabled")
                row.auth_idx = index
            session.execute(delete(SessionRow).where(SessionRow.username == username))
            account = _account(row)
        with self._lock:
            self._tokens.clear()  # their tokens stop here at once
        return account

    def admins_linked_to(self, principal: str) -> list[str]:
        """The enabled admin accounts linked to ``principal``: whoever holds one may not
        approve as that principal by any path, signed in or not (separation of duties)."""
        with self.db.session() as session:
            return sorted(
                row.username
                for row in session.scalars(
                    select(AccountRow)
                    .where(AccountRow.principal == principal)
                    .where(AccountRow.disabled.is_(False))
                )
                if "admin" in row.roles
            )

    def has_admin(self) -> bool:
        """Whether any enabled account holds ``admin`` (until one does, nobody can sign in
        to make accounts, so the first one is made on the host). An admin row the ledger
        does not vouch for counts as one: disabling every admin by hand must not reopen the
        way to make the first one."""
        with self.db.session() as session:
            for row in session.scalars(select(AccountRow)):
                if "admin" not in row.roles:
                    continue
                try:
                    self._checked(row)
                except AuthorityMismatch:
                    return True
                if not row.disabled:
                    return True
        return False

    def authenticate(self, username: str, password: str) -> Account:
        """The account if the password is right. Raises :class:`AuthenticationFailed`,
        with the same message for an unknown name, a wrong password or a disabled account."""
        # A name no account can have is not looked up (PostgreSQL refuses a NUL in it), but
        # costs the same hashing as any other.
        with self.db.session() as session:
            row = session.get(AccountRow, username) if _USERNAME.match(username) else None
            stored = row.password_hash if row is not None else self._dummy
            account = _account(self._checked(row)) if row is not None else None
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
            return _account(self._checked(row))

    # -- sessions ----------------------------------------------------------------------

    def start_session(
        self, account: Account, by: Mapping[str, Any] | None = None
    ) -> tuple[str, SignedIn]:
        """A new session: the cookie value (secret) and what it signs in. Ledgered first
        (with ``record``): a session row inserted by hand never signs anyone in. Raises
        :class:`LedgerUnavailable` (no session)."""
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        signed = SignedIn(account, secrets.token_urlsafe(32), now + SESSION_LIFETIME)
        row = SessionRow(
            id_hash=_sha256(secret),
            username=account.username,
            csrf=signed.csrf,
            created=now,
            expires=signed.expires,
        )
        row.auth_idx = self._ledgered("session", _session_facts(row), "signed in", by)
        with self.db.session() as session:
            session.add(row)
        return secret, signed

    def session(self, secret: str) -> SignedIn | None:
        """The live session behind a cookie value, or None (expired, ended, disabled)."""
        if not secret or len(secret) > 128:
            return None
        with self.db.session() as session:
            row = session.get(SessionRow, _sha256(secret))
            if row is None or row.expires <= datetime.now(UTC):
                return None
            self._check("session", row.id_hash, row.auth_idx, _session_facts(row))
            account = session.get(AccountRow, row.username)
            if account is None or account.disabled:
                return None
            return SignedIn(_account(self._checked(account)), row.csrf, row.expires)

    def end_session(self, secret: str) -> None:
        with self.db.session() as session:
            session.execute(delete(SessionRow).where(SessionRow.id_hash == _sha256(secret)))

    # -- tokens ------------------------------------------------------------------------

    def check_new_token(
        self,
        name: str,
        roles: list[str],
        principal: str | None = None,
        *,
        account: str | None = None,
        on_behalf: bool = False,
    ) -> None:
        """Raise what :meth:`create_token` would raise for these values, changing nothing.

        Raises :class:`InvalidInput` and :class:`UnknownAccount`.
        """
        problems = []
        if account is not None:
            # A person's token is them: their account's roles and principal, nothing else.
            if roles or principal:
                problems.append("a person's token takes its roles and principal from the account")
        else:
            unknown = sorted(set(roles) - set(TOKEN_ROLES))
            if unknown:
                problems.append(f"unknown token role(s) {', '.join(unknown)}")
            if not roles:
                problems.append("at least one role is needed")
            if "tool" in roles and not principal:
                problems.append("a tool token acts as a principal: give --principal")
            for alone in _ALONE:
                if alone in roles and len(set(roles)) > 1:
                    problems.append(f"a {alone} token may hold no other role")
            if "provisioner" in roles and principal:
                # It writes the directory for a system (the IdP, the ticket system), never
                # acts as anyone in it.
                problems.append("a provisioner token acts as no principal: drop --principal")
        if on_behalf and (account is not None or "tool" not in roles):
            problems.append("only a tool's token may act on behalf of others")
        if not name.strip():
            problems.append("a token needs a name")
        if problems:
            raise InvalidInput("cannot create token: " + "; ".join(problems))
        if account is not None and self.get(account).disabled:
            raise InvalidInput(f"cannot create token: account {account!r} is disabled")

    def create_token(
        self,
        name: str,
        roles: list[str],
        principal: str | None = None,
        *,
        account: str | None = None,
        on_behalf: bool = False,
        by: Mapping[str, Any] | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token; returns it and its secret string (shown once, stored hashed).

        With ``account`` it is that person's token (no roles or principal of its own); with
        ``on_behalf`` a tool's token that may act for staff members who prove it.
        Raises :class:`InvalidInput`: unknown roles, ``tool`` without a principal or with
        another role, a person's token given roles; :class:`UnknownAccount`.
        """
        token, secret = self.prepare_token(
            name, roles, principal, account=account, on_behalf=on_behalf
        )
        return self.store_token(token, secret, by=by), secret

    def prepare_token(
        self,
        name: str,
        roles: list[str],
        principal: str | None = None,
        *,
        account: str | None = None,
        on_behalf: bool = False,
    ) -> tuple[ApiToken, str]:
        """A new token and its secret string, not yet stored (so that it can be logged
        first): :meth:`store_token` makes it work. Raises as :meth:`create_token`."""
        self.check_new_token(name, roles, principal, account=account, on_behalf=on_behalf)
        owner = self.get(account) if account is not None else None
        token = ApiToken(
            id=secrets.token_hex(8),
            name=name.strip(),
            principal=owner.principal if owner else principal,
            roles=owner.roles if owner else tuple(sorted(set(roles))),
            created=datetime.now(UTC),
            revoked=None,
            account=account,
            on_behalf=on_behalf,
        )
        return token, f"cst_{token.id}_{secrets.token_urlsafe(32)}"

    def store_token(
        self, token: ApiToken, secret: str, by: Mapping[str, Any] | None = None
    ) -> ApiToken:
        """Store a token made by :meth:`prepare_token` (its secret only as a SHA-256),
        ledgered first with ``record``; returns it. Raises :class:`InvalidInput` for a secret
        not of this token, :class:`LedgerUnavailable` (no token)."""
        match = _TOKEN.match(secret)
        if match is None or match.group(1) != token.id:
            raise InvalidInput("that secret does not belong to this token")
        row = ApiTokenRow(
            id=token.id,
            secret_hash=_sha256(match.group(2)),
            name=token.name,
            # A person's token holds nothing of its own: it is their account.
            principal=None if token.account else token.principal,
            roles=[] if token.account else list(token.roles),
            created=token.created,
            revoked=None,
            account=token.account,
            on_behalf=token.on_behalf,
        )
        row.auth_idx = self._ledgered("token", _token_facts(row), "token created", by)
        with self.db.session() as session:
            session.add(row)
        return token

    def token(self, token_id: str) -> ApiToken:
        """The token ``token_id`` (revoked or not). Raises :class:`UnknownAccount`."""
        with self.db.session() as session:
            row = session.get(ApiTokenRow, token_id) if len(token_id) <= 32 else None
            if row is None:
                raise UnknownAccount(f"unknown token {shown_id(token_id)}")
            self._check("token", row.id, row.auth_idx, _token_facts(row))
            owner = session.get(AccountRow, row.account) if row.account else None
            return _token(row, self._checked(owner) if owner is not None else None)

    def live_token(self, token_id: str) -> ApiToken:
        """The live tool token ``token_id`` (by id, for a credential derived from it such as
        an exchanged on-behalf-of token), cached like :meth:`verify_token`: a revocation
        elsewhere takes effect within two seconds, here at once. Raises
        :class:`AuthenticationFailed` for an unknown or revoked token and
        :class:`AuthorityMismatch` for a row the ledger does not vouch for."""
        key = f"id:{token_id}"
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and time.monotonic() - cached[0] < _TOKEN_CACHE_SECONDS:
            return cached[1]
        now = time.monotonic()
        try:
            token = self.token(token_id)
        except UnknownAccount:
            raise AuthenticationFailed("invalid API token") from None
        if token.revoked is not None or token.account is not None:
            raise AuthenticationFailed("the tool token this was exchanged with is revoked")
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (now, token)
        return token

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
            owner = session.get(AccountRow, row.account) if row and row.account else None
            if row is not None:
                # Honoured only as the ledger set it: a row inserted or re-pointed by hand
                # (another secret, principal or roles) never acts (AuthorityMismatch).
                self._check("token", row.id, row.auth_idx, _token_facts(row))
                if owner is not None:
                    self._checked(owner)
            token = _token(row, owner) if row is not None else None
            stored = row.secret_hash if row is not None else "0" * 64
            # A person's token lives only as long as their enabled account.
            orphaned = (
                row is not None and row.account is not None and (owner is None or owner.disabled)
            )
        if token is None or not hmac.compare_digest(stored, digest) or token.revoked or orphaned:
            raise AuthenticationFailed("invalid API token")
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[digest] = (now, token)
        return token

    def revoke_token(self, token_id: str, by: Mapping[str, Any] | None = None) -> ApiToken:
        """Revoke a token now (ledgered first, with ``record``). Raises
        :class:`UnknownAccount` for an unknown id, :class:`LedgerUnavailable` (it still
        works)."""
        with self.db.session() as session:
            row = session.get(ApiTokenRow, token_id)
            if row is None:
                raise UnknownAccount(f"unknown token {shown_id(token_id)}")
            already = row.revoked is not None
            facts = {**_token_facts(row), "revoked": True}
        index = None if already else self._ledgered("token", facts, "token revoked", by)
        with self.db.session() as session:
            row = session.get(ApiTokenRow, token_id)
            if row is None:
                raise UnknownAccount(f"unknown token {shown_id(token_id)}")
            if row.revoked is None:
                row.revoked = datetime.now(UTC)
                if index is not None:
                    row.auth_idx = index
            token = _token(row, session.get(AccountRow, row.account) if row.account else None)
        with self._lock:
            self._tokens.clear()
        return token

    def rows(self) -> dict[str, list[tuple[str, int | None, dict[str, Any], bool]]]:
        """Every account and token as stored, unchecked, for ``custos log verify``: per kind,
        ``(id, auth_idx, facts, False)``."""
        with self.db.session() as session:
            return {
                "account": [
                    (r.username, r.auth_idx, _account_facts(r), False)
                    for r in session.scalars(select(AccountRow))
                ],
                "token": [
                    (r.id, r.auth_idx, _token_facts(r), False)
                    for r in session.scalars(select(ApiTokenRow))
                ],
            }

    def tokens(self) -> list[ApiToken]:
        with self.db.session() as session:
            owners = {a.username: a for a in session.scalars(select(AccountRow))}
            return [
                _token(r, owners.get(r.account) if r.account else None)
                for r in session.scalars(select(ApiTokenRow))
            ]
