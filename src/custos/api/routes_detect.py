"""``/v1`` routes of detection: access events in, alerts and cases out.

Investigators and the privacy office triage; auditors read. Events never carry vault
contents, so investigators see who accessed what, never the data itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from custos.access import acts
from custos.api.auth import Caller, requires, system_of, triager_principal
from custos.api.schemas import Id, Text
from custos.detect import DISPOSITIONS
from custos.timefields import UtcTime

router = APIRouter(prefix="/v1", tags=["detection"])

TRIAGE = requires("investigator", "privacy_officer")
READERS = requires("investigator", "privacy_officer", "auditor")
IMPORTERS = requires("investigator")


class EventsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=10_000)]


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assignee: Id


class CommentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text


class CloseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disposition: Literal[DISPOSITIONS]  # type: ignore[valid-type]
    comment: Text | None = None


@router.post("/events", status_code=201)
def import_events(
    body: EventsBody, request: Request, who: Caller = Depends(IMPORTERS)
) -> dict[str, Any]:
    """Import access events from a tool that does not go through custos yet (all or none)."""
    report = system_of(request).events.append(body.events)
    return {"added": report.added, "unchanged": report.unchanged}


@router.get("/events")
def search_events(
    request: Request,
    principal: str | None = Query(None, max_length=128),
    subject: str | None = Query(None, max_length=128),
    since: UtcTime | None = None,
    limit: int = Query(200, ge=1, le=5000),
    who: Caller = Depends(READERS),
) -> list[dict[str, Any]]:
    """The access log, newest first (custos's own decisions included). Looking is logged
    first (an ``oversight_view`` entry)."""
    system = system_of(request)
    system.record_view(who.viewer("api"), "access_log", subject=subject, about=principal)
    system.feed_events()
    found = system.events.search(principal=principal, subject=subject, since=since, limit=limit)
    return [e.to_dict() for e in found]


@router.post("/detect")
def detect(request: Request, who: Caller = Depends(TRIAGE)) -> list[dict[str, Any]]:
    """Run every rule now; returns the alerts (already filed into cases)."""
    return [a.to_dict() for a in system_of(request).detect().alerts]


@router.get("/alerts")
def alerts(
    request: Request, since: UtcTime | None = None, who: Caller = Depends(READERS)
) -> list[dict[str, Any]]:
    """Alerts, newest first. Looking is logged first (``oversight_view``)."""
    system = system_of(request)
    system.record_view(who.viewer("api"), "alerts")
    return [a.to_dict() for a in system.casebook.alerts(since=since)]


@router.get("/alerts/{alert_id}")
def alert(
    request: Request,
    alert_id: str = Path(..., max_length=64),
    who: Caller = Depends(READERS),
) -> dict[str, Any]:
    """An alert with its evidence events. Looking is logged first (``oversight_view``)."""
    system = system_of(request)
    found = system.casebook.alert(alert_id)
    system.record_view(who.viewer("api"), "alert", subjects=found.subjects, alert=found.id)
    return {**found.to_dict(), "evidence": [e.to_dict() for e in system.events.get(found.events)]}


@router.get("/cases")
def cases(
    request: Request,
    status: Literal["open", "closed"] | None = None,
    who: Caller = Depends(READERS),
) -> list[dict[str, Any]]:
    """Cases, newest first. Looking is logged first (``oversight_view``)."""
    system = system_of(request)
    system.record_view(who.viewer("api"), "cases")
    return [c.to_dict(full=False) for c in system.casebook.cases(status)]


@router.get("/cases/{case_id}")
def case(
    request: Request, case_id: str = Path(..., max_length=64), who: Caller = Depends(READERS)
) -> dict[str, Any]:
    """A case with its alerts. Looking is logged first (``oversight_view``)."""
    system = system_of(request)
    found = system.casebook.case(case_id)
    subjects = [s for a in found.alerts for s in a.subjects]
    system.record_view(who.viewer("api"), "case", subjects=subjects)
    return found.to_dict()


@router.post("/cases/{case_id}/assign")
def assign(
    body: AssignBody,
    request: Request,
    case_id: str = Path(..., max_length=64),
    who: Caller = Depends(TRIAGE),
) -> dict[str, Any]:
    principal = triager_principal(who)
    system = system_of(request)
    return acts.assign_case(
        system, who.operator(), case_id, body.assignee, acting_as=principal
    ).to_dict()


@router.post("/cases/{case_id}/comment")
def comment(
    body: CommentBody,
    request: Request,
    case_id: str = Path(..., max_length=64),
    who: Caller = Depends(TRIAGE),
) -> dict[str, Any]:
    system = system_of(request)
    return acts.comment_case(system, who.operator(), case_id, who.name, body.text).to_dict()


@router.post("/cases/{case_id}/close")
def close(
    body: CloseBody,
    request: Request,
    case_id: str = Path(..., max_length=64),
    who: Caller = Depends(TRIAGE),
) -> dict[str, Any]:
    """Close with a disposition; ``legitimate`` and ``false_positive`` feed suppression."""
    principal = triager_principal(who)
    return acts.close_case(
        system_of(request),
        who.operator(),
        case_id,
        body.disposition,
        author=who.name,
        acting_as=principal,
        comment=body.comment,
    ).to_dict()
