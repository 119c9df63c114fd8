"""custos's events as OCSF 1.x JSON: alerts as Detection Finding (class 2004), decisions,
releases and approval events as API Activity (class 6003).

What goes out names people and accounts by id, data by category and purpose, and policies by
id; never a value that was read, and never free text a person typed (a request's reason, a
review's note), which may quote one. An alert's explanation is custos's own sentence, made
of ids, categories and counts, and goes out as the finding's description.

Each event is a pure function of what it is made from (no clock read here), so that sending
a range again after a crash sends the very same lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from custos import __version__
from custos.ledger.entries import (
    AlertEntry,
    ApprovalDeniedEntry,
    ApprovalEntry,
    ApprovalRefusedEntry,
    ApprovalRequestEntry,
    BreakGlassClosedEntry,
    BreakGlassEntry,
    BreakGlassRefusedEntry,
    BreakGlassReviewEntry,
    DecisionEntry,
    Entry,
    GrantEndedEntry,
    GrantEntry,
    GrantFields,
    GrantRevokedEntry,
    ReleaseEntry,
    RequestDeniedEntry,
    RequestExpiredEntry,
    RequestWithdrawnEntry,
)

#: The OCSF schema version the events follow.
OCSF_VERSION: Final = "1.3.0"
DETECTION_FINDING: Final = 2004
API_ACTIVITY: Final = 6003
FINDINGS: Final = 2
APPLICATION_ACTIVITY: Final = 6

#: The attributes each class requires (OCSF schema: ``base_event`` plus the class and the
#: category it extends), as dotted paths. Objects the schema requires have their own
#: required attributes (``metadata.product``, ``metadata.version``, ``api.operation``,
#: ``finding_info.uid``) and "at least one of" rules, checked by :func:`problems`.
BASE_REQUIRED: Final = (
    "activity_id",
    "category_uid",
    "class_uid",
    "metadata",
    "metadata.product",
    "metadata.version",
    "severity_id",
    "time",
    "type_uid",
)
REQUIRED: Final[Mapping[int, tuple[str, ...]]] = {
    API_ACTIVITY: (*BASE_REQUIRED, "actor", "api", "api.operation", "src_endpoint"),
    DETECTION_FINDING: (*BASE_REQUIRED, "finding_info", "finding_info.uid"),
}
#: "At least one of" rules of the objects used (OCSF ``constraints``).
AT_LEAST_ONE: Final[Mapping[str, tuple[str, ...]]] = {
    "metadata.product": ("name", "uid"),
    "actor": ("process", "user", "iam_role", "invoked_by", "session", "app_name", "app_uid"),
    "actor.user": ("account", "name", "uid"),
    "src_endpoint": (
        "ip",
        "uid",
        "name",
        "hostname",
        "svc_name",
        "instance_uid",
        "interface_uid",
        "interface_name",
        "domain",
    ),
}

#: Which stream an event belongs to, for a destination's ``events`` filter.
KINDS: Final = ("decisions", "releases", "approvals", "alerts")

_SEVERITY = {"low": 2, "medium": 3, "high": 4, "critical": 5}
_READING_ACTIONS = {"read": 2, "search": 2, "export": 2, "modify": 3}
_ACTIVITY_NAMES = {1: "Create", 2: "Read", 3: "Update", 4: "Delete", 99: "Other"}
_STATUS_NAMES = {1: "Success", 2: "Failure", 99: "Other"}
_PRODUCT = {"name": "custos", "vendor_name": "custos", "version": __version__}

#: Approval entry type → (API Activity activity_id, status_id, severity_id).
_APPROVAL_SHAPES: Final[Mapping[type[Entry], tuple[int, int, int]]] = {
    ApprovalRequestEntry: (1, 1, 1),
    RequestDeniedEntry: (3, 1, 1),
    RequestExpiredEntry: (3, 1, 1),
    RequestWithdrawnEntry: (4, 1, 1),
    ApprovalEntry: (3, 1, 1),
    ApprovalDeniedEntry: (3, 1, 1),
    ApprovalRefusedEntry: (3, 2, 3),
    GrantEntry: (1, 1, 1),
    BreakGlassEntry: (1, 1, 4),
    GrantRevokedEntry: (4, 1, 1),
    GrantEndedEntry: (4, 1, 1),
    BreakGlassRefusedEntry: (1, 2, 3),
    BreakGlassReviewEntry: (3, 1, 1),
    BreakGlassClosedEntry: (3, 1, 1),
}


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as stored by detection (DESIGN.md, *Alerts*), with its store id."""

    id: int
    fingerprint: str
    rule: str
    severity: str
    principals: tuple[str, ...]
    subjects: tuple[str, ...]
    events: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    created: datetime
    explanation: str
    suppressed: bool = False


