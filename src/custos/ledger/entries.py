"""The vocabulary of ledger entries: one frozen dataclass per entry ``type``, one registry.

Every entry custos appends is built here and every reader parses it back here, so the shape
of an entry is written down once. An entry is a contract — its bytes are signed into
checkpoints, salted into subject reports and checked by outside verifiers — so
:meth:`Entry.to_json` gives exactly the dict the writers have always appended: the same
members, the same optional members left out when unset (a field declared with
:func:`optional` is omitted while it equals its default), members in the order they were
written. ``parse(entry.to_json()) == entry`` and ``parse(d).to_json() == d`` hold for every
entry the current writers produce (tests check both on a real world and with Hypothesis).

Forward and backward compatibility:

- a ``type`` no class knows (a newer writer, or a test's own entry) parses to
  :class:`UnknownEntry`, which keeps the raw dict and writes it back unchanged;
- members a known class does not declare (a newer writer's) are kept in ``extra`` and
  written back after the declared ones;
- the ledger's own members, ``salt`` and the subject chain's ``prev``, are kept on every
  entry (``None`` until the ledger has stored it);
- a member a class declares with a default may be absent (older writers left it out); one
  declared without a default must be there, or :func:`parse` raises :class:`MalformedEntry`
  naming the type and the member.

Values stay primitive (times are ISO 8601 strings, lists are tuples, objects mappings), so
this module imports nothing above the ledger.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeVar, Union, dataclass_transform

from custos.errors import InvalidInput

#: The ledger's own members of a stored entry (see ``Ledger``): the random salt, and the
#: subject chain's links (``reports.SUBJECT_CHAIN`` names the same member).
SALT = "salt"
LINKS = "prev"


class MalformedEntry(InvalidInput):
    """A ledger entry of a known type lacks a member or has one of the wrong JSON type."""

    code = "malformed_entry"


def optional(*, default: Any) -> Any:
    """A member written only when it differs from ``default`` (and absent means
    ``default``); for ``()`` or ``{}`` pass the empty value. (``default`` is named at every
    use: type checkers see a field specifier's default only as that keyword.)"""
    return field(default=default, metadata={"omit": True})


def renamed(name: str) -> Any:
    """A required member whose JSON name is not a good Python name (``set``)."""
    return field(metadata={"json": name})


_Checker = Callable[[Any], Any]
_MISSING_VALUE = object()


def _checker(hint: Any) -> tuple[_Checker, str]:
    """A function that returns the Python value of a JSON value of type ``hint`` (lists
    become tuples) or ``_MISSING_VALUE`` when it does not fit, and the type's name."""
    if hint is Any:
        return (lambda v: v), "any JSON value"
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner, name = _checker(args[0] if len(args) == 1 else Any)
        return (lambda v: None if v is None else inner(v)), f"{name} or null"
    if hint is str or hint is int or hint is bool:
        wanted = hint
        return (lambda v: v if type(v) is wanted else _MISSING_VALUE), {
            str: "a string",
            int: "an integer",
            bool: "true or false",
        }[hint]
    if origin is tuple:
        item, name = _checker(typing.get_args(hint)[0])

        def as_tuple(value: Any) -> Any:
            if type(value) is not list:
                return _MISSING_VALUE
            out = tuple(item(v) for v in value)
            return _MISSING_VALUE if any(v is _MISSING_VALUE for v in out) else out

        return as_tuple, f"a list of {name.removeprefix('a ').removeprefix('an ')}s"
    if origin in (Mapping, dict):
        value_hint = typing.get_args(hint)[1]
        check, name = _checker(value_hint)

        def as_mapping(value: Any) -> Any:
            if type(value) is not dict or not all(type(k) is str for k in value):
                return _MISSING_VALUE
            if value_hint is not Any and any(check(v) is _MISSING_VALUE for v in value.values()):
                return _MISSING_VALUE
            return dict(value)

        return as_mapping, "an object"
    raise TypeError(f"no JSON form for {hint!r}")  # pragma: no cover - a coding error


@dataclass(frozen=True, slots=True)
class _Member:
    attr: str
    json: str
    omit: bool
    default: Any
    required: bool
    check: _Checker
    expected: str
    sequence: bool


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One ledger entry. Subclasses set ``TYPE`` and declare the members after ``type``."""

    TYPE: ClassVar[str] = ""
    _LAYOUT: ClassVar[_Layout | None] = None

    #: Members this class does not declare, kept as read (a newer writer's).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The subject chain's links, filled in by the ledger (None before it stored the entry).
    prev: Mapping[str, int | None] | None = None
    #: The entry's random salt, added by the ledger (None before it stored the entry).
    salt: str | None = None

    @property
    def type(self) -> str:
        """The entry's ``type`` member."""
        return self.TYPE

    def get(self, name: str, default: Any = None) -> Any:
        """The member ``name`` as the stored JSON has it (lists as tuples), or ``default``
        when the JSON has none: ``dict.get`` without building the dict."""
        member = _layout(type(self)).by_json.get(name)
        if member is None:
            if name == "type":
                return self.type
            if name == LINKS:
                return default if self.prev is None else self.prev
            if name == SALT:
                return default if self.salt is None else self.salt
            return self.extra.get(name, default)
        value = getattr(self, member.attr)
        return default if member.omit and value == member.default else value

    def to_json(self) -> dict[str, Any]:
        """The entry as the ledger stores it: ``type``, the declared members in order
        (optional ones only when set), then any ``extra``, ``prev`` and ``salt``."""
        out: dict[str, Any] = {"type": self.TYPE}
        for m in _layout(type(self)).members:
            value = getattr(self, m.attr)
            if m.omit and value == m.default:
                continue
            if m.sequence and value is not None:
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[m.json] = value
        if self.extra:
            out.update(self.extra)
        if self.prev is not None:
            out[LINKS] = dict(self.prev)
        if self.salt is not None:
            out[SALT] = self.salt
        return out


@dataclass(frozen=True)
class UnknownEntry(Entry):
    """An entry whose ``type`` no class here declares (or that has none): kept as read."""

    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        kind = self.raw.get("type")
        return kind if isinstance(kind, str) else ""

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default)

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


