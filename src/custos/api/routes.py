"""The HTTP API (``/v1``): the guarded path for tools, approvals, the ledger, operations.

Roles: a ``tool`` token acts as its own principal on the guarded path; people act through the
admin-plane roles. Separation of duties: only ``approver`` / ``privacy_officer`` accounts may
answer requests, never an ``admin``; investigators see events, never vault contents (no role
but ``tool`` can call ``/v1/read``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest

from custos.access import Custos, QueryRequest, ReadResult
from custos.access.batching import RequestBatcher
from custos.accounts.onbehalf import (
    ACCESS_TOKEN_TYPE,
    ASSERTION_TYPES,
    EXCHANGED_PREFIX,
    TOKEN_EXCHANGE,
)
from custos.api.auth import (
    Caller,
    acting_principal,
    approver_principal,
    caller,
    requires,
    system_of,
)
from custos.api.errors import error_body
from custos.api.schemas import (
    AnswerBody,
    BatchBody,
    BreakGlassBody,
    CheckBody,
    QueryBody,
    RequestBody,
    ReviewBody,
    json_body,
    parsed_body,
)
from custos.errors import AuthenticationFailed, CustosError, Forbidden, InvalidInput
from custos.ledger import TileServer
from custos.policy import AccessRequest, Decision, check_words

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1")
#: The one API path whose body is not JSON: a witness's cosigned note, as text/plain.
COSIGNATURES_PATH = "/v1/ledger/cosignatures"
#: The one path taking a form (RFC 8693 token exchange, as OAuth clients send it).
TOKEN_PATH = "/v1/token"  # noqa: S105 - a path, not a secret
ops = APIRouter()

TOOL = requires("tool")
APPROVING = requires("approver", "privacy_officer")
REVOKING = requires("tool", "approver", "privacy_officer")
#: Requests and grants: never the admin, who manages accounts and tokens and nothing else.
OVERSIGHT = requires("auditor", "investigator", "approver", "privacy_officer")
#: Counts only (no subject, principal or grant): also the admin, who runs the service.
OPERATORS = requires("auditor", "investigator", "approver", "privacy_officer", "admin")
LEDGER_READERS = requires("auditor", "privacy_officer", "tool", "investigator")
AUDITORS = requires("auditor", "privacy_officer")
REPORT_READERS = requires("auditor", "privacy_officer")


def _system(request: Request) -> Custos:
    return system_of(request)


def _access_request(body: CheckBody, who: Caller, request: Request) -> AccessRequest:
    """The access request ``who`` makes with ``body`` (as :func:`acting_principal` allows),
    its words checked against the active pack here, so
    that one caller's unknown word never fails a batch of others'. Raises
    :class:`InvalidInput`, :class:`Forbidden`."""
    access = AccessRequest(
        principal=acting_principal(who, body.principal),
        subject=body.subject,
        category=body.category,
        purpose=body.purpose,
        action=body.action,
        ticket=body.ticket,
        precision=body.precision,
        break_glass=body.break_glass,
        reason=body.reason,
        via=who.via,
    )
    check_words([access], _system(request).policy_pack.vocabulary)
    return access


def _hours(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(hours=value)


# -- the guarded path ------------------------------------------------------------------


@router.post(
    "/check",
    tags=["access"],
    summary="Decide one request (logged)",
    response_model=None,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    openapi_extra=json_body(CheckBody),
)
async def check(request: Request) -> Response:
    """Decide and durably log one access request; the decision says why.

    Concurrent checks are decided together (one policy batch, one durable ledger batch).
    """
    # The busiest route: credentials and body are handled here rather than by FastAPI's
    # dependency injection and response encoding, which cost more than deciding the check.
    who = await TOOL(request)
    body = await parsed_body(request, CheckBody)
    checks: RequestBatcher[Decision] = request.app.state.checks
    access = _access_request(body, who, request)
    decision = await checks.submit(access, f"api:{who.name}")
    return JSONResponse(decision.to_dict())


@router.post(
    "/token",
    tags=["access"],
    summary="Exchange a staff member's assertion for a short-lived token (RFC 8693)",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type", "subject_token"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": [TOKEN_EXCHANGE]},
                            "subject_token": {"type": "string"},
                            "subject_token_type": {"type": "string"},
                            "actor_token": {"type": "string"},
                            "actor_token_type": {"type": "string"},
                        },
                    }
                }
            }
        }
    },
)
async def token_exchange(request: Request) -> Response:
    """RFC 8693 token exchange: a tool (its custos token as ``actor_token`` or the bearer)
    trades a staff member's assertion (``subject_token``, a JWT) for a custos token acting
    for that member through that tool, living minutes. Refused (401/403, nothing issued) as
    an ``X-Custos-On-Behalf-Of`` assertion would be."""
    form = await request.form()
    names = [k for k, _ in form.multi_items()]
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    # Who asks first: without a tool's token, nothing about the request is answered.
    actor = fields.get("actor_token", "")
    header = request.headers.get("authorization", "")
    scheme, _, bearer = header.partition(" ")
    bearer = bearer.strip() if scheme.lower() == "bearer" else ""
    presented = actor or bearer
    if not presented or presented.startswith(EXCHANGED_PREFIX):
        raise AuthenticationFailed("present the tool's own token as actor_token")
    if actor and bearer and actor != bearer:
        raise AuthenticationFailed("actor_token and the bearer token differ")
    system = _system(request)
    token = await asyncio.to_thread(system.accounts.verify_token, presented)
    request.app.state.rate_limiter.take(f"token:{token.id}")
    if "tool" not in token.roles:
        raise Forbidden("this needs one of the roles: tool")
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        # RFC 6749 3.2: a parameter must not be sent twice (which one would count?).
        raise InvalidInput(f"{', '.join(twice)} sent more than once")
    if fields.get("grant_type") != TOKEN_EXCHANGE:
        raise InvalidInput(f"grant_type must be {TOKEN_EXCHANGE}")
    assertion = fields.get("subject_token", "")
    if not assertion:
        raise InvalidInput("subject_token (the staff member's assertion) is missing")
    kind = fields.get("subject_token_type")
    if kind is not None and kind not in ASSERTION_TYPES:
        raise InvalidInput(
            f"subject_token_type must be one of {', '.join(sorted(ASSERTION_TYPES))}"
        )
    resolver = system.on_behalf
    if resolver is None:
        raise Forbidden("acting on behalf of someone is not configured here")
    issued, acting = await asyncio.to_thread(resolver.exchange, token, assertion)
    expires_in = max(0, int((acting.expires or 0) - time.time()))
    return JSONResponse(
        {
            "access_token": issued,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/check/batch", tags=["access"], summary="Decide many requests (logged)")
def check_batch(
    body: BatchBody, request: Request, who: Caller = Depends(TOOL)
) -> list[dict[str, Any]]:
    """Decide up to 1,000 requests in one policy batch and one durable ledger batch."""
    requests = [_access_request(b, who, request) for b in body.requests]
    return [d.to_dict() for d in _system(request).decide_many(requests, source=f"api:{who.name}")]


@router.post(
    "/read",
    tags=["access"],
    summary="Guarded read of a subject's records",
    response_model=None,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    openapi_extra=json_body(CheckBody),
)
async def read(request: Request) -> Response:
    """Decide, log, and release records at the precision the decision allows.

    Concurrent reads are run together (one policy batch, one durable ledger batch holding
    each decision and, right after it, what it released).
    """
    who = await TOOL(request)
    body = await parsed_body(request, CheckBody)
    reads: RequestBatcher[ReadResult] = request.app.state.reads
    access = _access_request(body, who, request)
    result = await reads.submit(access, f"api:{who.name}")
    return JSONResponse(result.to_dict())


@router.post("/query", tags=["access"], summary="Guarded SQL: one SELECT on a mapped source")
def query(body: QueryBody, request: Request, who: Caller = Depends(TOOL)) -> dict[str, Any]:
    """Run one read-only SELECT on a source of the data map, as the tool's own principal:
    decided per pinned subject and category (or per category in aggregate, every group of at
    least ``[sql] k`` subjects), its decisions and release logged before any row is returned.

    400 ``sql_rejected`` (not one understood SELECT), 403 ``query_refused`` (refused; the
    refusing decisions are logged), 503 ``source_unavailable`` / ``ledger_unavailable``.
    """
    result = _system(request).query(
        QueryRequest(
            principal=acting_principal(who, body.principal),
            source=body.source,
            sql=body.sql,
            purpose=body.purpose,
            ticket=body.ticket,
            reason=body.reason,
        ),
        source_tag=f"api:{who.name}",
    )
    return result.to_dict()


# -- approvals -------------------------------------------------------------------------


@router.post("/approvals/requests", tags=["approvals"], status_code=201)
def open_request(
    body: RequestBody, request: Request, who: Caller = Depends(TOOL)
) -> dict[str, Any]:
    """Ask for access that needs approval, as the tool's own principal."""
    system = _system(request)
    system.approvals.sweep()
    opened = system.request_access(
        principal=acting_principal(who, body.principal),
        subject=body.subject,
        categories=list(body.categories),
        purpose=body.purpose,
        ticket=body.ticket,
        precision=body.precision,
        reason=body.reason,
        duration=_hours(body.hours),
        actions=list(body.actions),
        source=f"api:{who.name}",
        via=who.via,
    )
    return opened.to_dict()


