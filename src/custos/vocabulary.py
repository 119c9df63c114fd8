"""The words custos and its default policy pack share (DESIGN.md, *Formats*).

Kept in one leaf module so that every part, and every validator, agrees on them.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

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