#: Every entry type, by its ``type`` member.
REGISTRY: dict[str, type[Entry]] = {}
#: Who writes each type (module), for the vocabulary's table in docs/design/ledger.md.
WRITERS: dict[str, str] = {}

_E = TypeVar("_E", bound=type[Entry])


@dataclass_transform(
    kw_only_default=True, frozen_default=True, field_specifiers=(field, optional, renamed)
)
def entry_type(name: str, *, writer: str) -> Callable[[_E], _E]:
    """Register a class (made a frozen, keyword-only dataclass) as the entry type ``name``,
    written by ``writer``."""

    def register(cls: _E) -> _E:
        # (A dataclass without slots is the class itself, made one.)
        dataclass(frozen=True, kw_only=True)(cls)
        made = cls
        made.TYPE = name
        if name in REGISTRY:
            raise TypeError(f"entry type {name!r} declared twice")  # pragma: no cover
        REGISTRY[name] = made
        WRITERS[name] = writer
        return made

    return register


@dataclass(frozen=True, slots=True)
class _Layout:
    """A registered type's members in order, and by JSON name."""

    members: tuple[_Member, ...]
    by_json: dict[str, _Member]


_NO_MEMBERS = _Layout(members=(), by_json={})


def _layout(cls: type[Entry]) -> _Layout:
    """The members of entry class ``cls`` (none for a class not registered).

    Worked out on first use, not at registration: resolving every type's hints costs tens
    of milliseconds at import, and a command reads or writes only a few types."""
    found = cls.__dict__.get("_LAYOUT")
    if found is not None:
        return found  # type: ignore[no-any-return]
    if REGISTRY.get(cls.TYPE) is not cls:
        return _NO_MEMBERS
    hints = typing.get_type_hints(cls)
    own: list[_Member] = []
    for f in fields(cls):
        if f.name in ("extra", "prev", "salt"):
            continue
        check, expected = _checker(hints[f.name])
        default = f.default
        if default is MISSING and f.default_factory is not MISSING:
            default = f.default_factory()
        origin = typing.get_origin(hints[f.name])
        sequence = origin is tuple or (
            origin in (Union, types.UnionType)
            and any(typing.get_origin(a) is tuple for a in typing.get_args(hints[f.name]))
        )
        own.append(
            _Member(
                attr=f.name,
                json=f.metadata.get("json", f.name),
                omit=bool(f.metadata.get("omit")),
                default=None if default is MISSING else default,
                required=default is MISSING,
                check=check,
                expected=expected,
                sequence=sequence,
            )
        )
    found = _Layout(members=tuple(own), by_json={m.json: m for m in own})
    # Two threads may both work it out: they store equal layouts.
    type.__setattr__(cls, "_LAYOUT", found)
    return found


