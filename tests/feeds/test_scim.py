"""SCIM users as principals: the mapping, role from an attribute or a group, and any body is
a principal or a ScimRefused naming fields (never another exception)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scim2_models import Context

from custos.errors import ScimRefused
from custos.feeds.scim import (
    ENTERPRISE,
    ScimMapping,
    ScimUser,
    apply_patch,
    parse_patch,
    parse_user,
    principal_of,
    user_of,
    with_groups,
)

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BASE = "https://custos.example/scim/v2"


def body(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE],
        "userName": "emp-1",
        "name": {"formatted": "Ana Lima"},
        "title": "support_agent",
        "addresses": [{"country": "DE"}, {"country": "US", "primary": True}],
        ENTERPRISE: {"department": "support", "manager": "emp-0"},
    }
    data.update(changes)
    return data


def test_the_mapping() -> None:
    user = parse_user(body(), Context.RESOURCE_CREATION_REQUEST, BASE)
    person = principal_of(user, ScimMapping(), current=None)
    assert (person.id, person.name, person.role, person.team) == (
        "emp-1",
        "Ana Lima",
        "support_agent",
        "support",
    )
    assert (person.manager, person.country, person.status, person.kind) == (
        "emp-0",
        "US",
        "active",
        "employee",
    )
    off = parse_user(body(active=False), Context.RESOURCE_CREATION_REQUEST, BASE)
    assert principal_of(off, ScimMapping(), current=None).status == "terminated"
    back = user_of(person, BASE)
    assert back["userName"] == "emp-1"
    assert back[ENTERPRISE]["manager"]["value"] == "emp-0"
    assert back["active"] is True


def test_role_from_an_attribute_or_a_group() -> None:
    by_roles = ScimMapping(role_attribute="roles", role_groups={"privacy": "privacy_officer"})
    user = parse_user(
        body(roles=[{"value": "fraud_analyst", "primary": True}, {"value": "engineer"}]),
        Context.RESOURCE_CREATION_REQUEST,
        BASE,
    )
    person = principal_of(user, by_roles, current=None)
    assert person.role == "fraud_analyst"
    promoted = with_groups(person, ["privacy"], by_roles)
    assert (promoted.role, promoted.groups) == ("privacy_officer", ("privacy",))
    assert with_groups(promoted, [], by_roles).role == "fraud_analyst"
    with pytest.raises(ValueError, match="role_attribute"):
        ScimMapping.from_section({"role_attribute": "nickName"})


FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "userName": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        "title": st.one_of(st.text(max_size=20), st.none(), st.booleans()),
        "active": st.one_of(st.booleans(), st.text(max_size=5), st.none()),
        "userType": st.sampled_from(["employee", "contractor", "robot", ""]),
        "addresses": st.lists(
            st.fixed_dictionaries(
                {}, optional={"country": st.text(max_size=4), "primary": st.booleans()}
            ),
            max_size=3,
        ),
        ENTERPRISE: st.fixed_dictionaries(
            {},
            optional={
                "department": st.one_of(st.text(max_size=10), st.none()),
                "manager": st.one_of(
                    st.text(max_size=8), st.fixed_dictionaries({"value": st.text(max_size=8)})
                ),
            },
        ),
    },
)


@settings(max_examples=300, deadline=None)
@given(fields=FIELDS)
def test_any_body_is_a_principal_or_a_named_refusal(fields: dict[str, Any]) -> None:
    data = {"schemas": [USER, ENTERPRISE], **fields}
    try:
        user = parse_user(data, Context.RESOURCE_CREATION_REQUEST, BASE)
        person = principal_of(user, ScimMapping(), current=None)
    except ScimRefused as exc:
        kind, message = exc.scim_type, exc.message
        assert kind in ("invalidValue", "invalidSyntax")
        assert message
        return
    assert person.id == fields["userName"]
    assert person.status == ("terminated" if fields.get("active") is False else "active")


PATHS = st.sampled_from(
    [
        None,
        "title",
        "active",
        "userName",
        "emails",
        'emails[type eq "work"].value',
        "name.formatted",
        "addresses",
        f"{ENTERPRISE}:department",
        f"{ENTERPRISE}:manager",
        "members",
        "nosuch",
        "",
        "[",
    ]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.integers(),
    st.lists(st.fixed_dictionaries({"value": st.text(max_size=8)}), max_size=2),
    st.fixed_dictionaries({}, optional={"title": st.text(max_size=8), "active": st.booleans()}),
)
OPERATION = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "replace", "remove", "Replace", "frob"])},
    optional={"path": PATHS, "value": VALUES},
)


@settings(max_examples=300, deadline=None)
@given(operations=st.lists(OPERATION, min_size=0, max_size=3))
def test_any_patch_applies_or_is_a_named_refusal(operations: list[dict[str, Any]]) -> None:
    user = parse_user(body(), Context.RESOURCE_REPLACEMENT_REQUEST, BASE)
    data = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
    try:
        apply_patch(parse_patch(data, ScimUser), user)
        person = principal_of(user, ScimMapping(), current=None)
    except ScimRefused as exc:
        message = exc.message
        assert message
        assert "Traceback" not in message
        return
    assert person.id == user.user_name


def test_entra_style_patches() -> None:
    """Microsoft Entra sends booleans as strings, the manager as a bare id, and attributes
    without a path."""
    user = parse_user(body(), Context.RESOURCE_REPLACEMENT_REQUEST, BASE)
    operations = [
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Replace", "path": f"{ENTERPRISE}:manager", "value": "emp-9"},
        {"op": "Add", "value": {f"{ENTERPRISE}:department": "sales"}},
    ]
    patch = parse_patch(
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations},
        ScimUser,
        BASE,
    )
    apply_patch(patch, user)
    person = principal_of(user, ScimMapping(), current=None)
    assert (person.status, person.manager, person.team) == ("terminated", "emp-9", "sales")