def kind_of(entry: Entry) -> str | None:
    """Which of :data:`KINDS` a ledger entry is exported as, or None (not exported)."""
    if isinstance(entry, DecisionEntry):
        return "decisions"
    if isinstance(entry, ReleaseEntry):
        return "releases"
    if isinstance(entry, AlertEntry):
        return "alerts"
    if type(entry) in _APPROVAL_SHAPES:
        return "approvals"
    return None


def from_entry(index: int, entry: Entry, origin: str) -> dict[str, Any] | None:
    """The OCSF event for the ledger entry at ``index`` of the log ``origin``, or None for an
    entry that is not exported (authority, sign-ins, settings, …; unknown or broken
    entries). Never raises for a well-typed entry."""
    if isinstance(entry, DecisionEntry):
        return _decision(index, entry, origin)
    if isinstance(entry, ReleaseEntry):
        return _release(index, entry, origin)
    if isinstance(entry, AlertEntry):
        return _ledger_alert(index, entry, origin)
    if type(entry) in _APPROVAL_SHAPES:
        return _approval(index, entry, origin)
    return None


def from_alert(alert: AlertRecord, origin: str) -> dict[str, Any]:
    """The Detection Finding for an alert raised by detection."""
    event = _base(
        DETECTION_FINDING,
        FINDINGS,
        1,
        _ms(alert.created),
        _SEVERITY.get(alert.severity, 0),
        _metadata(f"alert:{alert.fingerprint}", origin, None),
    )
    event.update(
        {
            "class_name": "Detection Finding",
            "category_name": "Findings",
            "activity_name": "Create",
            "message": alert.explanation,
            "is_alert": True,
            "status_id": 3 if alert.suppressed else 1,
            "status": "Suppressed" if alert.suppressed else "New",
            "finding_info": {
                "uid": alert.fingerprint,
                "title": alert.rule,
                "desc": alert.explanation,
                "types": [alert.rule],
                "analytic": {"name": alert.rule, "uid": alert.rule, "type_id": 1, "type": "Rule"},
                "created_time": _ms(alert.created),
                "first_seen_time": _ms(alert.first_seen),
                "last_seen_time": _ms(alert.last_seen),
            },
            "resources": [_subject(s) for s in alert.subjects],
            "evidences": [{"actor": {"user": {"uid": p, "type_id": 1}}} for p in alert.principals],
            "unmapped": {
                "custos": {
                    "alert_id": alert.id,
                    "rule": alert.rule,
                    "severity": alert.severity,
                    "principals": list(alert.principals),
                    "subjects": list(alert.subjects),
                    "events": list(alert.events),
                }
            },
        }
    )
    return event


def problems(event: Mapping[str, Any]) -> list[str]:
    """What makes ``event`` fall short of its OCSF class: every required attribute missing
    (:data:`REQUIRED`), every "at least one of" rule broken, and a ``type_uid`` that is not
    ``class_uid * 100 + activity_id``. Empty for a valid event; an unknown class is one
    problem."""
    class_uid = event.get("class_uid")
    if not isinstance(class_uid, int) or class_uid not in REQUIRED:
        return [f"class_uid {class_uid!r} is not one custos sends"]
    required = REQUIRED[class_uid]
    found = [f"missing {path}" for path in required if _get(event, path) is None]
    for path, names in AT_LEAST_ONE.items():
        value = _get(event, path)
        if isinstance(value, Mapping) and not any(value.get(n) is not None for n in names):
            found.append(f"{path} needs at least one of {', '.join(names)}")
    activity = event.get("activity_id")
    if isinstance(activity, int) and event.get("type_uid") != class_uid * 100 + activity:
        found.append("type_uid must be class_uid * 100 + activity_id")
    return found