def members_of(cls: type[Entry]) -> tuple[_Member, ...]:
    """The declared members of registered entry class ``cls``, in written order."""
    return _layout(cls).members


def parse(entry: Any) -> Entry:
    """The entry ``entry`` (a dict read from the ledger) as its class; an unknown or
    missing ``type`` gives :class:`UnknownEntry`. Raises :class:`MalformedEntry` naming the
    type and member when a known type lacks a required member or has one of the wrong JSON
    type, or when ``entry`` is not a JSON object."""
    if type(entry) is not dict:
        raise MalformedEntry("a ledger entry must be a JSON object")
    kind = entry.get("type")
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return UnknownEntry(raw=dict(entry))
    values: dict[str, Any] = {}
    known = {"type", SALT, LINKS}
    for m in _layout(cls).members:
        known.add(m.json)
        raw = entry.get(m.json, _MISSING_VALUE)
        if raw is _MISSING_VALUE:
            if m.required:
                raise MalformedEntry(f"{kind} entry lacks its {m.json!r} member")
            continue
        value = m.check(raw)
        if value is _MISSING_VALUE:
            raise MalformedEntry(f"{kind} entry: {m.json!r} must be {m.expected}")
        values[m.attr] = value
    salt = entry.get(SALT)
    if salt is not None and type(salt) is not str:
        raise MalformedEntry(f"{kind} entry: {SALT!r} must be a string")
    links = entry.get(LINKS)
    if links is not None and (
        type(links) is not dict or not all(v is None or type(v) is int for v in links.values())
    ):
        raise MalformedEntry(f"{kind} entry: {LINKS!r} must map keys to indexes or null")
    extra = {k: v for k, v in entry.items() if k not in known}
    return cls(**values, extra=extra, prev=links, salt=salt)


def parse_bytes(raw: bytes) -> Entry:
    """The stored bytes of an entry, parsed. Raises :class:`MalformedEntry` for bytes that
    are not a JSON object, and as :func:`parse`."""
    try:
        decoded = json.loads(raw)
    except ValueError:
        raise MalformedEntry("a ledger entry is not JSON") from None
    return parse(decoded)


@dataclass(frozen=True)
class BrokenEntry(Entry):
    """What a follower is given for stored bytes that do not parse: the decoded JSON when it
    decoded (else None) and why it does not parse. Never written."""

    raw: Any = None
    problem: str = ""

    @property
    def type(self) -> str:
        kind = self.raw.get("type") if isinstance(self.raw, dict) else None
        return kind if isinstance(kind, str) else ""

    def get(self, name: str, default: Any = None) -> Any:
        return self.raw.get(name, default) if isinstance(self.raw, dict) else default

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw) if isinstance(self.raw, dict) else {}


def read(raw: bytes) -> Entry:
    """Stored bytes as an entry, never raising: a :class:`BrokenEntry` when they do not
    parse (how followers see a tampered or malformed entry and can name it)."""
    try:
        return parse_bytes(raw)
    except MalformedEntry as exc:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        return BrokenEntry(raw=decoded, problem=exc.message)


