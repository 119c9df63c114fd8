"""The words custos and its policy packs share (DESIGN.md, *Formats*).

Purposes (which are also ticket kinds), data categories, protected flags and roles are a
pack's own: a pack declares them in its ``vocabulary.yaml`` and :class:`Vocabulary` carries
them to every validator. The constants below are the words of the pack shipped with custos
(:data:`DEFAULT_VOCABULARY`), for code that needs exactly those (the simulator, defaults);
anything that checks input against the active pack asks that pack's vocabulary instead.
Kept in one leaf module so that every part, and every validator, agrees on them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
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

#: The kinds of word a pack declares, as messages name them, by their key in vocabulary.yaml.
PACK_WORDS: Final[dict[str, str]] = {
    "purposes": "purpose",
    "categories": "category",
    "protected_flags": "protected flag",
    "roles": "role",
}


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The words one policy pack knows, each list in its declared order.

    A request, directory entry, ticket or access event using a word outside these is refused
    with :meth:`unknown` naming every valid one.
    """

    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    protected_flags: tuple[str, ...]
    roles: tuple[str, ...]

    @property
    def ticket_kinds(self) -> tuple[str, ...]:
        """Ticket kinds are purposes: a ticket of kind K explains an access for purpose K."""
        return self.purposes

    def words(self, kind: str) -> tuple[str, ...]:
        """The valid words of ``kind`` (a message name: ``category``, ``purpose``,
        ``protected flag``, ``role``, ``action``, ``precision``). Raises ``KeyError``."""
        match kind:
            case "purpose" | "ticket kind":
                return self.purposes
            case "category":
                return self.categories
            case "protected flag":
                return self.protected_flags
            case "role":
                return self.roles
        return _FIXED[kind]

    def knows(self, kind: str, value: object) -> bool:
        """Whether ``value`` is a valid word of ``kind``."""
        return isinstance(value, str) and value in self.words(kind)

    def unknown(self, kind: str, value: object) -> str:
        """A message for ``value`` that is not a known ``kind``: the nearest known word, if
        one is close, and every valid one. The value is quoted only if it cannot be personal
        data (:func:`custos.errors.shown_id`). Raises ``KeyError`` for an unknown ``kind``."""
        known = self.words(kind)
        text = value if isinstance(value, str) else repr(value)
        near = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
        guess = f"did you mean {near[0]!r}? " if near else ""
        return f"unknown {kind} {shown_id(text)} ({guess}valid: {', '.join(known)})"

    def problems(self, checks: Iterable[tuple[str, object]]) -> list[str]:
        """A message per ``(kind, value)`` whose value is not a known word of its kind."""
        return [self.unknown(kind, value) for kind, value in checks if not self.knows(kind, value)]

    def to_dict(self) -> dict[str, list[str]]:
        return {key: list(self.words(kind)) for key, kind in PACK_WORDS.items()}


#: Words no pack changes: what custos itself does with data.
_FIXED: Final[dict[str, tuple[str, ...]]] = {
    "action": get_args(Action),
    "precision": get_args(Precision),
}

#: The words of the pack shipped with custos (its vocabulary.yaml declares the same; a test
#: keeps them equal), and of a pack that declares none.
DEFAULT_VOCABULARY: Final = Vocabulary(
    purposes=get_args(Purpose),
    categories=get_args(Category),
    protected_flags=get_args(ProtectedFlag),
    roles=tuple(sorted(KNOWN_ROLES)),
)


def unknown_word(kind: str, value: object, vocabulary: Vocabulary | None = None) -> str:
    """A message for ``value`` that is not a known ``kind`` (``category``, ``purpose``,
    ``action``, ``precision``, ``protected flag``, ``role``) of ``vocabulary`` (default: the
    shipped pack's; see :meth:`Vocabulary.unknown`). Raises ``KeyError`` for an unknown
    ``kind``."""
    return (vocabulary or DEFAULT_VOCABULARY).unknown(kind, value)
