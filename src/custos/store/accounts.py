"""Tables of accounts: people who sign in, tools' API tokens, and sign-in sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, String, false
from sqlalchemy.orm import Mapped, mapped_column

from custos.store.base import Base, UTCDateTime


class AccountRow(Base):
    """A person who signs in to the dashboard, with their roles on the admin plane.

    ``principal`` links the account to the directory, so that what they approve is checked
    against the independence rules as that principal.
    """

    __tablename__ = "accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    roles: Mapped[list[str]] = mapped_column(JSON)
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``issuer|subject`` of the OpenID Connect identity that may sign in as this account.
    oidc_subject: Mapped[str | None] = mapped_column(String(512), nullable=True, unique=True)
    #: The ledger index of the authority entry that set this account (custos.authority).
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ApiTokenRow(Base):
    """An API token: only a SHA-256 of its secret is kept; shown once at creation.

    A tool's token holds its own ``roles`` and ``principal``; a person's token names their
    ``account`` instead and acts with that account's roles and principal as they are when it
    is presented (a disabled account's tokens stop working).
    """

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    account: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: The ledger index of the authority entry that set this token (custos.authority).
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: A tool's token that may act on behalf of staff members who prove it with their own
    #: assertion (custos.accounts.onbehalf).
    on_behalf: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SessionRow(Base):
    """A signed-in browser session; the cookie holds a secret whose SHA-256 is the key."""

    __tablename__ = "sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The ledger index of the authority entry that started this session (custos.authority).
    auth_idx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