# == the guarded path (access/) ===========================================================

_ACCESS = "access/journal.py"


@entry_type("decision", writer=_ACCESS)
class DecisionEntry(Entry):
    """A decision, logged before it takes effect: the access-event fields of DESIGN.md plus
    the deciding policies, the policy version and the authority entries it used."""

    id: str
    time: str
    principal: str
    role: str | None = None
    team: str | None = None
    action: str
    subject: str
    category: str
    purpose: str
    decision: str
    precision: str | None = None
    reasons: tuple[str, ...] = ()
    policy_version: str | None = None
    source: str | None = None
    ticket: str | None = optional(default=None)
    requested_precision: str | None = optional(default=None)
    at: str | None = optional(default=None)
    grant: str | None = optional(default=None)
    explained: str | None = optional(default=None)
    review_required: bool = optional(default=False)
    break_glass: bool = optional(default=False)
    approvals_needed: Mapping[str, Any] | None = optional(default=None)
    settings: str | None = optional(default=None)
    #: Kind → index of the entry that set the fact; ``linked``: subject id → index for
    #: the other accounts of the subject's link group.
    authority: Mapping[str, Any] | None = optional(default=None)
    #: The digest of the data map a guarded SQL query was decided under (its ``data_map``
    #: entry has the same digest); absent for every other decision.
    data_map: str | None = optional(default=None)
    #: The tool (its principal id) that asked on ``principal``'s behalf, proved by the
    #: person's own assertion; absent when the principal asked itself.
    via: str | None = optional(default=None)


@entry_type("release", writer="access/read.py")
class ReleaseEntry(Entry):
    """What was released under a decision: counts and precision, never values."""

    id: str
    decision_id: str
    time: str
    principal: str
    action: str
    subject: str
    category: str
    purpose: str
    decision: str
    precision: str | None = None
    records: int
    source: str | None = None
    ticket: str | None = optional(default=None)
    shredded: int = optional(default=0)


_SYSTEM = "access/system.py"
_QUERY = "access/query.py"


@entry_type("aggregate_decision", writer=_QUERY)
class AggregateDecisionEntry(Entry):
    """A decision to let a principal count one category over many subjects (an aggregate SQL
    query of ``dataset``, a source of the data map): no subject, so in no subject's report."""

    id: str
    time: str
    principal: str
    role: str | None = None
    team: str | None = None
    action: str
    dataset: str
    category: str
    purpose: str
    decision: str
    reasons: tuple[str, ...] = ()
    policy_version: str | None = None
    source: str | None = None
    ticket: str | None = optional(default=None)
    at: str | None = optional(default=None)
    settings: str | None = optional(default=None)
    data_map: str | None = optional(default=None)
    authority: Mapping[str, Any] | None = optional(default=None)


@entry_type("sql_release", writer=_QUERY)
class SqlReleaseEntry(Entry):
    """What one guarded SQL query released, after its decisions: who, why, which subjects,
    the categories at their precision, how many rows, a digest of the SQL that ran. Never a
    value. In the report of every subject it pinned (``subjects_reported``)."""

    id: str
    time: str
    principal: str
    dataset: str
    purpose: str
    ticket: str | None = None
    aggregate: bool = False
    #: Category → the precision it left at (``coarse`` or ``precise``; ``count`` in an
    #: aggregate, whose groups each held at least ``k`` subjects).
    categories: Mapping[str, str] = field(default_factory=dict)
    rows: int
    truncated: bool = False
    sql_sha256: str
    data_map: str
    decisions: tuple[str, ...] = ()
    source: str | None = None
    k: int | None = optional(default=None)
    subjects: tuple[str, ...] = optional(default=())
    subjects_reported: bool = optional(default=False)


@entry_type("sql_refused", writer=_QUERY)
class SqlRefusedEntry(Entry):
    """A SELECT custos would not run for its text or shape (``sql_rejected`` or
    ``query_refused`` before any decision): who tried what kind of query, the refusal's code
    and words (which never repeat a value) and a digest of the text. Probing the analyzer
    leaves a trace."""

    time: str
    principal: str
    dataset: str
    purpose: str
    ticket: str | None = None
    code: str
    reason: str
    sql_sha256: str
    data_map: str
    source: str | None = None


