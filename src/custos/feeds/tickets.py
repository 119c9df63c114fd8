"""Ticket webhooks: the payloads of a generic sender, Jira and ServiceNow as ticket changes,
and the HMAC signature that proves a payload came from who holds the secret.

Signature (every kind): the sender puts the Unix time in ``X-Custos-Timestamp`` and
``sha256=<hex>`` in ``X-Custos-Signature``, the HMAC-SHA256, keyed by the shared secret, of
``<timestamp>.`` followed by the raw body. A payload is taken only when the signature matches
(compared in constant time) and the timestamp is within the replay window of now; a payload
seen before (same signature) within the window is refused, so that a captured "opened" cannot
be replayed after the "closed" that followed it (:class:`Deliveries`; the service's are in
its database, shared by its workers).

Payload shapes:

- ``generic``: ``{"event": "upsert" | "delete", "ticket": {...}}``, the ticket as in a
  directory file (``delete`` needs only its ``id``);
- ``jira``: ``webhookEvent`` ``jira:issue_created`` / ``jira:issue_updated`` /
  ``jira:issue_deleted`` (with or without the ``jira:`` prefix), ``issue.key`` the ticket id,
  ``issue.fields.assignee.<assignee_field>`` the assignee, ``issue.fields.<subject_field>`` the
  subject, ``issue.fields.status.statusCategory.key == "done"`` closed, ``created`` /
  ``resolutiondate`` the times;
- ``servicenow``: ``number`` the ticket id (``sys_id`` kept), ``assigned_to`` (a string, or
  ``{"value": …}``) the assignee, ``state`` (closed when in ``closed_states``),
  ``<subject_field>`` the subject, ``opened_at`` / ``closed_at``, ``operation`` ``delete`` or
  ``action`` ``deleted`` for a deletion.

The ticket's kind (its purpose) is ``<kind_field>`` of the payload when configured, else the
configured ``kind``. The configuration is ``[hooks.jira]`` and ``[hooks.servicenow]``.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from custos.directory import Ticket
from custos.directory.files import parse_document
from custos.errors import InvalidPayload, SignatureRefused, ValidationFailed
from custos.vocabulary import DEFAULT_VOCABULARY, Vocabulary

KINDS = ("generic", "jira", "servicenow")
SIGNATURE_HEADER = "X-Custos-Signature"
TIMESTAMP_HEADER = "X-Custos-Timestamp"
DEFAULT_WINDOW = 300
#: ServiceNow incident states that mean the work is over: resolved, closed, cancelled.
DEFAULT_CLOSED_STATES = ("6", "7", "8")


@dataclass(frozen=True)
class TicketChange:
    """What a payload asks: ``upsert`` the ``ticket``, or ``delete`` ticket ``ticket_id``."""

    action: str
    ticket_id: str
    ticket: Ticket | None = None


@dataclass(frozen=True)
class HookMapping:
    """How one sender's fields become a ticket (``[hooks.jira]``, ``[hooks.servicenow]``)."""

    kind: str | None = None
    kind_field: str | None = None
    subject_field: str | None = None
    assignee_field: str = "name"
    closed_states: tuple[str, ...] = DEFAULT_CLOSED_STATES

    @classmethod
    def from_section(cls, section: Mapping[str, Any], name: str) -> HookMapping:
        """Read ``[hooks.<name>]``. Raises :class:`ValueError` naming the key at fault."""
        values: dict[str, Any] = {}
        for key in ("kind", "kind_field", "subject_field", "assignee_field"):
            if key in section:
                if not isinstance(section[key], str) or not section[key]:
                    raise ValueError(f"[hooks.{name}] {key} must be a non-empty string")
                values[key] = section[key]
        if "closed_states" in section:
            states = section["closed_states"]
            if not isinstance(states, list) or not states:
                raise ValueError(f"[hooks.{name}] closed_states must be a list of states")
            values["closed_states"] = tuple(str(s) for s in states)
        return cls(**values)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Custos-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Deliveries(Protocol):
    """Remembers the payloads taken within the replay window (by signature).

    - ``take(signature, now, window)`` returns False when ``signature`` was taken after
      ``now - window`` (a replay); else remembers it as taken at ``now`` and returns True.
      It may forget what was taken before ``now - window``.
    - ``forget(signature)`` forgets a taken signature (its change failed and was not made).
    """

    def take(self, signature: str, now: float, window: int) -> bool: ...

    def forget(self, signature: str) -> None: ...