@router.get("/approvals/requests", tags=["approvals"])
def list_requests(
    request: Request,
    status: str | None = Query(None, pattern="^(pending|approved|denied|expired|withdrawn)$"),
    who: Caller = Depends(OVERSIGHT),
) -> list[dict[str, Any]]:
    """Requests, newest first."""
    system = _system(request)
    system.approvals.sweep()
    return [r.to_dict() for r in system.approvals.requests(status=status)]


@router.get("/approvals/requests/{request_id}", tags=["approvals"])
def show_request(
    request_id: str, request: Request, who: Caller = Depends(OVERSIGHT)
) -> dict[str, Any]:
    return _system(request).approvals.request(request_id).to_dict()


@router.post("/approvals/requests/{request_id}/approve", tags=["approvals"])
def approve(
    request_id: str, body: AnswerBody, request: Request, who: Caller = Depends(APPROVING)
) -> dict[str, Any]:
    """Approve as the caller's principal; refused with the independence rule named."""
    system = _system(request)
    system.approvals.sweep()
    answered = system.approvals.approve(
        request_id, approver_principal(who), body.reason, operator=who.operator()
    )
    system.approvals.outbox.deliver()
    return answered.to_dict()


@router.post("/approvals/requests/{request_id}/deny", tags=["approvals"])
def deny(
    request_id: str, body: AnswerBody, request: Request, who: Caller = Depends(APPROVING)
) -> dict[str, Any]:
    system = _system(request)
    system.approvals.sweep()
    answered = system.approvals.deny(
        request_id, approver_principal(who), body.reason, operator=who.operator()
    )
    system.approvals.outbox.deliver()
    return answered.to_dict()


