"""SCIM 2.0 users and groups (RFC 7643) as directory principals and their groups.

A SCIM User is a principal: ``userName`` is its id, ``name.formatted`` (or ``displayName``)
its name, the enterprise extension's ``department`` its team and ``manager.value`` its
manager, the primary (else first) address's ``country`` its country, ``active: false`` the
status ``terminated``, ``userType`` its kind (``employee`` when absent). Its role is the
value of ``[scim] role_attribute`` (``title``, the default, ``userType`` or ``roles``: the
primary role's value), unless the principal is in a group ``[scim.role_groups]`` maps to a
role. A SCIM Group is a name in principals' ``groups``: its ``id`` is its ``displayName``
(which never changes) and its members are the principals that hold it.

What the directory does not keep of a SCIM user (emails, phone numbers, …) is kept in the
principal's ``extra`` (not authority: no rule reads it) so that a GET answers what was put.
The facts go through the directory file's own validation (:func:`parse_document`), so a SCIM
user is held to exactly the rules a file's principal is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from scim2_models import (
    Context,
    EnterpriseUser,
    Group,
    GroupMember,
    Meta,
    PatchOp,
    SCIMException,
    User,
)

from custos.directory import Principal
from custos.directory.files import parse_document
from custos.errors import ScimRefused, ValidationFailed
from custos.times import iso

#: The resource a SCIM user is here: the core user with the enterprise extension.
ScimUser = User[EnterpriseUser]
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
#: Where a principal keeps what SCIM said of it that is not a fact (see the module docstring).
EXTRA_KEY = "scim"
ROLE_ATTRIBUTES = ("title", "userType", "roles")
#: Role a user gets when the configured attribute is absent: unknown to every policy pack
#: (so it gets nothing) and plainly not a typo of a real one.
NO_ROLE = "unassigned"
NO_TEAM = "unassigned"
_GROUP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ScimMapping:
    """How SCIM attributes become principal facts (``[scim]`` in config.toml)."""

    role_attribute: str = "title"
    #: SCIM group name → the role its members get (first group by name wins).
    role_groups: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ScimMapping:
        """Read ``[scim]``. Raises :class:`ValueError` naming the key at fault."""
        attribute = section.get("role_attribute", "title")
        if attribute not in ROLE_ATTRIBUTES:
            raise ValueError(f"[scim] role_attribute must be one of {', '.join(ROLE_ATTRIBUTES)}")
        groups = section.get("role_groups", {})
        if not isinstance(groups, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in groups.items()
        ):
            raise ValueError("[scim.role_groups] maps group names to role names (strings)")
        return cls(str(attribute), dict(groups))


def scim_state(principal: Principal) -> dict[str, Any]:
    """What SCIM said of ``principal`` beyond its facts (``{}`` for one loaded from a file)."""
    kept = principal.extra.get(EXTRA_KEY)
    return dict(kept) if isinstance(kept, Mapping) else {}


def is_deleted(principal: Principal) -> bool:
    """Whether SCIM deleted ``principal`` (it stays, terminated, for history)."""
    return bool(scim_state(principal).get("deleted"))


def parse_user(body: Any, context: Context, base: str) -> ScimUser:
    """``body`` validated as a SCIM user for ``context`` (a creation, replacement or the
    resource a PATCH applies to). A manager given without its ``$ref`` (as most identity
    providers send it) is given the reference ``base``/Users/<value>.
    Raises :class:`ScimRefused` (``invalidValue`` / ``invalidSyntax``) naming each field."""
    if not isinstance(body, Mapping):
        raise ScimRefused("a SCIM user must be a JSON object", "invalidSyntax")
    data = dict(body)
    extension = data.get(ENTERPRISE)
    if isinstance(extension, Mapping):
        extension = dict(extension)
        manager = extension.get("manager")
        if isinstance(manager, str):
            manager = {"value": manager}
        if isinstance(manager, Mapping) and manager.get("value") and "$ref" not in manager:
            manager = {**manager, "$ref": f"{base}/Users/{manager['value']}"}
        if manager is not None:
            extension["manager"] = manager
        data[ENTERPRISE] = extension
    try:
        return ScimUser.model_validate(data, scim_ctx=context)
    except ValidationError as exc:
        raise refused(exc) from None


def parse_group(body: Any, context: Context) -> Group:
    """``body`` validated as a SCIM group. Raises :class:`ScimRefused`."""
    if not isinstance(body, Mapping):
        raise ScimRefused("a SCIM group must be a JSON object", "invalidSyntax")
    try:
        group: Group = Group.model_validate(dict(body), scim_ctx=context)
    except ValidationError as exc:
        raise refused(exc) from None
    check_group_name(group.display_name)
    return group


def parse_patch(body: Any, model: type[ScimUser] | type[Group], base: str = "") -> PatchOp[Any]:
    """``body`` validated as a SCIM PatchOp for ``model``. A manager given as a bare id (as
    Microsoft Entra sends it) is taken as ``{"value": id, "$ref": base/Users/id}``. Raises
    :class:`ScimRefused`."""
    if not isinstance(body, Mapping):
        raise ScimRefused("a PatchOp must be a JSON object", "invalidSyntax")
    data = dict(body)
    operations = data.get("Operations")
    if isinstance(operations, list):
        data["Operations"] = [_manager_by_id(op, base) for op in operations]
    try:
        return PatchOp[model].model_validate(  # type: ignore[valid-type]
            data, scim_ctx=Context.RESOURCE_PATCH_REQUEST
        )
    except ValidationError as exc:
        raise refused(exc) from None


def _manager_by_id(operation: Any, base: str) -> Any:
    if (
        isinstance(operation, Mapping)
        and isinstance(operation.get("path"), str)
        and operation["path"].lower().endswith(":manager")
        and isinstance(operation.get("value"), str)
    ):
        value = operation["value"]
        return {**operation, "value": {"value": value, "$ref": f"{base}/Users/{value}"}}
    return operation


def _first_line(text: str) -> str:
    """An error's text as one line: a pydantic error's field and message, not its banner."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("For further", "1 validation"))]
    return "; ".join(lines)[:300] or "invalid"