@entry_type("data_map", writer=_QUERY)
class DataMapEntry(Entry):
    """A data map (``sources.yaml``) came into use: its digest and its canonical body."""

    time: str
    digest: str
    body: Mapping[str, Any]


@entry_type("report_view", writer=_SYSTEM)
class ReportViewEntry(Entry):
    """A subject's transparency report was asked for (logged before it is built)."""

    time: str
    subject: str
    principal: str | None = None
    roles: tuple[str, ...] = ()
    names: bool = False
    source: str | None = None


@entry_type("oversight_view", writer=_SYSTEM)
class OversightViewEntry(Entry):
    """Someone looked at oversight data (access log, alerts, cases, a principal's page)."""

    time: str
    view: str
    principal: str | None = None
    roles: tuple[str, ...] = ()
    source: str | None = None
    subject: str | None = optional(default=None)
    subject_filter: str | None = optional(default=None)
    subjects: tuple[str, ...] = optional(default=())
    subjects_reported: bool = optional(default=False)
    about_principal: str | None = optional(default=None)
    principal_filter: str | None = optional(default=None)
    alert: str | None = optional(default=None)


@entry_type("sign_in", writer=_SYSTEM)
class SignInEntry(Entry):
    """An account signed in to the dashboard (logged before its session starts)."""

    time: str
    account: str
    principal: str | None = None
    roles: tuple[str, ...] = ()
    method: str


@entry_type("policy_version", writer=_SYSTEM)
class PolicyVersionEntry(Entry):
    """A policy pack became active: its digest and every file of it."""

    time: str
    digest: str
    files: Mapping[str, str]


@entry_type("settings", writer=_SYSTEM)
class SettingsEntry(Entry):
    """The settings that change decisions, written when they change."""

    time: str
    digest: str
    residency: Mapping[str, Any] = field(default_factory=dict)
    approvals: Mapping[str, Any] = field(default_factory=dict)


@entry_type("ingest", writer=_SYSTEM)
class IngestEntry(Entry):
    """Sensitive records were stored in the vault (counts per category)."""

    time: str
    added: int
    categories: Mapping[str, int] = field(default_factory=dict)
    rejected: int = 0
    expired: int = 0


@entry_type("shred", writer=_SYSTEM)
class ShredEntry(Entry):
    """Data keys past retention are about to be destroyed (counts per category)."""

    time: str
    keys: int
    categories: Mapping[str, int] = field(default_factory=dict)


# == operators' acts (access/acts.py) =====================================================

_ACTS = "access/acts.py"


@entry_type("account_added", writer=_ACTS)
class AccountAddedEntry(Entry):
    """An account was created (whether it may use a password or an OpenID identity)."""

    time: str
    account: str
    roles: tuple[str, ...] = ()
    principal: str | None = None
    oidc: bool = False
    password: bool = False
    operator: Mapping[str, Any]


@entry_type("account_disabled", writer=_ACTS)
class AccountDisabledEntry(Entry):
    """An account was disabled (its sessions and tokens stop)."""

    time: str
    account: str
    roles: tuple[str, ...] = ()
    principal: str | None = None
    operator: Mapping[str, Any]


@entry_type("token_created", writer=_ACTS)
class TokenCreatedEntry(Entry):
    """An API token was created (never its secret)."""

    time: str
    token: str
    name: str
    roles: tuple[str, ...] = ()
    principal: str | None = None
    account: str | None = None
    operator: Mapping[str, Any]
    #: A tool's token that may act on behalf of staff members.
    on_behalf: bool = optional(default=False)


@entry_type("token_revoked", writer=_ACTS)
class TokenRevokedEntry(Entry):
    """An API token was revoked."""

    time: str
    token: str
    name: str
    account: str | None = None
    operator: Mapping[str, Any]