@router.get("/grants", tags=["approvals"])
def list_grants(request: Request, who: Caller = Depends(OVERSIGHT)) -> list[dict[str, Any]]:
    return [g.to_dict() for g in _system(request).approvals.grants()]


@router.get("/grants/{grant_id}", tags=["approvals"])
def show_grant(grant_id: str, request: Request, who: Caller = Depends(OVERSIGHT)) -> dict[str, Any]:
    return _system(request).approvals.grant(grant_id).to_dict()


@router.post("/grants/{grant_id}/revoke", tags=["approvals"])
def revoke(
    grant_id: str, body: AnswerBody, request: Request, who: Caller = Depends(REVOKING)
) -> dict[str, Any]:
    """Revoke: the holder (its tool), an approver of it, or the privacy office; never an
    admin, auditor or investigator, whatever principal their account is linked to."""
    principal = acting_principal(who, None) if who.has("tool") else approver_principal(who)
    return (
        _system(request)
        .approvals.revoke(grant_id, principal, body.reason, operator=who.operator())
        .to_dict()
    )


@router.post("/grants/{grant_id}/review", tags=["approvals"])
def review(
    grant_id: str, body: ReviewBody, request: Request, who: Caller = Depends(APPROVING)
) -> dict[str, Any]:
    """Review a break-glass grant (two reviewers close it)."""
    principal = approver_principal(who)
    return (
        _system(request)
        .approvals.review(grant_id, principal, body.note, operator=who.operator())
        .to_dict()
    )


@router.post("/break-glass", tags=["approvals"], status_code=201)
def break_glass(
    body: BreakGlassBody, request: Request, who: Caller = Depends(TOOL)
) -> dict[str, Any]:
    """Take an immediate grant for a security incident; raises a critical alert."""
    grant = _system(request).break_glass(
        principal=acting_principal(who, body.principal),
        subject=body.subject,
        categories=list(body.categories),
        purpose=body.purpose,
        ticket=body.ticket,
        reason=body.reason,
        duration=_hours(body.hours),
        actions=list(body.actions),
        source=f"api:{who.name}",
        via=who.via,
    )
    return grant.to_dict()


# -- the ledger ------------------------------------------------------------------------


@router.get("/ledger/checkpoint", tags=["ledger"], response_class=PlainTextResponse)
def checkpoint(request: Request, who: Caller = Depends(LEDGER_READERS)) -> str:
    """The latest signed checkpoint (C2SP signed note); a new one when it does not cover the
    log and is more than a second old (so witnesses can always reach the newest entries)."""
    return _system(request).ledger.current_checkpoint()


@router.post(COSIGNATURES_PATH.removeprefix("/v1"), tags=["ledger"], status_code=201)
async def cosignature(request: Request, who: Caller = Depends(AUDITORS)) -> dict[str, Any]:
    """A witness hands back its cosigned copy of one of our checkpoints (text/plain)."""
    body = await request.body()
    if len(body) > 64 * 1024:
        raise InvalidInput("a cosigned checkpoint is at most 64 KiB")
    try:
        note = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the cosigned checkpoint is not UTF-8 text") from None
    system = _system(request)
    kept = await asyncio.to_thread(system.ledger.add_cosignature, note, system.witnesses)
    return {"witnesses": kept}