@dataclass
class MemoryDeliveries:
    """:class:`Deliveries` in this process's memory (one worker; tests)."""

    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, signature: str, now: float, window: int) -> bool:
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - window:
                self._seen.popitem(last=False)
            if signature in self._seen:
                return False
            self._seen[signature] = now
            return True

    def forget(self, signature: str) -> None:
        with self._lock:
            self._seen.pop(signature, None)


@dataclass
class SignatureCheck:
    """Checks signatures and timestamps, and refuses a payload taken before within the
    window (``deliveries``: in memory unless given one the workers share)."""

    secret: bytes
    window: int = DEFAULT_WINDOW
    deliveries: Deliveries = field(default_factory=MemoryDeliveries)

    def check(
        self, signature: str | None, timestamp: str | None, body: bytes, now: float | None = None
    ) -> None:
        """Return when ``signature`` signs ``body`` at ``timestamp``, within the window, and
        was not taken before (it is taken now). Raises :class:`SignatureRefused` saying which
        (never the expected value), and :class:`StoreUnavailable` from ``deliveries``."""
        moment = time.time() if now is None else now
        if not signature or not timestamp:
            raise SignatureRefused(
                f"send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (HMAC-SHA256 of "
                "'<timestamp>.<body>')"
            )
        try:
            sent = int(timestamp)
        except ValueError:
            raise SignatureRefused(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
        if abs(moment - sent) > self.window:
            raise SignatureRefused(
                f"{TIMESTAMP_HEADER} is outside the replay window of {self.window} s"
            )
        expected = sign(self.secret, timestamp, body)
        if not hmac.compare_digest(signature.strip().encode(), expected.encode()):
            raise SignatureRefused("the signature does not match the body")
        if not self.deliveries.take(expected, moment, self.window):
            raise SignatureRefused("this payload was taken already (a replay)")

    def forget(self, signature: str) -> None:
        """Forget a signature :meth:`check` took, so that the same payload is taken when
        sent again (its change failed and was not made)."""
        self.deliveries.forget(signature.strip())


def _get(data: Any, path: str) -> Any:
    """``data``'s value at the dotted ``path`` (None when any step is missing)."""
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("value")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


def _ticket(raw: Mapping[str, Any], where: str, words: Vocabulary) -> Ticket:
    try:
        document = parse_document({"tickets": [dict(raw)]}, where, words)
    except ValidationFailed as exc:
        problems = [p.removeprefix(f"{where}: tickets[0] ") for p in exc.problems]
        raise InvalidPayload(
            f"{where}: the ticket is invalid; nothing was changed", problems
        ) from None
    return document.tickets[0]


def _kind(payload: Any, fields: Any, mapping: HookMapping, where: str) -> str:
    found = _text(_get(fields, mapping.kind_field)) if mapping.kind_field else None
    kind = found or mapping.kind
    if not kind:
        raise InvalidPayload(
            f"{where}: no ticket kind",
            [f"set [hooks.{where}] kind, or kind_field to a field the payload carries"],
        )
    return kind


def _time(value: Any) -> str | None:
    """A sender's time as ISO 8601 UTC (Jira: ``2026-12-07T10:00:00.000+0000``; ServiceNow:
    ``2026-12-07 10:00:00``, UTC); None when absent or unreadable."""
    text = _text(value)
    if text is None:
        return None
    text = text.replace(" ", "T", 1)
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_generic(payload: Any, words: Vocabulary = DEFAULT_VOCABULARY) -> TicketChange:
    """A generic payload as a change. Raises :class:`InvalidPayload` naming each field."""
    if not isinstance(payload, Mapping):
        raise InvalidPayload("generic: not a JSON object", ["(body): must be an object"])
    event = payload.get("event")
    raw = payload.get("ticket")
    problems = []
    if event not in ("upsert", "delete"):
        problems.append("event: must be 'upsert' or 'delete'")
    if not isinstance(raw, Mapping):
        problems.append("ticket: must be an object")
    if problems:
        raise InvalidPayload("generic: the payload is invalid; nothing was changed", problems)
    assert isinstance(raw, Mapping)
    if event == "delete":
        key = _text(raw.get("id"))
        if key is None:
            raise InvalidPayload("generic: no ticket id", ["ticket.id: a string is needed"])
        return TicketChange("delete", key)
    ticket = _ticket(raw, "generic", words)
    return TicketChange("upsert", ticket.id, ticket)


_JIRA_EVENTS = {"issue_created": "upsert", "issue_updated": "upsert", "issue_deleted": "delete"}


def parse_jira(
    payload: Any, mapping: HookMapping, words: Vocabulary = DEFAULT_VOCABULARY
) -> TicketChange:
    """A Jira issue webhook as a change. Raises :class:`InvalidPayload` naming each field."""
    if not isinstance(payload, Mapping):
        raise InvalidPayload("jira: not a JSON object", ["(body): must be an object"])
    event = str(payload.get("webhookEvent") or "").removeprefix("jira:")
    key = _text(_get(payload, "issue.key"))
    problems = []
    if event not in _JIRA_EVENTS:
        problems.append("webhookEvent: must be issue_created, issue_updated or issue_deleted")
    if key is None:
        problems.append("issue.key: a string is needed")
    if problems:
        raise InvalidPayload("jira: the payload is invalid; nothing was changed", problems)
    assert key is not None
    if _JIRA_EVENTS[event] == "delete":
        return TicketChange("delete", key)
    fields = _get(payload, "issue.fields") or {}
    done = _get(fields, "status.statusCategory.key") == "done"
    raw = {
        "id": key,
        "kind": _kind(payload, fields, mapping, "jira"),
        "subject": _text(_get(fields, mapping.subject_field or "subject")),
        "assignee": _text(_get(fields, f"assignee.{mapping.assignee_field}")),
        "status": "closed" if done else "open",
        "opened": _time(_get(fields, "created")),
        "closed": _time(_get(fields, "resolutiondate")) if done else None,
        "opened_by": "system",
    }
    return TicketChange("upsert", key, _ticket(_present(raw), "jira", words))


def parse_servicenow(
    payload: Any, mapping: HookMapping, words: Vocabulary = DEFAULT_VOCABULARY
) -> TicketChange:
    """A ServiceNow record as a change. Raises :class:`InvalidPayload` naming each field."""
    if not isinstance(payload, Mapping):
        raise InvalidPayload("servicenow: not a JSON object", ["(body): must be an object"])
    key = _text(payload.get("number"))
    if key is None:
        raise InvalidPayload(
            "servicenow: the payload is invalid; nothing was changed",
            ["number: a string is needed"],
        )
    deleted = payload.get("operation") == "delete" or payload.get("action") == "deleted"
    if deleted:
        return TicketChange("delete", key)
    state = _text(payload.get("state"))
    closed = state in mapping.closed_states
    raw = {
        "id": key,
        "kind": _kind(payload, payload, mapping, "servicenow"),
        "subject": _text(_get(payload, mapping.subject_field or "u_subject")),
        "assignee": _text(payload.get("assigned_to")),
        "status": "closed" if closed else "open",
        "opened": _time(payload.get("opened_at")),
        "closed": _time(payload.get("closed_at")) if closed else None,
        "opened_by": "system",
        "sys_id": _text(payload.get("sys_id")),
    }
    return TicketChange("upsert", key, _ticket(_present(raw), "servicenow", words))


def _present(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` without absent optional values (absent required ones stay, to be named)."""
    required = {"id", "kind", "subject", "assignee", "status"}
    return {k: v for k, v in raw.items() if v is not None or k in required}


def parse(
    kind: str,
    payload: Any,
    mappings: Mapping[str, HookMapping],
    words: Vocabulary = DEFAULT_VOCABULARY,
) -> TicketChange:
    """The change a ``kind`` payload asks for; ticket kinds are ``words``' (the active pack's).
    Raises :class:`InvalidPayload`."""
    if kind == "generic":
        return parse_generic(payload, words)
    if kind == "jira":
        return parse_jira(payload, mappings.get("jira", HookMapping()), words)
    if kind == "servicenow":
        return parse_servicenow(payload, mappings.get("servicenow", HookMapping()), words)
    raise InvalidPayload(f"unknown hook kind {kind!r}", [f"kind: one of {', '.join(KINDS)}"])


__all__ = [
    "DEFAULT_WINDOW",
    "KINDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Deliveries",
    "HookMapping",
    "MemoryDeliveries",
    "SignatureCheck",
    "TicketChange",
    "parse",
    "parse_generic",
    "parse_jira",
    "parse_servicenow",
    "sign",
]