@entry_type("case_assigned", writer=_ACTS)
class CaseAssignedEntry(Entry):
    """A case was assigned (``about``: the principal the case is about)."""

    time: str
    case: str
    about: str | None = None
    assignee: str
    operator: Mapping[str, Any]


@entry_type("case_comment", writer=_ACTS)
class CaseCommentEntry(Entry):
    """A case was commented on (the text's SHA-256 only)."""

    time: str
    case: str
    about: str | None = None
    author: str
    text_sha256: str
    operator: Mapping[str, Any]


@entry_type("case_closed", writer=_ACTS)
class CaseClosedEntry(Entry):
    """A case was closed: its disposition and how many days its patterns are silenced."""

    time: str
    case: str
    about: str | None = None
    disposition: str
    suppress_days: int = 0
    author: str
    comment_sha256: str | None = optional(default=None)
    operator: Mapping[str, Any]


# == approvals (approvals/workflow.py) ====================================================

_APPROVALS = "approvals/workflow.py"


@dataclass(frozen=True, kw_only=True)
class RequestFields(Entry):
    """The members of every entry about an approval request."""

    time: str
    request: str
    principal: str
    subject: str
    categories: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    purpose: str
    ticket: str | None = None
    precision: str | None = None
    reason: str | None = None
    approvals_needed: int
    groups_needed: tuple[str, ...] = ()
    expires: str


@entry_type("approval_request", writer=_APPROVALS)
class ApprovalRequestEntry(RequestFields):
    """Access beyond policy was asked for, with the decisions that required approval."""

    decisions: tuple[str, ...] = ()
    journal: int | None = optional(default=None)


@entry_type("request_denied", writer=_APPROVALS)
class RequestDeniedEntry(RequestFields):
    """A request was denied by an approver."""

    journal: int | None = optional(default=None)


@entry_type("request_expired", writer=_APPROVALS)
class RequestExpiredEntry(RequestFields):
    """A request went unanswered past its expiry."""

    journal: int | None = optional(default=None)


@entry_type("request_withdrawn", writer=_APPROVALS)
class RequestWithdrawnEntry(RequestFields):
    """A request was withdrawn (``by`` whom; ``reason`` is the withdrawal's)."""

    by: str | None = None
    operator: Mapping[str, Any] | None = optional(default=None)
    journal: int | None = optional(default=None)


@dataclass(frozen=True, kw_only=True)
class _VoteFields(Entry):
    time: str
    request: str
    principal: str
    subject: str
    approver: str
    reason: str | None = None
    operator: Mapping[str, Any] | None = optional(default=None)
    journal: int | None = optional(default=None)


@entry_type("approval", writer=_APPROVALS)
class ApprovalEntry(_VoteFields):
    """An approver approved a request."""


@entry_type("approval_denied", writer=_APPROVALS)
class ApprovalDeniedEntry(_VoteFields):
    """An approver denied a request."""


@entry_type("approval_refused", writer=_APPROVALS)
class ApprovalRefusedEntry(Entry):
    """An attempt to answer a request was refused (``rule`` says why); nothing changed."""

    time: str
    #: The request answered, or (a refused break-glass review) the grant reviewed.
    request: str | None = optional(default=None)
    grant: str | None = optional(default=None)
    approver: str
    verdict: str
    rule: str
    #: Whose request or grant it was and about whom (added: the refusal reaches the
    #: subject's report), and for ``approval-ring`` the ring it would have closed.
    principal: str | None = optional(default=None)
    subject: str | None = optional(default=None)
    ring: tuple[str, ...] = optional(default=())
    operator: Mapping[str, Any] | None = optional(default=None)
    journal: int | None = optional(default=None)


@dataclass(frozen=True, kw_only=True)
class GrantFields(Entry):
    """The members of every entry about a grant: every fact a decision reads from it."""

    time: str
    grant: str
    request: str | None = None
    principal: str
    subject: str
    categories: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    purpose: str
    ticket: str | None = None
    precision: str | None = None
    approvals: int = 0
    approver_groups: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    starts: str
    ends: str
    break_glass: bool = False
    reason: str | None = None