def apply_patch(patch: PatchOp[Any], resource: ScimUser | Group) -> None:
    """Apply ``patch`` to ``resource`` in place (RFC 7644 §3.5.2). Raises
    :class:`ScimRefused` with the RFC's ``scimType`` (``noTarget``, ``invalidPath``,
    ``mutability``, ``invalidValue``) when an operation cannot apply."""
    try:
        patch.patch(resource)
    except SCIMException as exc:
        raise ScimRefused(_first_line(exc.detail), exc.scim_type) from None
    except ValidationError as exc:
        raise refused(exc) from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # What the library raises for an operation it cannot make sense of; its text names
        # the path, never a stored value.
        raise ScimRefused(
            f"the patch cannot apply: {_first_line(str(exc))}", "invalidValue"
        ) from None


def check_group_name(name: str | None) -> str:
    """``name`` when it can be a principal's group. Raises :class:`ScimRefused`."""
    if not name or not _GROUP_NAME.fullmatch(name):
        raise ScimRefused(
            "displayName: a group name is lower case letters, digits and _ "
            "(it is the name approval rules use)",
            "invalidValue",
        )
    return name


def refused(exc: ValidationError) -> ScimRefused:
    """A pydantic validation error as one SCIM error naming every field (not its value)."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(body)"
        problems.append(
            f"{where}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}"
        )
    return ScimRefused("; ".join(problems) or "invalid SCIM resource", "invalidValue")


def _role_value(user: ScimUser, attribute: str) -> str | None:
    if attribute == "title":
        return user.title
    if attribute == "userType":
        return user.user_type
    roles = user.roles or []
    chosen = next((r for r in roles if r.primary), roles[0] if roles else None)
    return None if chosen is None or chosen.value is None else str(chosen.value)


def role_for(mapping: ScimMapping, groups: Sequence[str], attribute_value: str | None) -> str:
    """The role a SCIM user in ``groups`` gets (see :class:`ScimMapping`)."""
    for group in sorted(groups):
        if group in mapping.role_groups:
            return mapping.role_groups[group]
    return attribute_value or NO_ROLE


def _country(user: ScimUser) -> str | None:
    addresses = user.addresses or []
    chosen = next((a for a in addresses if a.primary), addresses[0] if addresses else None)
    return None if chosen is None else chosen.country


def principal_of(
    user: ScimUser,
    mapping: ScimMapping,
    *,
    current: Principal | None,
    now: datetime | None = None,
) -> Principal:
    """The principal SCIM ``user`` describes, keeping ``current``'s groups (SCIM sets them
    through Groups) and its ``role_since`` unless the role changes. Raises
    :class:`ScimRefused` (``invalidValue``) naming each field the directory refuses."""
    moment = now or datetime.now(UTC)
    enterprise: EnterpriseUser | None = user[EnterpriseUser]
    groups = current.groups if current is not None else ()
    attribute = _role_value(user, mapping.role_attribute)
    role = role_for(mapping, groups, attribute)
    name = (user.name.formatted if user.name else None) or user.display_name or user.user_name
    kept = user.model_dump(mode="json", scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    for key in ("id", "meta", "groups", "schemas"):
        kept.pop(key, None)
    state = {
        "user": kept,
        "role_attribute": attribute,
        "created": scim_state(current).get("created") if current else None,
        "modified": iso(moment),
        "deleted": False,
    }
    state["created"] = state["created"] or iso(moment)
    raw: dict[str, Any] = {
        "id": user.user_name,
        "name": name,
        "kind": user.user_type
        if user.user_type in ("employee", "contractor", "service")
        else "employee",
        "role": role,
        "team": (enterprise.department if enterprise else None) or NO_TEAM,
        "manager": enterprise.manager.value if enterprise and enterprise.manager else None,
        "country": _country(user),
        "status": "terminated" if user.active is False else "active",
        "groups": list(groups),
        EXTRA_KEY: state,
    }
    if current is not None and current.role == role and current.role_since is not None:
        raw["role_since"] = iso(current.role_since)
    else:
        raw["role_since"] = iso(moment)
    if raw["country"] is None:
        raise ScimRefused(
            "addresses: a country is needed (residency rules rest on it)", "invalidValue"
        )
    try:
        document = parse_document({"principals": [raw]}, "SCIM user")
    except ValidationFailed as exc:
        problems = [p.removeprefix("SCIM user: principals[0] ") for p in exc.problems]
        raise ScimRefused("; ".join(problems), "invalidValue") from None
    return document.principals[0]


def with_groups(principal: Principal, groups: Sequence[str], mapping: ScimMapping) -> Principal:
    """``principal`` in exactly ``groups``, its role recomputed when a group maps to one
    (``role_since`` moves when the role does)."""
    state = scim_state(principal)
    attribute = state.get("role_attribute") if state else principal.role
    role = role_for(mapping, groups, attribute if isinstance(attribute, str) else None)
    if role == NO_ROLE and not state:
        role = principal.role  # loaded from a file: its role stands unless a group maps one
    moved = role != principal.role
    return replace(
        principal,
        groups=tuple(sorted(set(groups))),
        role=role,
        role_since=datetime.now(UTC) if moved else principal.role_since,
    )


def user_of(principal: Principal, base: str) -> dict[str, Any]:
    """``principal`` as a SCIM user resource (JSON), its facts over what SCIM last said."""
    state = scim_state(principal)
    data: dict[str, Any] = dict(state.get("user") or {})
    data["userName"] = principal.id
    if not data.get("name") and principal.name:
        data["name"] = {"formatted": principal.name}
    data["active"] = principal.status != "terminated"
    data["userType"] = data.get("userType") or principal.kind
    extension = dict(data.get(ENTERPRISE) or {})
    extension["department"] = principal.team
    if principal.manager:
        extension["manager"] = {
            "value": principal.manager,
            "$ref": f"{base}/Users/{principal.manager}",
        }
    else:
        extension.pop("manager", None)
    data[ENTERPRISE] = extension
    addresses = list(data.get("addresses") or [])
    if not any(isinstance(a, Mapping) and a.get("country") == principal.country for a in addresses):
        addresses = [{"country": principal.country, "primary": True}]
    data["addresses"] = addresses
    data["schemas"] = [User.__schema__, ENTERPRISE]
    user = ScimUser.model_validate(data)
    user.id = principal.id
    user.groups = None
    user.meta = Meta(
        resource_type="User",
        created=_when(state.get("created")),
        last_modified=_when(state.get("modified")),
        location=f"{base}/Users/{principal.id}",
        version=etag(principal),
    )
    body = user.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    if principal.groups:
        body["groups"] = [
            {"value": g, "display": g, "$ref": f"{base}/Groups/{g}"} for g in principal.groups
        ]
    return body


def group_of(name: str, members: Sequence[Principal], base: str) -> dict[str, Any]:
    """The SCIM group ``name`` with ``members`` (JSON)."""
    group: Group = Group(
        id=name,
        display_name=name,
        members=[
            GroupMember(value=p.id, ref=None, display=p.name or None, type="User")
            for p in sorted(members, key=lambda p: p.id)
        ],
        meta=Meta(resource_type="Group", location=f"{base}/Groups/{name}"),
    )
    return group.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


def etag(principal: Principal) -> str:
    """A weak ETag: the ledger index of the entry that last set the principal, which moves
    whenever custos changes it (``W/"0"`` for one never ledgered)."""
    return f'W/"{principal.authority if principal.authority is not None else 0}"'


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


__all__ = [
    "ENTERPRISE",
    "EXTRA_KEY",
    "ScimMapping",
    "ScimUser",
    "apply_patch",
    "check_group_name",
    "etag",
    "group_of",
    "is_deleted",
    "parse_group",
    "parse_patch",
    "parse_user",
    "principal_of",
    "refused",
    "role_for",
    "scim_state",
    "user_of",
    "with_groups",
]