def _get(event: Mapping[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _ms(moment: datetime | str | None) -> int:
    """An OCSF timestamp: milliseconds since the epoch (0 for a time that does not parse,
    which only a malformed entry has)."""
    if moment is None:
        return 0
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _metadata(uid: str, origin: str, index: int | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": dict(_PRODUCT),
        "uid": uid,
        "log_name": origin,
    }
    if index is not None:
        # The ledger index: with the log's checkpoints, a receiver can prove the event.
        metadata["sequence"] = index
    return metadata


def _base(
    class_uid: int,
    category_uid: int,
    activity_id: int,
    time_ms: int,
    severity_id: int,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "class_uid": class_uid,
        "category_uid": category_uid,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_ms,
        "severity_id": severity_id,
        "metadata": metadata,
    }


def _user(uid: str | None) -> dict[str, Any]:
    """``actor`` for a person by id, or custos itself when nobody acted (an expiry)."""
    if not uid:
        return {"app_name": "custos"}
    return {"user": {"uid": uid, "type_id": 1, "type": "User"}}


def _subject(uid: str, labels: Iterable[str] = ()) -> dict[str, Any]:
    resource: dict[str, Any] = {"uid": uid, "type": "subject"}
    shown = [label for label in labels if label]
    if shown:
        resource["labels"] = shown
    return resource


def _activity(
    index: int,
    entry: Entry,
    origin: str,
    *,
    activity_id: int,
    status_id: int,
    severity_id: int,
    actor: dict[str, Any],
    operation: str,
    resources: list[dict[str, Any]],
    source: str | None,
    message: str,
    custos: dict[str, Any],
) -> dict[str, Any]:
    time_text = getattr(entry, "time", None)
    event = _base(
        API_ACTIVITY,
        APPLICATION_ACTIVITY,
        activity_id,
        _ms(time_text if isinstance(time_text, str) else None),
        severity_id,
        _metadata(f"ledger:{index}", origin, index),
    )
    event.update(
        {
            "class_name": "API Activity",
            "category_name": "Application Activity",
            "activity_name": _ACTIVITY_NAMES[activity_id],
            "status_id": status_id,
            "status": _STATUS_NAMES[status_id],
            "message": message,
            "actor": actor,
            "api": {"operation": operation, "service": {"name": "custos"}},
            "src_endpoint": {"name": source or "custos"},
            "resources": resources,
            "unmapped": {
                "custos": {
                    "entry_type": entry.type,
                    "ledger_index": index,
                    **{k: v for k, v in custos.items() if v not in (None, (), [])},
                }
            },
        }
    )
    return event


def _decision(index: int, entry: DecisionEntry, origin: str) -> dict[str, Any]:
    status = {"allow": 1, "deny": 2}.get(entry.decision, 99)
    severity = 4 if entry.break_glass else {"allow": 1, "deny": 3}.get(entry.decision, 2)
    actor = _user(entry.principal)
    if entry.reasons:
        actor["authorizations"] = [
            {"decision": entry.decision, "policy": {"uid": policy, "name": policy}}
            for policy in entry.reasons
        ]
    event = _activity(
        index,
        entry,
        origin,
        activity_id=_READING_ACTIONS.get(entry.action, 99),
        status_id=status,
        severity_id=severity,
        actor=actor,
        operation=f"custos.{entry.action}",
        resources=[_subject(entry.subject, _labels(entry))],
        source=entry.source,
        message=(
            f"{entry.principal} {entry.action} {entry.category} of {entry.subject} "
            f"for {entry.purpose}: {entry.decision}"
        ),
        custos={
            "event_id": entry.id,
            "decision": entry.decision,
            "role": entry.role,
            "team": entry.team,
            "category": entry.category,
            "purpose": entry.purpose,
            "ticket": entry.ticket,
            "precision": entry.precision,
            "reasons": list(entry.reasons),
            "policy_version": entry.policy_version,
            "grant": entry.grant,
            "break_glass": entry.break_glass or None,
            "review_required": entry.review_required or None,
        },
    )
    event["status_detail"] = entry.decision
    return event


def _release(index: int, entry: ReleaseEntry, origin: str) -> dict[str, Any]:
    return _activity(
        index,
        entry,
        origin,
        activity_id=2,
        status_id=1,
        severity_id=1,
        actor=_user(entry.principal),
        operation=f"custos.release.{entry.action}",
        resources=[_subject(entry.subject, _labels(entry))],
        source=entry.source,
        message=(
            f"{entry.records} {entry.category} record(s) of {entry.subject} released to "
            f"{entry.principal} ({entry.precision or 'none'})"
        ),
        custos={
            "event_id": entry.id,
            "decision_id": entry.decision_id,
            "category": entry.category,
            "purpose": entry.purpose,
            "ticket": entry.ticket,
            "precision": entry.precision,
            "records": entry.records,
            "shredded": entry.shredded or None,
        },
    )


def _labels(entry: DecisionEntry | ReleaseEntry) -> list[str]:
    return [
        f"category:{entry.category}",
        f"purpose:{entry.purpose}",
        f"precision:{entry.precision}" if entry.precision else "",
        f"ticket:{entry.ticket}" if entry.ticket else "",
    ]


def _approval(index: int, entry: Entry, origin: str) -> dict[str, Any]:
    activity_id, status_id, severity_id = _APPROVAL_SHAPES[type(entry)]
    fields = _approval_fields(entry)
    subject = fields["subject"]
    resources = (
        [_subject(subject, [f"category:{c}" for c in fields["categories"]])] if subject else []
    )
    for kind in ("request", "grant"):
        if fields[kind]:
            resources.append({"uid": fields[kind], "type": kind})
    return _activity(
        index,
        entry,
        origin,
        activity_id=activity_id,
        status_id=status_id,
        severity_id=severity_id,
        actor=_user(fields["actor"]),
        operation=f"custos.approvals.{entry.type}",
        resources=resources,
        source=None,
        message=f"{entry.type.replace('_', ' ')}"
        + (f" by {fields['actor']}" if fields["actor"] else "")
        + (f" about {subject}" if subject else ""),
        custos={
            "principal": fields["principal"],
            "subject": subject,
            "request": fields["request"],
            "grant": fields["grant"],
            "categories": list(fields["categories"]),
            "purpose": fields["purpose"],
            "ticket": fields["ticket"],
            "rule": fields["rule"],
            "starts": fields["starts"],
            "ends": fields["ends"],
        },
    )


def _approval_fields(entry: Entry) -> dict[str, Any]:
    """The ids an approval event is about, whatever its entry type; free text left out."""
    actor: str | None = getattr(entry, "principal", None)
    if isinstance(entry, ApprovalEntry | ApprovalDeniedEntry | ApprovalRefusedEntry):
        actor = entry.approver
    elif isinstance(entry, RequestWithdrawnEntry | GrantRevokedEntry):
        actor = entry.by
    elif isinstance(entry, BreakGlassReviewEntry | BreakGlassClosedEntry):
        actor = entry.reviewer
    elif isinstance(entry, RequestExpiredEntry | GrantEndedEntry):
        actor = None  # custos itself: nobody acted
    elif isinstance(entry, RequestDeniedEntry):
        actor = None  # the approver who denied it has an approval_denied entry of their own
    grant = entry if isinstance(entry, GrantFields) else None
    return {
        "actor": actor,
        "principal": getattr(entry, "principal", None),
        "subject": getattr(entry, "subject", None),
        "request": getattr(entry, "request", None),
        "grant": getattr(entry, "grant", None),
        "categories": tuple(getattr(entry, "categories", ())),
        "purpose": getattr(entry, "purpose", None),
        "ticket": getattr(entry, "ticket", None),
        "rule": getattr(entry, "rule", None),
        "starts": grant.starts if grant else None,
        "ends": grant.ends if grant else None,
    }


def _ledger_alert(index: int, entry: AlertEntry, origin: str) -> dict[str, Any]:
    """An alert the approval workflow ledgered itself (break-glass)."""
    alert = AlertRecord(
        id=-1,
        fingerprint=f"ledger:{index}",
        rule=entry.rule,
        severity=entry.severity,
        principals=tuple(entry.principals),
        subjects=tuple(entry.subjects) or ((entry.subject,) if entry.subject else ()),
        events=(),
        first_seen=_when(entry.time),
        last_seen=_when(entry.time),
        created=_when(entry.time),
        explanation=entry.explanation,
    )
    event = from_alert(alert, origin)
    event["metadata"] = _metadata(f"ledger:{index}", origin, index)
    custos = event["unmapped"]["custos"]
    del custos["alert_id"]
    custos.update({"entry_type": entry.type, "ledger_index": index})
    if entry.grant:
        custos["grant"] = entry.grant
    return event


def _when(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
