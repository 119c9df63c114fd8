"""Directory feeds over HTTP: SCIM 2.0 (``/scim/v2``), REST for subjects and tickets
(``/v1/subjects``, ``/v1/tickets``) and ticket webhooks (``/v1/hooks/tickets/{kind}``).

Separation of duties: SCIM and the REST writes take only a ``provisioner`` token, and a
provisioner token can do nothing else (no other role may sit on it, and no other route takes
it). The webhooks take no token: the HMAC signature over the raw body is the credential.
Every change goes through the directory, which ledgers it before the row is written, naming
who made it (the token, or the hook).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from scim2_models import (
    Context,
    EnterpriseUser,
    Error,
    Group,
    InvalidFilterException,
    ListResponse,
    ResourceType,
    SCIMException,
    ScimFilter,
    ServiceProviderConfig,
    User,
)

from custos.access import Custos
from custos.api.auth import Caller, requires, system_of
from custos.directory import DirectoryDocument, Principal, Subject, Ticket
from custos.directory.files import parse_document
from custos.errors import (
    CustosError,
    FeedNotConfigured,
    InvalidInput,
    ScimRefused,
    SignatureRefused,
    UnknownPrincipal,
    ValidationFailed,
    shown_id,
)
from custos.feeds import scim
from custos.feeds.deliveries import StoredDeliveries
from custos.feeds.tickets import (
    DEFAULT_WINDOW,
    KINDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HookMapping,
    SignatureCheck,
    parse,
)
from custos.vocabulary import Vocabulary

#: Where the ticket hooks' shared secret is read when ``$CUSTOS_HOOKS_SECRET`` is not set.
HOOKS_SECRET_FILE = "hooks.secret"  # noqa: S105 - a file name, not a secret
HOOKS_SECRET_ENV = "CUSTOS_HOOKS_SECRET"  # noqa: S105 - a variable name, not a secret
SCIM_MEDIA = "application/scim+json"
MAX_COUNT = 1000

PROVISIONING = requires("provisioner")
#: Not in the OpenAPI schema: SCIM describes itself (``/ServiceProviderConfig``,
#: ``/ResourceTypes``, ``/Schemas``, RFC 7644 §4), and its clients read that.
scim_router = APIRouter(prefix="/scim/v2", tags=["scim"], include_in_schema=False)
directory_router = APIRouter(prefix="/v1", tags=["directory"])

T = TypeVar("T")


async def _json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ScimRefused("the body is not JSON", "invalidSyntax") from None


async def _work(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def _scim(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, media_type=SCIM_MEDIA, headers=headers)


def scim_error_response(exc: CustosError) -> Response:
    """``exc`` as a SCIM error (RFC 7644 §3.12), its message as ``detail``."""
    scim_type = exc.scim_type if isinstance(exc, ScimRefused) else None
    if not isinstance(exc, ScimRefused) and isinstance(exc, InvalidInput):
        scim_type = "invalidValue"
    if not isinstance(exc, ScimRefused) and exc.http_status == 409:
        scim_type = "uniqueness"
    detail = exc.message
    problems = getattr(exc, "problems", None)
    if problems:
        detail = f"{detail}: " + "; ".join(str(p) for p in problems)
    status = 400 if exc.http_status == 422 else exc.http_status
    error = Error(status=status, scim_type=scim_type, detail=detail)
    return _scim(error.model_dump(), status)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/scim/v2"


def _mapping(system: Custos) -> scim.ScimMapping:
    try:
        return scim.ScimMapping.from_section(system.settings.section("scim"))
    except ValueError as exc:
        raise ScimRefused(str(exc), None, status=500) from None


def _source(who: Caller, what: str) -> str:
    """An entry's ``source`` for a SCIM change (``by`` names the token)."""
    return f"scim: {what}"


def _by(who: Caller) -> dict[str, Any]:
    return who.operator().entry()


# -- discovery -------------------------------------------------------------------------


