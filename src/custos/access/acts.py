"""What people do to accounts, tokens and cases, each logged before it counts.

Accounts and tokens decide who may act for whom; triage decides which alerts are silenced.
Both are authority, and authority is evidence (DESIGN.md, principle 10): each change here is
checked first (so that a refusal is never logged as done), then appended to the ledger
naming its ``operator``, and only then made. If the append fails nothing changes
(:class:`LedgerUnavailable` / :class:`StoreUnavailable` reach the caller). The one gap is
the other way round: a change that fails after its entry (a name taken at that very moment)
leaves an entry announcing what did not happen — never a change the ledger does not name.

Entries are built as the ledger vocabulary's classes (``custos.ledger.entries``); free
text a person typed (comments) is kept as its SHA-256 only: the ledger keeps everything for
good, and a comment may quote personal data.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from custos.access.system import Custos
from custos.accounts import Account, ApiToken, Operator
from custos.detect import Case
from custos.detect.cases import DISPOSITIONS
from custos.errors import InvalidInput
from custos.ledger.entries import (
    AccountAddedEntry,
    AccountDisabledEntry,
    CaseAssignedEntry,
    CaseClosedEntry,
    CaseCommentEntry,
    Entry,
    TokenCreatedEntry,
    TokenRevokedEntry,
)
from custos.times import iso


def _log(system: Custos, entry: Entry) -> None:
    system.ledger.append(entry.to_json())


def _now() -> str:
    return iso(datetime.now(UTC))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- accounts and tokens ---------------------------------------------------------------


def add_account(
    system: Custos,
    operator: Operator,
    username: str,
    password: str | None,
    roles: list[str],
    principal: str | None = None,
    *,
    oidc_subject: str | None = None,
) -> Account:
    """Create an account (see :meth:`Accounts.add`) after logging ``account_added``.

    Raises what :meth:`Accounts.add` raises (nothing logged), ``UnknownPrincipal`` for a
    principal not in the directory, and the ledger's errors (nothing created).
    """
    if principal is not None:
        system.directory.principal(principal)  # must exist
    system.accounts.check_new_account(
        username, password, roles, principal, oidc_subject=oidc_subject
    )
    _log(
        system,
        AccountAddedEntry(
            time=_now(),
            account=username,
            roles=tuple(sorted(set(roles))),
            principal=principal,
            # Whether an OpenID identity may sign in as it; the identity stays off the log.
            oidc=oidc_subject is not None,
            password=password is not None,
            operator=operator.entry(),
        ),
    )
    return system.accounts.add(
        username, password, roles, principal, oidc_subject=oidc_subject, by=operator.entry()
    )


def disable_account(system: Custos, operator: Operator, username: str) -> Account:
    """Disable an account (its sessions and tokens stop) after logging
    ``account_disabled``. Raises ``UnknownAccount`` (nothing logged) and the ledger's errors
    (nothing changed)."""
    account = system.accounts.get(username)
    _log(
        system,
        AccountDisabledEntry(
            time=_now(),
            account=username,
            roles=tuple(account.roles),
            principal=account.principal,
            operator=operator.entry(),
        ),
    )
    return system.accounts.disable(username, by=operator.entry())


def create_token(
    system: Custos,
    operator: Operator,
    name: str,
    roles: list[str],
    principal: str | None = None,
    *,
    account: str | None = None,
    on_behalf: bool = False,
) -> tuple[ApiToken, str]:
    """Create a token (see :meth:`Accounts.create_token`) after logging ``token_created``
    (its id, name, roles, principal or account; never its secret). Returns the token and
    its secret. Raises as :meth:`Accounts.create_token` (nothing logged) and the ledger's
    errors (no token)."""
    if principal is not None:
        system.directory.principal(principal)  # must exist
    system.accounts.check_new_token(name, roles, principal, account=account, on_behalf=on_behalf)
    # The id is chosen here so that the entry names the token it vouches for.
    token, secret = system.accounts.prepare_token(
        name, roles, principal, account=account, on_behalf=on_behalf
    )
    _log(
        system,
        TokenCreatedEntry(
            time=_now(),
            token=token.id,
            name=token.name,
            roles=() if account else tuple(sorted(set(roles))),
            principal=None if account else principal,
            account=account,
            operator=operator.entry(),
            on_behalf=on_behalf,
        ),
    )
    system.accounts.store_token(token, secret, by=operator.entry())
    return token, secret


def revoke_token(system: Custos, operator: Operator, token_id: str) -> ApiToken:
    """Revoke a token after logging ``token_revoked`` (a token already revoked is returned
    as it is, with nothing logged). Raises ``UnknownAccount`` for an unknown id (nothing
    logged) and the ledger's errors (the token still works)."""
    token = system.accounts.token(token_id)
    if token.revoked is not None:
        return token
    _log(
        system,
        TokenRevokedEntry(
            time=_now(),
            token=token.id,
            name=token.name,
            account=token.account,
            operator=operator.entry(),
        ),
    )
    return system.accounts.revoke_token(token_id, by=operator.entry())


