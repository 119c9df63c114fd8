"""Accounts of the service: people (argon2 passwords, roles), tools (API tokens scoped to a
principal) and browser sessions.

Roles on the admin plane, with separation of duties enforced when accounts are made and again
when they act: an ``admin`` manages accounts and tokens but can never approve; approvers and
privacy officers act as a directory principal so that the independence rules apply to them.
"""

from custos.accounts.operator import (
    Operator,
    acting_principal,
    approver_principal,
    need_roles,
    operator_from_token,
    triager_principal,
)
from custos.accounts.store import (
    ADMIN_PLANE_ROLES,
    TOKEN_ROLES,
    Account,
    Accounts,
    ApiToken,
    SignedIn,
    same_secret,
)

__all__ = [
    "ADMIN_PLANE_ROLES",
    "TOKEN_ROLES",
    "Account",
    "Accounts",
    "ApiToken",
    "Operator",
    "SignedIn",
    "acting_principal",
    "approver_principal",
    "need_roles",
    "operator_from_token",
    "same_secret",
    "triager_principal",
]