@scim_router.get("/ServiceProviderConfig")
def service_provider_config(who: Caller = Depends(PROVISIONING)) -> Response:
    config = ServiceProviderConfig.model_validate(
        {
            "patch": {"supported": True},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": True, "maxResults": MAX_COUNT},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": True},
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "Bearer token",
                    "description": "a custos token with the provisioner role",
                    "primary": True,
                }
            ],
        }
    )
    return _scim(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


def _resource_types(base: str) -> list[dict[str, Any]]:
    found = []
    for model, endpoint in ((scim.ScimUser, "/Users"), (Group, "/Groups")):
        kind = ResourceType.from_resource(model)
        kind.endpoint = endpoint  # type: ignore[assignment]
        body = kind.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        body["meta"] = {
            "resourceType": "ResourceType",
            "location": f"{base}/ResourceTypes/{kind.id}",
        }
        found.append(body)
    return found


@scim_router.get("/ResourceTypes")
def resource_types(request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    found = _resource_types(_base(request))
    return _scim(_list(found, 1, len(found), len(found)))


@scim_router.get("/ResourceTypes/{name}")
def resource_type(name: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    for body in _resource_types(_base(request)):
        if body.get("id") == name:
            return _scim(body)
    raise ScimRefused(f"no resource type {shown_id(name)}", None, status=404)


def _schemas(base: str) -> list[dict[str, Any]]:
    found = []
    for model in (User, EnterpriseUser, Group):
        schema = model.to_schema()
        body = schema.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        body["meta"] = {"resourceType": "Schema", "location": f"{base}/Schemas/{schema.id}"}
        found.append(body)
    return found


@scim_router.get("/Schemas")
def schemas(request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    found = _schemas(_base(request))
    return _scim(_list(found, 1, len(found), len(found)))


@scim_router.get("/Schemas/{uri}")
def schema(uri: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    for body in _schemas(_base(request)):
        if body.get("id") == uri:
            return _scim(body)
    raise ScimRefused("no such schema", None, status=404)


def _list(resources: list[dict[str, Any]], start: int, per_page: int, total: int) -> dict[str, Any]:
    return {
        "schemas": [ListResponse.__schema__],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": per_page,
        "Resources": resources,
    }


# -- users -----------------------------------------------------------------------------


def _user_principal(system: Custos, key: str) -> Principal:
    """The principal SCIM user ``key`` is (checked against the ledger); 404 when absent or
    deleted through SCIM."""
    try:
        principal = system.directory.principal(key)
    except UnknownPrincipal:
        principal = None
    if principal is None or scim.is_deleted(principal):
        raise ScimRefused(f"no user {shown_id(key)}", None, status=404)
    return principal


def _check_version(request: Request, principal: Principal) -> None:
    wanted = request.headers.get("if-match")
    if wanted is not None and wanted.strip() not in ("*", scim.etag(principal)):
        raise ScimRefused(
            "the user changed since you read it (If-Match does not match)", None, status=412
        )


def _write_principal(system: Custos, principal: Principal, who: Caller, what: str) -> Principal:
    system.directory.merge(
        DirectoryDocument(principals=(principal,)),
        source=_source(who, what),
        by=_by(who),
        feed=True,
    )
    return system.directory.principal(principal.id)


def _user_response(principal: Principal, request: Request, status: int = 200) -> Response:
    body = scim.user_of(principal, _base(request))
    return _scim(
        body,
        status,
        headers={"ETag": scim.etag(principal), "Location": body["meta"]["location"]},
    )


def _quoted(text: str) -> str:
    """A filter's quoted string (JSON escapes) as its value. Raises :class:`ScimRefused`."""
    try:
        return str(json.loads(f'"{text}"'))
    except ValueError:
        raise ScimRefused("the filter's string cannot be read", "invalidFilter") from None


_USERNAME_EQ = re.compile(r'^\s*userName\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


@scim_router.get("/Users")
def list_users(
    request: Request,
    filter: str | None = None,
    start_index: int = Query(1, alias="startIndex"),
    count: int = Query(100),
    who: Caller = Depends(PROVISIONING),
) -> Response:
    system = system_of(request)
    start = max(1, start_index)
    count = max(0, min(count, MAX_COUNT))
    base = _base(request)
    wanted = _USERNAME_EQ.match(filter or "")
    if wanted:
        key = _quoted(wanted.group(1))
        try:
            candidates = [_user_principal(system, key)]
        except ScimRefused:
            candidates = []
    else:
        check = None
        if filter:
            try:
                check = ScimFilter[scim.ScimUser](filter)
            except (InvalidFilterException, SCIMException, ValueError):
                raise ScimRefused("the filter cannot be read", "invalidFilter") from None
        candidates = [p for p in system.directory.principals() if not scim.is_deleted(p)]
        if check is not None:
            candidates = [
                p
                for p in candidates
                if check.match(scim.ScimUser.model_validate(scim.user_of(p, base)))
            ]
    page = candidates[start - 1 : start - 1 + count]
    found = [scim.user_of(p, base) for p in page]
    return _scim(_list(found, start, len(found), len(candidates)))


@scim_router.post("/Users", status_code=201)
async def create_user(request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    body = await _json(request)
    system = system_of(request)
    user = scim.parse_user(body, Context.RESOURCE_CREATION_REQUEST, _base(request))

    def create() -> Principal:
        try:
            current: Principal | None = system.directory.principal_row(user.user_name or "")
        except UnknownPrincipal:
            current = None
        if current is not None and not scim.is_deleted(current):
            raise ScimRefused(
                f"a user {shown_id(str(user.user_name))} exists already", "uniqueness", status=409
            )
        principal = scim.principal_of(user, _mapping(system), current=current)
        return _write_principal(system, principal, who, "user created")

    return _user_response(await _work(create), request, 201)


@scim_router.get("/Users/{key}")
def get_user(key: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    return _user_response(_user_principal(system_of(request), key), request)


@scim_router.put("/Users/{key}")
async def replace_user(key: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    body = await _json(request)
    system = system_of(request)
    user = scim.parse_user(body, Context.RESOURCE_REPLACEMENT_REQUEST, _base(request))
    if user.user_name != key:
        raise ScimRefused("userName cannot change (it is the principal's id)", "mutability")

    def put() -> Principal:
        current = _user_principal(system, key)
        _check_version(request, current)
        principal = scim.principal_of(user, _mapping(system), current=current)
        return _write_principal(system, principal, who, "user replaced")

    return _user_response(await _work(put), request)


@scim_router.patch("/Users/{key}")
async def patch_user(key: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    body = await _json(request)
    system = system_of(request)
    base = _base(request)
    patch = scim.parse_patch(body, scim.ScimUser, base)

    def apply() -> Principal:
        current = _user_principal(system, key)
        _check_version(request, current)
        user = scim.parse_user(
            scim.user_of(current, base), Context.RESOURCE_REPLACEMENT_REQUEST, base
        )
        scim.apply_patch(patch, user)
        if user.user_name != key:
            raise ScimRefused("userName cannot change (it is the principal's id)", "mutability")
        principal = scim.principal_of(user, _mapping(system), current=current)
        return _write_principal(system, principal, who, "user patched")

    return _user_response(await _work(apply), request)


@scim_router.delete("/Users/{key}", status_code=204)
def delete_user(key: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    """The principal is terminated (never deleted: approvals, grants and the ledger name
    it), and SCIM sees it no more."""
    system = system_of(request)
    current = _user_principal(system, key)
    _check_version(request, current)
    state = {**scim.scim_state(current), "deleted": True}
    principal = replace(
        current, status="terminated", extra={**current.extra, scim.EXTRA_KEY: state}
    )
    _write_principal(system, principal, who, "user deleted")
    return Response(status_code=204)


# -- groups ----------------------------------------------------------------------------


def _members(system: Custos, name: str) -> list[Principal]:
    return [p for p in system.directory.principals() if name in p.groups]


def _set_group(
    system: Custos, name: str, wanted: set[str], who: Caller, what: str
) -> list[Principal]:
    """Make ``wanted`` (principal ids) exactly the members of group ``name``, in one merge
    (all or nothing). Raises :class:`ScimRefused` naming an unknown member."""
    mapping = _mapping(system)
    current = {p.id: p for p in _members(system, name)}
    changed: list[Principal] = []
    for key in sorted(set(current) - wanted):
        person = current[key]
        changed.append(scim.with_groups(person, [g for g in person.groups if g != name], mapping))
    for key in sorted(wanted - set(current)):
        try:
            person = system.directory.principal(key)
        except UnknownPrincipal:
            raise ScimRefused(f"members: no user {shown_id(key)}", "invalidValue") from None
        changed.append(scim.with_groups(person, [*person.groups, name], mapping))
    if changed:
        system.directory.merge(
            DirectoryDocument(principals=tuple(changed)),
            source=_source(who, what),
            by=_by(who),
            feed=True,
        )
    return _members(system, name)


def _group_response(
    name: str, members: list[Principal], request: Request, status: int = 200
) -> Response:
    body = scim.group_of(name, members, _base(request))
    return _scim(body, status, headers={"Location": body["meta"]["location"]})


_DISPLAY_EQ = re.compile(r'^\s*displayName\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


@scim_router.get("/Groups")
def list_groups(
    request: Request,
    filter: str | None = None,
    start_index: int = Query(1, alias="startIndex"),
    count: int = Query(100),
    who: Caller = Depends(PROVISIONING),
) -> Response:
    system = system_of(request)
    start = max(1, start_index)
    count = max(0, min(count, MAX_COUNT))
    groups: dict[str, list[Principal]] = {}
    for person in system.directory.principals():
        for name in person.groups:
            groups.setdefault(name, []).append(person)
    names = sorted(groups)
    if filter:
        wanted = _DISPLAY_EQ.match(filter)
        if not wanted:
            raise ScimRefused('only displayName eq "…" filters groups here', "invalidFilter")
        names = [n for n in names if n == _quoted(wanted.group(1))]
    page = names[start - 1 : start - 1 + count]
    base = _base(request)
    found = [scim.group_of(n, groups[n], base) for n in page]
    return _scim(_list(found, start, len(found), len(names)))


@scim_router.post("/Groups", status_code=201)
async def create_group(request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    body = await _json(request)
    system = system_of(request)
    group = scim.parse_group(body, Context.RESOURCE_CREATION_REQUEST)
    name = str(group.display_name)
    wanted = {str(m.value) for m in group.members or [] if m.value}

    def create() -> list[Principal]:
        if _members(system, name):
            raise ScimRefused(f"a group {name!r} exists already", "uniqueness", status=409)
        return _set_group(system, name, wanted, who, "group created")

    return _group_response(name, await _work(create), request, 201)


@scim_router.get("/Groups/{name}")
def get_group(name: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    members = _members(system_of(request), scim.check_group_name(name))
    if not members:
        raise ScimRefused(
            f"no group {shown_id(name)} (a group exists while it has members)", None, status=404
        )
    return _group_response(name, members, request)


@scim_router.put("/Groups/{name}")
async def replace_group(
    name: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> Response:
    body = await _json(request)
    system = system_of(request)
    group = scim.parse_group(body, Context.RESOURCE_REPLACEMENT_REQUEST)
    if group.display_name != name:
        raise ScimRefused("displayName cannot change (it is the group's id)", "mutability")
    wanted = {str(m.value) for m in group.members or [] if m.value}
    members = await _work(lambda: _set_group(system, name, wanted, who, "group replaced"))
    return _group_response(name, members, request)


@scim_router.patch("/Groups/{name}")
async def patch_group(name: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    body = await _json(request)
    system = system_of(request)
    scim.check_group_name(name)
    patch = scim.parse_patch(body, Group)

    def apply() -> list[Principal]:
        base = _base(request)
        group = scim.parse_group(
            scim.group_of(name, _members(system, name), base), Context.RESOURCE_REPLACEMENT_REQUEST
        )
        scim.apply_patch(patch, group)
        if group.display_name != name:
            raise ScimRefused("displayName cannot change (it is the group's id)", "mutability")
        wanted = {str(m.value) for m in group.members or [] if m.value}
        return _set_group(system, name, wanted, who, "group patched")

    members = await _work(apply)
    return _group_response(name, members, request)


@scim_router.delete("/Groups/{name}", status_code=204)
def delete_group(name: str, request: Request, who: Caller = Depends(PROVISIONING)) -> Response:
    system = system_of(request)
    if not _members(system, scim.check_group_name(name)):
        raise ScimRefused(f"no group {shown_id(name)}", None, status=404)
    _set_group(system, name, set(), who, "group deleted")
    return Response(status_code=204)


# -- REST: subjects and tickets --------------------------------------------------------


def _subject_json(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "handle": subject.handle,
        "jurisdiction": subject.jurisdiction,
        "protected": list(subject.protected),
        "employee": subject.employee,
        "linked": list(subject.linked),
        "link_group": subject.link_group,
        "authority": subject.authority,
    }


def _ticket_json(ticket: Ticket) -> dict[str, Any]:
    return {**ticket.facts(), "authority": ticket.authority}


def _one(section: str, body: Any, where: str, words: Vocabulary) -> Any:
    """The one entry of ``section`` that ``body`` is, checked as a directory file's entries
    are, with ``words`` (the active pack's) for protected flags and ticket kinds."""
    if not isinstance(body, dict):
        raise ValidationFailed(f"{where}: the body must be a JSON object", [f"{where}: (body)"])
    return getattr(parse_document({section: [body]}, where, words), section)[0]


def _path_id(body: dict[str, Any], key: str, where: str) -> None:
    if body.setdefault("id", key) != key:
        raise ValidationFailed(
            f"{where}: the body's id differs from the path's", [f"{where}: field 'id'"]
        )


@directory_router.get("/subjects/{subject_id}")
def get_subject(
    subject_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    return _subject_json(system_of(request).directory.subject(subject_id))


def _put_subject(system: Custos, body: Any, key: str, who: Caller, where: str) -> dict[str, Any]:
    if isinstance(body, dict):
        _path_id(body, key, where)
    subject = _one("subjects", body, where, system.policy_pack.vocabulary)
    system.directory.merge(
        DirectoryDocument(subjects=(subject,)), source=where, by=_by(who), feed=True
    )
    return _subject_json(system.directory.subject(key))


_SUBJECT_FIELDS = ("handle", "jurisdiction", "protected", "employee", "linked")


@directory_router.put("/subjects/{subject_id}")
async def put_subject(
    subject_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    """Create or replace a subject: the body as a directory file's subject (its ``linked``
    stated in full: a link it omits is undone on both sides)."""
    body = await _body(request)
    system = system_of(request)
    where = f"PUT /v1/subjects/{subject_id[:128]}"
    return await _work(lambda: _put_subject(system, body, subject_id, who, where))


@directory_router.patch("/subjects/{subject_id}")
async def patch_subject(
    subject_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    """Change some fields of a subject (a JSON merge: fields absent keep their value)."""
    body = await _body(request)
    system = system_of(request)
    where = f"PATCH /v1/subjects/{subject_id[:128]}"

    def patch() -> dict[str, Any]:
        current = system.directory.subject(subject_id)
        if not isinstance(body, dict):
            raise ValidationFailed(f"{where}: the body must be a JSON object", [f"{where}: (body)"])
        # Its kept unknown fields too: a merge changes only what the body names.
        merged = dict(current.extra)
        merged.update((k, v) for k, v in _subject_json(current).items() if k in _SUBJECT_FIELDS)
        if current.handle is None:
            merged.pop("handle")
        merged.update(body)
        return _put_subject(system, merged, subject_id, who, where)

    return await _work(patch)


@directory_router.delete("/subjects/{subject_id}", status_code=204)
def delete_subject(
    subject_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> Response:
    """Remove a subject: unlinked, a tombstone ledgered, the row deleted."""
    system = system_of(request)
    system.directory.remove_subject(subject_id, f"DELETE /v1/subjects/{subject_id[:128]}", _by(who))
    return Response(status_code=204)


@directory_router.get("/tickets/{ticket_id}")
def get_ticket(
    ticket_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    return _ticket_json(system_of(request).directory.ticket(ticket_id))


def _put_ticket(
    system: Custos, body: Any, key: str, by: dict[str, Any], where: str
) -> dict[str, Any]:
    if isinstance(body, dict):
        _path_id(body, key, where)
    ticket = _one("tickets", body, where, system.policy_pack.vocabulary)
    system.directory.merge(DirectoryDocument(tickets=(ticket,)), source=where, by=by, feed=True)
    return _ticket_json(system.directory.ticket(key))


@directory_router.put("/tickets/{ticket_id}")
async def put_ticket(
    ticket_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    """Create or replace a ticket (the body as a directory file's ticket)."""
    body = await _body(request)
    system = system_of(request)
    where = f"PUT /v1/tickets/{ticket_id[:128]}"
    return await _work(lambda: _put_ticket(system, body, ticket_id, _by(who), where))


@directory_router.patch("/tickets/{ticket_id}")
async def patch_ticket(
    ticket_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> dict[str, Any]:
    """Change some fields of a ticket (closing it: ``{"status": "closed"}``)."""
    body = await _body(request)
    system = system_of(request)
    where = f"PATCH /v1/tickets/{ticket_id[:128]}"

    def patch() -> dict[str, Any]:
        current = system.directory.ticket(ticket_id)
        if not isinstance(body, dict):
            raise ValidationFailed(f"{where}: the body must be a JSON object", [f"{where}: (body)"])
        merged = dict(current.extra)
        merged.update((k, v) for k, v in current.facts().items() if v is not None)
        merged.update(body)
        return _put_ticket(system, merged, ticket_id, _by(who), where)

    return await _work(patch)


@directory_router.delete("/tickets/{ticket_id}", status_code=204)
def delete_ticket(
    ticket_id: str, request: Request, who: Caller = Depends(PROVISIONING)
) -> Response:
    system = system_of(request)
    system.directory.remove_ticket(ticket_id, f"DELETE /v1/tickets/{ticket_id[:128]}", _by(who))
    return Response(status_code=204)


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None


# -- ticket webhooks -------------------------------------------------------------------


def _hooks(request: Request) -> tuple[SignatureCheck, dict[str, HookMapping]]:
    """The signature check and field mappings, read once per service."""
    found = getattr(request.app.state, "ticket_hooks", None)
    if found is not None:
        return found  # type: ignore[no-any-return]
    system = system_of(request)
    secret = os.environ.get(HOOKS_SECRET_ENV, "").encode()
    if not secret:
        try:
            secret = (system.settings.keys_dir / HOOKS_SECRET_FILE).read_bytes().strip()
        except OSError:
            secret = b""
    if not secret:
        raise FeedNotConfigured(
            "ticket hooks are not set up",
            hint=f"put a shared secret in ${HOOKS_SECRET_ENV} or keys/{HOOKS_SECRET_FILE}",
        )
    section = system.settings.section("hooks")
    window = system.settings.whole("hooks", "window_seconds", DEFAULT_WINDOW)
    try:
        mappings = {
            name: HookMapping.from_section(section.get(name) or {}, name)
            for name in ("jira", "servicenow")
        }
    except ValueError as exc:
        raise FeedNotConfigured(str(exc)) from None
    found = (SignatureCheck(secret, window, StoredDeliveries(system.db)), mappings)
    request.app.state.ticket_hooks = found
    return found


@directory_router.post("/hooks/tickets/{kind}", tags=["directory"])
async def ticket_hook(kind: str, request: Request) -> dict[str, Any]:
    """A ticket system's webhook: authenticated by its HMAC signature (no token), then the
    ticket upserted or removed through the directory, ledgered first, naming the hook."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown hook kind; one of {', '.join(KINDS)}")
    body = await request.body()
    signature = request.headers.get(SIGNATURE_HEADER)
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        # Before anything else: an unsigned call learns nothing, not even whether hooks
        # are set up here.
        raise SignatureRefused(f"send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    check, mappings = _hooks(request)
    check.check(signature, timestamp, body)
    try:
        return await _apply_hook(request, kind, body, mappings)
    except Exception:
        # Not taken: the sender may retry these very bytes (a ledger that was unavailable).
        check.forget(signature)
        raise


async def _apply_hook(
    request: Request, kind: str, body: bytes, mappings: dict[str, HookMapping]
) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None
    system = system_of(request)
    change = parse(kind, payload, mappings, system.policy_pack.vocabulary)
    by = {"hook": kind}
    where = f"hook {kind}"

    def apply() -> dict[str, Any]:
        if change.action == "delete":
            index = system.directory.remove_ticket(change.ticket_id, where, by)
            return {"ticket": change.ticket_id, "removed": True, "authority": index}
        assert change.ticket is not None
        system.directory.merge(
            DirectoryDocument(tickets=(change.ticket,)), source=where, by=by, feed=True
        )
        return {
            "ticket": change.ticket_id,
            "removed": False,
            **_ticket_json(system.directory.ticket(change.ticket_id)),
        }

    return await _work(apply)
