"""Who acts, and the role rules every way in applies to them.

The API (a bearer token or a session) and the command line (``$CUSTOS_TOKEN``, or on an
embedded install the host's login name) both end with *someone acting*: an account (or a
tool's token) with roles and, usually, a directory principal. The rules below are the one
statement of what each role may do as whom; ``custos.api.auth`` and ``custos.cli.operator``
both call them, so a rule cannot hold on one path and not the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from custos.accounts.store import Accounts, ApiToken
from custos.errors import AuthenticationFailed, Forbidden


@dataclass(frozen=True)
class Operator:
    """Who runs an action, as its ledger entry names them.

    ``authenticated`` is true when a credential proved it (an API token: ``token`` is its id,
    ``account`` the person it belongs to, None for a tool's token). When false, ``account``
    is the host's login name and ``principal`` what the command was told (``--by``): a claim
    recorded as such, on installations that do not ask for credentials.
    """

    account: str | None
    principal: str | None
    roles: tuple[str, ...]
    authenticated: bool
    token: str | None = None

    def has(self, *roles: str) -> bool:
        return bool(set(roles) & set(self.roles))

    def entry(self) -> dict[str, Any]:
        """The ``operator`` object of a ledger entry (never a secret)."""
        body: dict[str, Any] = {
            "account": self.account,
            "principal": self.principal,
            "authenticated": self.authenticated,
        }
        if self.authenticated:
            body["roles"] = sorted(self.roles)
            if self.token is not None:
                body["token"] = self.token
        return body

    @classmethod
    def of_token(cls, token: ApiToken) -> Operator:
        """The operator a verified token makes: its account (if a person's) and principal."""
        return cls(token.account, token.principal, tuple(token.roles), True, token.id)

    @classmethod
    def claimed(cls, login: str, principal: str | None) -> Operator:
        """An operator nobody authenticated: the host's ``login`` and the claimed principal."""
        return cls(login, principal, (), False)


def operator_from_token(accounts: Accounts, presented: str | None) -> Operator:
    """The operator behind a presented token, checked exactly as the API checks a bearer
    token (:meth:`Accounts.verify_token`). Raises :class:`AuthenticationFailed` when there
    is none or it is not a live token (the same message for every wrong token)."""
    if not presented or not presented.strip():
        raise AuthenticationFailed(
            "this installation asks who you are: put your API token in $CUSTOS_TOKEN",
            hint="a person gets one with `custos users token NAME`",
        )
    return Operator.of_token(accounts.verify_token(presented.strip()))


def need_roles(roles: Iterable[str], *needed: str) -> None:
    """Refuse unless ``roles`` holds one of ``needed``. Raises :class:`Forbidden`."""
    if not set(roles) & set(needed):
        raise Forbidden(f"this needs one of the roles: {', '.join(needed)}")


def acting_principal(principal: str | None, asked: str | None) -> str:
    """The principal a credential acts as: only ever its own.

    Raises :class:`Forbidden` when it asks to act as someone else, or has no principal.
    """
    if principal is None:
        raise Forbidden("these credentials are not linked to a principal")
    if asked is not None and asked != principal:
        raise Forbidden(f"these credentials act as {principal}, not {asked}")
    return principal


def triager_principal(principal: str | None) -> str:
    """The principal someone assigns or closes a case as. It must be known: the own-case
    rule cannot tell whether an unlinked caller is the person a case is about.

    Raises :class:`Forbidden`.
    """
    if principal is None:
        raise Forbidden(
            "these credentials are not linked to a principal, so they cannot assign or close"
            " a case (rule own-case must know who you are)"
        )
    return principal


def approver_principal(roles: Iterable[str], principal: str | None) -> str:
    """The principal an approver acts as; admins never approve (separation of duties).

    Raises :class:`Forbidden`.
    """
    if "admin" in set(roles):
        raise Forbidden("an admin may not answer requests (separation of duties)")
    if principal is None:
        raise Forbidden("this account is not linked to a principal, so it cannot approve")
    return principal