# -- triage ----------------------------------------------------------------------------


def assign_case(
    system: Custos,
    operator: Operator,
    case_id: str,
    assignee: str,
    *,
    acting_as: str | None,
) -> Case:
    """Assign a case after logging ``case_assigned``. Raises as :meth:`Casebook.assign`
    (rule ``own-case`` for ``acting_as``; nothing logged) and the ledger's errors."""
    if not assignee.strip():
        raise InvalidInput("the assignee must not be empty")
    case = system.casebook.check_triage(case_id, "assign", acting_as=acting_as)
    _log(
        system,
        CaseAssignedEntry(
            time=_now(),
            case=case.id,
            about=case.principal,
            assignee=assignee.strip(),
            operator=operator.entry(),
        ),
    )
    return system.casebook.assign(case_id, assignee, acting_as=acting_as)


def comment_case(system: Custos, operator: Operator, case_id: str, author: str, text: str) -> Case:
    """Comment on a case after logging ``case_comment`` (the text's SHA-256, not the text).
    Raises as :meth:`Casebook.comment` (nothing logged) and the ledger's errors."""
    if not text.strip():
        raise InvalidInput("a comment must not be empty")
    case = system.casebook.check_triage(case_id, "comment")
    _log(
        system,
        CaseCommentEntry(
            time=_now(),
            case=case.id,
            about=case.principal,
            author=author[:128],
            text_sha256=_digest(text.strip()),
            operator=operator.entry(),
        ),
    )
    return system.casebook.comment(case_id, author, text)


def close_case(
    system: Custos,
    operator: Operator,
    case_id: str,
    disposition: str,
    *,
    author: str,
    acting_as: str | None,
    comment: str | None = None,
    suppress_days: int | None = None,
) -> Case:
    """Close a case after logging ``case_closed`` (its disposition and the days its
    patterns are suppressed: closing is what silences alerts). Raises as
    :meth:`Casebook.close` (nothing logged) and the ledger's errors (the case stays open).
    """
    if disposition not in DISPOSITIONS:
        raise InvalidInput(
            f"disposition {disposition!r}: expected one of {', '.join(DISPOSITIONS)}"
        )
    case = system.casebook.check_triage(case_id, "close", acting_as=acting_as)
    days = system.casebook.suppress_days if suppress_days is None else suppress_days
    note = comment.strip() if comment else ""
    _log(
        system,
        CaseClosedEntry(
            time=_now(),
            case=case.id,
            about=case.principal,
            disposition=disposition,
            suppress_days=0 if disposition == "confirmed_misuse" else days,
            author=author[:128],
            comment_sha256=_digest(note) if note else None,
            operator=operator.entry(),
        ),
    )
    return system.casebook.close(
        case_id,
        disposition,
        author=author,
        acting_as=acting_as,
        comment=comment,
        suppress_days=suppress_days,
    )
