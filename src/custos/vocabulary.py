"""The words custos and its default policy pack share (DESIGN.md, *Formats*).

Kept in one leaf module so that every part, and every validator, agrees on them.
"""

from __future__ import annotations

import difflib
from typing import Final, Literal, get_args

from custos.errors import shown_id

PrincipalKind = Literal["employee", "contractor", "service"]
PrincipalStatus = Literal["active", "leaving", "terminated"]
Purpose = Literal[
    "support",
    "trust_safety",
    "fraud",
    "security_incident",
    "legal_process",
    "product_debug",
    "internal_investigation",
]
Category = Literal[
    "profile",
    "contact",
    "ip_history",
    "location",
    "device",
    "messages",
    "content",
    "social_graph",
    "payment",
    "credentials",
]
ProtectedFlag = Literal["journalist", "public_official", "activist", "minor", "employee_account"]
Action = Literal["read", "search", "export", "modify"]
Outcome = Literal["allow", "deny", "approval_required"]
Precision = Literal["coarse", "precise"]
TicketStatus = Literal["open", "pending", "closed"]

PRINCIPAL_KINDS: Final = frozenset(get_args(PrincipalKind))
PRINCIPAL_STATUSES: Final = frozenset(get_args(PrincipalStatus))
PURPOSES: Final = frozenset(get_args(Purpose))
CATEGORIES: Final = frozenset(get_args(Category))
PROTECTED_FLAGS: Final = frozenset(get_args(ProtectedFlag))
ACTIONS: Final = frozenset(get_args(Action))
OUTCOMES: Final = frozenset(get_args(Outcome))
PRECISIONS: Final = frozenset(get_args(Precision))
TICKET_STATUSES: Final = frozenset(get_args(TicketStatus))
#: Ticket kinds are purposes: a ticket of kind K explains an access for purpose K.
TICKET_KINDS: Final = PURPOSES
#: Who may open a ticket, besides a principal id.
TICKET_OPENERS: Final = frozenset({"subject", "system", "legal"})
#: Roles the default policy pack knows; any other role gets nothing by default.
KNOWN_ROLES: Final = frozenset(
    {
        "support_agent",
        "trust_safety_investigator",
        "fraud_analyst",
        "security_responder",
        "legal_counsel",
        "privacy_officer",
        "engineer",
        "data_scientist",
        "internal_audit",
    }
)

#: Each word list in its documented order, by the name a message gives it.
_ORDERED: Final[dict[str, tuple[str, ...]]] = {
    "category": get_args(Category),
    "purpose": get_args(Purpose),
    "action": get_args(Action),
    "precision": get_args(Precision),
    "protected flag": get_args(ProtectedFlag),
    "role": tuple(sorted(KNOWN_ROLES)),
}


def unknown_word(kind: str, value: object) -> str:
    """A message for ``value`` that is not a known ``kind`` (``category``, ``purpose``,
    ``action``, ``precision``, ``protected flag``, ``role``): the nearest known word, if one
    is close, and every valid one. The value is quoted only if it cannot be personal data
    (:func:`custos.errors.shown_id`). Raises ``KeyError`` for an unknown ``kind``."""
    known = _ORDERED[kind]
    text = value if isinstance(value, str) else repr(value)
    near = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
    guess = f"did you mean {near[0]!r}? " if near else ""
    return f"unknown {kind} {shown_id(text)} ({guess}valid: {', '.join(known)})"