@entry_type("grant", writer=_APPROVALS)
class GrantEntry(GrantFields):
    """A grant was made (active once this entry is durable; it vouches for the grant)."""

    journal: int | None = optional(default=None)


@entry_type("break_glass", writer=_APPROVALS)
class BreakGlassEntry(GrantFields):
    """Break-glass: a grant taken without approval, for review after the fact."""

    decisions: tuple[str, ...] = ()
    journal: int | None = optional(default=None)


@entry_type("grant_revoked", writer=_APPROVALS)
class GrantRevokedEntry(GrantFields):
    """A grant was revoked before its end (``by`` whom, ``reason`` the revocation's)."""

    by: str | None = None
    operator: Mapping[str, Any] | None = optional(default=None)
    journal: int | None = optional(default=None)


@entry_type("grant_ended", writer=_APPROVALS)
class GrantEndedEntry(GrantFields):
    """A grant reached its end (``time`` is its end)."""

    journal: int | None = optional(default=None)


@entry_type("alert", writer=_APPROVALS)
class AlertEntry(Entry):
    """An alert the workflow raises itself (break-glass), in the alert format of DESIGN.md."""

    rule: str
    severity: str
    time: str
    principals: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    subject: str | None = optional(default=None)
    grant: str | None = optional(default=None)
    explanation: str = ""
    journal: int | None = optional(default=None)


@entry_type("break_glass_refused", writer=_APPROVALS)
class BreakGlassRefusedEntry(Entry):
    """Break-glass was refused (too many grants awaiting review); nothing was granted."""

    time: str
    principal: str
    subject: str
    categories: tuple[str, ...] = ()
    purpose: str
    ticket: str | None = None
    decisions: tuple[str, ...] = ()
    rule: str
    awaiting_review: int = 0
    journal: int | None = optional(default=None)


@dataclass(frozen=True, kw_only=True)
class _ReviewFields(Entry):
    time: str
    grant: str
    principal: str
    subject: str
    reviewer: str
    note: str | None = None
    operator: Mapping[str, Any] | None = optional(default=None)
    journal: int | None = optional(default=None)


@entry_type("break_glass_review", writer=_APPROVALS)
class BreakGlassReviewEntry(_ReviewFields):
    """A reviewer reviewed a break-glass grant (more reviews needed)."""


@entry_type("break_glass_closed", writer=_APPROVALS)
class BreakGlassClosedEntry(_ReviewFields):
    """The last review a break-glass grant needed: its review is closed."""


# == authority (authority/) ===============================================================


@entry_type("authority", writer="authority/vouch.py")
class AuthorityFactsEntry(Entry):
    """The facts of up to ``authority.BATCH`` rows of one ``kind``, ledgered before the
    rows are written (see docs/design/authority.md). ``rows`` is the ``set`` member."""

    kind: str
    time: str
    source: str = ""
    by: Mapping[str, Any] | None = None
    rows: tuple[Mapping[str, Any], ...] = renamed("set")


# == export (export/exporter.py) ==========================================================


@entry_type("export_cursor", writer="export/exporter.py")
class ExportCursorEntry(Entry):
    """An export destination's cursor was set outside a send, before the row was written:
    ``act`` ``sealed`` (a row the migration left without a MAC, sealed as it stood when the
    home's export key was made) or ``reset`` (an operator's ``custos export reset``).
    ``ledger`` / ``alert`` are where it now stands; ``found`` the row as it was read
    (``ledger``, ``alert``, ``verified``), so an auditor sees what a reset moved from."""

    time: str
    destination: str
    act: str
    ledger: int
    alert: int
    found: Mapping[str, Any] = field(default_factory=dict)
    by: str | None = optional(default=None)


__all__ = [
    "LINKS",
    "REGISTRY",
    "SALT",
    "WRITERS",
    "BrokenEntry",
    "Entry",
    "MalformedEntry",
    "UnknownEntry",
    "parse",
    "parse_bytes",
    "read",
]
