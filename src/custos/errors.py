"""The one error tree of custos.

Every error a user can see derives from :class:`CustosError` and carries its own
user-facing message. The CLI catches ``CustosError`` in exactly one place and the
HTTP API turns it into one JSON error shape, using ``code`` and ``http_status``.

Messages name *what* and *where* (file, line, entry, field, id) but never a
secret or a precise personal value: an IP address, a coordinate or a key never
appears in a message.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?[\d\s().-]{7,}")


def shown_id(value: str) -> str:
    """``value`` quoted for a message about an unknown id, unless it looks like personal data
    (an IP address or network, an email address, a phone number) or is too long to be one of
    ours: a person who types an address where an id belongs must not find it in an error,
    and from there in a client's or a proxy's log."""
    text = value.strip()
    looks_personal = bool(_EMAIL.fullmatch(text) or _PHONE.fullmatch(text))
    if not looks_personal:
        try:
            ipaddress.ip_network(text, strict=False)
            looks_personal = True
        except ValueError:
            pass
    if looks_personal:
        return "(a value that looks like an address or number, not repeated here)"
    if len(value) > 128:
        return f"(a value of {len(value)} characters, not repeated here)"
    return repr(value)


class CustosError(Exception):
    """Base of every error custos reports to a person or a client."""

    code = "custos_error"
    http_status = 500
    #: Process exit code used by the CLI.
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, Any]:
        """The JSON error shape shared by the CLI's ``--json`` output and the API."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return body

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigurationError(CustosError):
    """The home folder, a configuration file or an environment variable is wrong."""

    code = "configuration_error"
    http_status = 500


class NotInitialised(ConfigurationError):
    """The home folder has not been set up with ``custos init``."""

    code = "not_initialised"


class InvalidInput(CustosError):
    """Input supplied by a person or a client is malformed or inconsistent."""

    code = "invalid_input"
    http_status = 422
    exit_code = 2


class UnstorableValue(InvalidInput):
    """The database refused a value given to it (a NUL character, a number out of range):
    the request is at fault, not the database, and nothing was changed."""


class ListsProblems(CustosError):
    """An error that lists every problem found (``problems``, each locatable), shown one per
    line and in the JSON error shape as ``problems``."""

    def __init__(self, message: str, problems: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems

    def __str__(self) -> str:
        lines = [self.message, *(f"  - {p}" for p in self.problems)]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["problems"] = list(self.problems)
        return body


class ValidationFailed(ListsProblems, InvalidInput):
    """A file failed validation; ``problems`` lists every problem found, each locatable."""

    code = "validation_failed"


class NotFound(CustosError):
    """An id named in a request does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = 3


class UnknownPrincipal(NotFound):
    code = "unknown_principal"


class UnknownSubject(NotFound):
    code = "unknown_subject"


class UnknownTicket(NotFound):
    code = "unknown_ticket"


class PolicyError(CustosError):
    """A policy pack, schema or policy test table is invalid."""

    code = "policy_error"
    http_status = 500
    exit_code = 4


class VocabularyInUse(ListsProblems, PolicyError):
    """A new policy pack drops a category or protected flag that data, the directory or the
    configuration still use; it is not activated (nothing is ledgered or changed) and custos
    decides nothing until the pack keeps those words. ``problems`` names each use."""

    code = "vocabulary_in_use"


class PolicyEvaluationError(PolicyError):
    """Cedar reported an error while evaluating; the request is denied (fail closed)."""

    code = "policy_evaluation_error"


class StoreUnavailable(CustosError):
    """The database cannot be reached or written; access is denied (fail closed)."""

    code = "store_unavailable"
    http_status = 503
    exit_code = 5


class LedgerUnavailable(StoreUnavailable):
    """The ledger could not durably record an entry; the access it guards is denied."""

    code = "ledger_unavailable"


class IntegrityError(CustosError):
    """Stored data does not verify: tampering, corruption or a forked log."""

    code = "integrity_error"
    http_status = 500
    exit_code = 6


class AuthorityMismatch(IntegrityError):
    """A fact a decision would rest on (a principal, subject, ticket, grant or token row) is
    not what the ledger entry that set it says: edited, inserted or moved without custos.
    Nothing is decided on it; decisions that meet one are denied with the rule
    ``authority-mismatch``. ``kind`` and ``key`` name the row (never its values)."""

    code = "authority_mismatch"
    http_status = 503

    def __init__(self, message: str, *, kind: str, key: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.key = key


class Refused(CustosError):
    """A person asked for something a rule forbids; ``rule`` names that rule."""

    code = "refused"
    http_status = 403
    exit_code = 7

    def __init__(self, message: str, *, rule: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["rule"] = self.rule
        return body


class ApprovalRefused(Refused):
    """An approval, denial, review or revocation breaks an independence or eligibility rule."""

    code = "approval_refused"


class RequestRefused(Refused):
    """No approval can make the access asked for legitimate (e.g. source protection)."""

    code = "request_refused"


class Conflict(CustosError):
    """The thing acted on is no longer in a state that allows the action (e.g. closed)."""

    code = "conflict"
    http_status = 409
    exit_code = 8


class StoreConflict(Conflict):
    """A write broke a uniqueness rule of the store: what it adds exists already, usually
    written meanwhile by someone else. Nothing of the write was kept."""

    code = "conflict"


class UnknownRequest(NotFound):
    code = "unknown_request"


class UnknownGrant(NotFound):
    code = "unknown_grant"


class AuthenticationFailed(CustosError):
    """No valid credentials: the same message whatever was wrong, so nothing leaks."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 9


class TlsRequired(AuthenticationFailed):
    """A client began signing in to the SQL front in clear while the front requires TLS: it
    is refused before any password is asked for (SQLSTATE 28000)."""

    code = "tls_required"


class AssertionRefused(CustosError):
    """A staff member's assertion (or a token exchanged for one) presented by a tool acting
    on their behalf does not hold: the message says why (expired, another audience, …),
    naming nothing of the assertion's contents."""

    code = "assertion_refused"
    http_status = 401
    exit_code = 9


class Forbidden(CustosError):
    """Valid credentials, but the role or principal does not allow this."""

    code = "forbidden"
    http_status = 403
    exit_code = 9


class RateLimited(CustosError):
    """Too many requests for one credential; retry after the time given."""

    code = "rate_limited"
    http_status = 429
    exit_code = 10


class UnknownAccount(NotFound):
    code = "unknown_account"


class ProtocolViolation(InvalidInput):
    """A client broke the PostgreSQL wire protocol (a malformed or oversized message): the
    SQL front answers with SQLSTATE 08P01 and closes the connection."""

    code = "protocol_violation"


class DataMapError(ValidationFailed):
    """The data map (``sources.yaml``) is invalid; each problem names ``file:line`` and the
    field. Nothing of it is used: the map in force stays the one accepted last."""

    code = "data_map_invalid"


class SqlRejected(InvalidInput):
    """A SQL text is not one read-only SELECT custos understands: a parse error, another kind
    of statement, a function outside the allow-list, an unmapped table or column. The message
    says what and where (``line:col``) and never repeats a literal of the query."""

    code = "sql_rejected"
    http_status = 400


class QueryRefused(CustosError):
    """A SELECT custos understands, refused for its shape: a table whose subjects are not
    pinned in an individual query, a subject column searched, a precise value in an aggregate,
    a group too small. ``reason`` says what to change; it never repeats a value."""

    code = "query_refused"
    http_status = 403
    exit_code = 7

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"query refused: {reason}", hint=hint)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["reason"] = self.reason
        return body