@router.get("/ledger/proof/inclusion", tags=["ledger"])
def inclusion(
    request: Request,
    index: int = Query(..., ge=0, le=2**62),
    size: int | None = Query(None, ge=1, le=2**62),
    who: Caller = Depends(LEDGER_READERS),
) -> dict[str, Any]:
    return _system(request).ledger.inclusion_proof(index, size).to_json()


@router.get("/ledger/proof/consistency", tags=["ledger"])
def consistency(
    request: Request,
    old: int = Query(..., ge=1, le=2**62),
    new: int | None = Query(None, ge=1, le=2**62),
    who: Caller = Depends(LEDGER_READERS),
) -> dict[str, Any]:
    return _system(request).ledger.consistency_proof(old, new).to_json()


@router.get("/ledger/entries/{index}", tags=["ledger"])
def entry(
    request: Request,
    index: int = Path(..., ge=0, le=2**62),
    who: Caller = Depends(AUDITORS),
) -> Response:
    """An entry's exact bytes (auditors only: entries name principals and subjects)."""
    return Response(_system(request).ledger.entry(index), media_type="application/json")


@router.get("/ledger/tile/{path:path}", tags=["ledger"])
def tile(path: str, request: Request, who: Caller = Depends(LEDGER_READERS)) -> Response:
    """Hash tiles per C2SP tlog-tiles (entry bundles are not served)."""
    status, body, cache = TileServer(_system(request).ledger).handle("GET", f"/tile/{path}")
    if status != 200:
        # The API's one error shape (the tile server alone, `custos log serve`, says it in
        # plain text as tlog clients expect).
        message = body.decode("utf-8", "replace").strip() or "no such tile"
        code = "not_found" if status == 404 else "invalid_input"
        return JSONResponse(error_body(code, message), status_code=status)
    return Response(
        body,
        status_code=status,
        media_type="application/octet-stream",
        headers={"cache-control": cache},
    )


# -- transparency ------------------------------------------------------------------------


@router.get("/subjects/{subject_id}/report", tags=["reports"])
def subject_report(
    request: Request,
    subject_id: str = Path(..., min_length=1, max_length=128),
    who: Caller = Depends(REPORT_READERS),
) -> dict[str, Any]:
    """A subject's transparency report; staff names only for the privacy office."""
    names = "privacy_officer" in who.roles
    return _system(request).subject_report(subject_id, names=names, viewer=who.viewer("api"))


# -- who am I, health, metrics ---------------------------------------------------------


@router.get("/openapi.json", tags=["ops"], include_in_schema=False)
def openapi_schema(request: Request, who: Caller = Depends(caller)) -> dict[str, Any]:
    """The OpenAPI schema of this service, for any authenticated caller."""
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/whoami", tags=["ops"])
def whoami(who: Caller = Depends(caller)) -> dict[str, Any]:
    found: dict[str, Any] = {
        "kind": who.kind,
        "name": who.name,
        "roles": sorted(who.roles),
        "principal": who.principal,
    }
    if who.via is not None:
        found["via"] = who.via  # a tool acting on the principal's behalf
    return found


# The two probes are the only operations without credentials: a load balancer or an
# orchestrator has none. They answer a fixed word and a status code, nothing else (no
# version, size or name an unauthenticated caller could learn from).
READY_TIMEOUT_SECONDS = 5.0


@ops.get("/healthz", tags=["ops"])
def health() -> dict[str, str]:
    """Liveness, without credentials: the process answers. Always 200 ``{"status": "ok"}``."""
    return {"status": "ok"}


@ops.get(
    "/readyz",
    tags=["ops"],
    responses={503: {"description": 'Not ready: {"status": "unavailable"}'}},
)
async def ready(request: Request) -> JSONResponse:
    """Readiness, without credentials: the database answers and the ledger opens (its size
    is read, and not shown). 200 ``{"status": "ok"}``, else 503 ``{"status":
    "unavailable"}`` within about 5 s; why is in the service's log, not in the answer."""
    try:
        await asyncio.wait_for(
            asyncio.to_thread(_system(request).ledger.size), READY_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 - any failure is "not ready", said generically
        reason = exc.message if isinstance(exc, CustosError) else type(exc).__name__
        log.warning("readiness probe failed (%s)", reason)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


@ops.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
def metrics(request: Request, who: Caller = Depends(OPERATORS)) -> Response:
    """Prometheus text format."""
    return Response(
        generate_latest(request.app.state.registry),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
