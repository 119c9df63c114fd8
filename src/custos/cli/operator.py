"""Who runs a command that acts for a person: the one place the command line decides it.

With ``[service] operator_auth = true`` in config.toml, the person's API token must be in
``$CUSTOS_TOKEN``; it is checked as the API checks a bearer token, and the operator is its
account and principal: ``--by`` may be left out, and a ``--by`` naming anyone else is
refused. Without it (the embedded default) ``--by`` is taken at its word, but the operator is
recorded as the host's login name plus that claim, marked unauthenticated.

Role rules are those of the API (:mod:`custos.accounts.operator`): only approvers and the
privacy office answer requests and review break-glass, never an admin; triage is for
investigators and the privacy office; accounts and tokens are the admin's.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from custos.access import Custos
    from custos.accounts import Operator
from custos.errors import Forbidden, InvalidInput

TOKEN_ENV = "CUSTOS_TOKEN"  # noqa: S105 - a variable name, not a secret


def operator_auth(system: Custos) -> bool:
    """Whether this installation asks commands for credentials (``[service]
    operator_auth``). Raises :class:`ConfigurationError` for a value that is not a boolean."""
    return system.settings.flag("service", "operator_auth", False)


def login_name() -> str:
    """The host's login name (who ran the command, as far as the host knows)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def operator(system: Custos, by: str | None = None) -> Operator:
    """Who runs this command, for ``by`` (the ``--by`` given, if any).

    With operator_auth: the token in ``$CUSTOS_TOKEN``'s account and principal; raises
    :class:`AuthenticationFailed` without a live token and :class:`Forbidden` when ``by``
    names someone else. Without: the login name and ``by``, unauthenticated.

    This is also what ``custos org load`` calls to name who loaded a directory.
    """
    from custos.accounts import Operator, acting_principal, operator_from_token

    if not operator_auth(system):
        return Operator.claimed(login_name(), by)
    found = operator_from_token(system.accounts, os.environ.get(TOKEN_ENV))
    if by is not None:
        acting_principal(found.principal, by)
    return found


def asking(system: Custos, principal: str) -> str:
    """The principal a request for data is made as (``check``, ``read``, ``approvals
    request`` and ``break-glass``): with operator_auth, only the token's own, and only a
    tool's token, as over the API; without, ``--principal`` as given. Raises
    :class:`AuthenticationFailed` and :class:`Forbidden` (another principal, not a tool)."""
    from custos.accounts import acting_principal, need_roles, operator_from_token

    if not operator_auth(system):
        return principal
    found = operator_from_token(system.accounts, os.environ.get(TOKEN_ENV))
    need_roles(found.roles, "tool")
    return acting_principal(found.principal, principal)


def _claimed_principal(system: Custos, by: str | None, what: str) -> str:
    """The principal an unauthenticated operator says they are; it must be given, and it
    may not be an admin's (separation of duties holds on every path, signed in or not)."""
    if not by:
        raise InvalidInput(f"{what}: say who you are with --by emp-…")
    admins = system.accounts.admins_linked_to(by)
    if admins:
        raise Forbidden(f"{by} has an admin account, so may not {what} (separation of duties)")
    return by


def answering(
    system: Custos, by: str | None, what: str = "answer requests"
) -> tuple[Operator, str]:
    """The operator answering a request or reviewing break-glass, and the principal they
    act as. Raises :class:`AuthenticationFailed`, :class:`Forbidden` (not an approver or
    privacy officer, an admin, or ``by`` someone else) and :class:`InvalidInput`."""
    from custos.accounts import approver_principal, need_roles

    found = operator(system, by)
    if not found.authenticated:
        return found, _claimed_principal(system, by, what)
    need_roles(found.roles, "approver", "privacy_officer")
    return found, approver_principal(found.roles, found.principal)


def revoking(system: Custos, by: str | None) -> tuple[Operator, str]:
    """The operator revoking a grant or withdrawing a request, and the principal they act
    as: a tool only as its own principal, else an approver or the privacy office, never an
    admin. Raises as :func:`answering`."""
    from custos.accounts import acting_principal, approver_principal, need_roles

    found = operator(system, by)
    if not found.authenticated:
        return found, _claimed_principal(system, by, "revoke")
    need_roles(found.roles, "tool", "approver", "privacy_officer")
    if found.has("tool"):
        return found, acting_principal(found.principal, None)
    return found, approver_principal(found.roles, found.principal)


def triaging(
    system: Custos, by: str | None, *, needs_principal: bool
) -> tuple[Operator, str | None]:
    """The operator triaging a case, and the principal rule own-case judges (None only
    for an unauthenticated host operator who named nobody). ``needs_principal`` for assign
    and close: the rule must know who acts. Raises :class:`AuthenticationFailed` and
    :class:`Forbidden`."""
    from custos.accounts import need_roles, triager_principal

    found = operator(system, by)
    if not found.authenticated:
        return found, by
    need_roles(found.roles, "investigator", "privacy_officer")
    if needs_principal:
        return found, triager_principal(found.principal)
    return found, found.principal


def author(found: Operator) -> str:
    """The name a comment or closing note is signed with: the account, else the token, else
    what the host operator claimed (``--by``) or their login name."""
    if found.authenticated:
        return found.account or f"token {found.token}"
    return found.principal or found.account or "unknown"


def administering(system: Custos, *, bootstrap: bool = False) -> Operator:
    """The operator managing accounts and tokens: an admin with operator_auth.

    ``bootstrap``: while no enabled account holds admin, nobody could present an admin's
    token, so the first admin account is made on the host (recorded unauthenticated).
    Raises :class:`AuthenticationFailed` and :class:`Forbidden`.
    """
    from custos.accounts import Operator, need_roles

    first = bootstrap and not os.environ.get(TOKEN_ENV)
    if first and operator_auth(system) and not system.accounts.has_admin():
        return Operator.claimed(login_name(), None)
    found = operator(system)
    if found.authenticated:
        need_roles(found.roles, "admin")
    return found


__all__ = [
    "TOKEN_ENV",
    "administering",
    "answering",
    "author",
    "login_name",
    "operator",
    "operator_auth",
    "revoking",
    "triaging",
]