class ExportFailed(CustosError):
    """A destination of ``[[export]]`` did not take a batch (down, refused it, timed out):
    nothing was marked sent, and the batch is sent again on the next round."""

    code = "export_failed"
    http_status = 502
    exit_code = 5

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        destinations: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        #: Each destination's outcome of the round that failed (``--json`` shows them in
        #: the one error document, so a script reads one JSON value whatever happened).
        self.destinations = [dict(d) for d in destinations]

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        if self.destinations:
            body["destinations"] = self.destinations
        return body


class CursorTampered(ExportFailed):
    """An export destination's cursor row does not verify against the home's export key: it
    was moved, inserted, copied from another destination or its MAC removed in the
    database. The destination stops (nothing more is sent to it) until an operator runs
    ``custos export reset``, which is ledgered."""

    code = "export_cursor_tampered"
    http_status = 500

    def __init__(self, destination: str, why: str) -> None:
        super().__init__(
            f"export {destination!r}: its cursor does not verify ({why}); nothing more is "
            "sent to it",
            hint=f"find out who changed it, then `custos export reset {destination} --from "
            "<ledger index>` from a point the destination is known to hold",
        )
        self.destination = destination


class ScimRefused(InvalidInput):
    """A SCIM request refused (RFC 7644 §3.12): ``scim_type`` is the RFC's ``scimType``
    (``invalidValue``, ``invalidSyntax``, ``invalidFilter``, ``uniqueness``, ``mutability``,
    ``noTarget``, ``invalidPath``) or None, ``status`` the HTTP status. Nothing was changed."""

    code = "scim_refused"

    def __init__(
        self, message: str, scim_type: str | None, *, status: int = 400, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.scim_type = scim_type
        self.http_status = status

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["scim_type"] = self.scim_type
        return body


class InvalidPayload(InvalidInput):
    """A feed's payload (a ticket webhook's body) that custos cannot read: ``problems`` name
    each field at fault. Nothing was changed."""

    code = "invalid_payload"

    def __init__(self, message: str, problems: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["problems"] = list(self.problems)
        return body


class SignatureRefused(AuthenticationFailed):
    """A webhook whose HMAC signature is missing or wrong, or whose timestamp is outside the
    replay window. Nothing was changed."""

    code = "bad_signature"


class FeedNotConfigured(CustosError):
    """A feed was called that this installation has not set up (no webhook secret)."""

    code = "feed_not_configured"
    http_status = 503
    exit_code = 1


class SourceUnavailable(StoreUnavailable):
    """A data source of the data map cannot be reached, refused the connection, or did not
    answer within ``[sql] statement_timeout``. Nothing was released. The message names the
    source, never the server's own words (they can quote a value of the query)."""

    code = "source_unavailable"


class SourceFailed(CustosError):
    """A data source ran the query and failed (a type error on a value, a missing function):
    named by its SQLSTATE only, never by the server's message, which can quote a value."""

    code = "source_failed"
    http_status = 502
    exit_code = 5


class UnknownSetting(InvalidInput):
    """A session parameter the SQL front does not know (``SET work_mem``): SQLSTATE 42704."""

    code = "unknown_setting"


class TransactionAborted(InvalidInput):
    """A statement sent after an error inside a transaction block, before ``ROLLBACK``:
    SQLSTATE 25P02, as PostgreSQL answers it."""

    code = "transaction_aborted"
