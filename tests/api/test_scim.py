"""SCIM 2.0 (RFC 7643/7644) on a real service: users and groups become principals and their
groups, every change ledgered first; deactivation terminates (and decisions refuse);
malformed bodies get SCIM errors and change nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from custos.config import load_settings
from custos.ledger.entries import AuthorityFactsEntry, parse_bytes
from tests.api.conftest import Service

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM = {"Content-Type": "application/scim+json"}


@pytest.fixture
def idp(service: Service) -> httpx.Client:
    _, secret = service.system.accounts.create_token("okta", ["provisioner"])
    client = service.client(secret)
    client.headers.update(SCIM)
    return client


def dana(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE],
        "userName": "emp-7001",
        "externalId": "00u1abcd",
        "name": {"formatted": "Dana Reyes"},
        "title": "trust_safety_investigator",
        "active": True,
        "emails": [{"value": "dana@example.com", "primary": True}],
        "addresses": [{"type": "work", "country": "US", "primary": True}],
        ENTERPRISE: {
            "department": "trust-safety",
            "employeeNumber": "7001",
            "manager": {"value": "emp-3000"},
        },
    }
    body.update(changes)
    return body


def clean_log(service: Service) -> None:
    """What `custos log verify` checks: the tree, then authority and replay."""
    assert service.system.verify_log().ok
    result = service.system.verify_authority()
    assert [str(f) for f in result.projection.findings] == []
    assert [r.problem for r in result.results if not r.same] == []


def scim_error(reply: httpx.Response, status: int, scim_type: str | None) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    return str(body["detail"])


def test_discovery(idp: httpx.Client) -> None:
    config = idp.get("/scim/v2/ServiceProviderConfig").json()
    assert config["patch"]["supported"] is True
    assert config["filter"]["supported"] is True
    assert config["etag"]["supported"] is True
    kinds = idp.get("/scim/v2/ResourceTypes").json()["Resources"]
    assert {k["endpoint"] for k in kinds} == {"/Users", "/Groups"}
    schemas = {s["id"] for s in idp.get("/scim/v2/Schemas").json()["Resources"]}
    assert schemas == {USER, ENTERPRISE, GROUP}
    assert idp.get(f"/scim/v2/Schemas/{ENTERPRISE}").status_code == 200


def test_a_user_becomes_a_principal_ledgered_first(service: Service, idp: httpx.Client) -> None:
    size = service.system.ledger.size()
    made = idp.post("/scim/v2/Users", json=dana())
    assert made.status_code == 201, made.text
    assert made.headers["content-type"].startswith("application/scim+json")
    assert made.json()["id"] == "emp-7001"
    assert made.json()["meta"]["location"].endswith("/scim/v2/Users/emp-7001")
    person = service.system.directory.principal("emp-7001")
    assert (person.name, person.role, person.team, person.manager, person.country) == (
        "Dana Reyes",
        "trust_safety_investigator",
        "trust-safety",
        "emp-3000",
        "US",
    )
    assert person.status == "active"
    assert person.authority is not None
    assert person.authority >= size
    entry = parse_bytes(service.system.ledger.entry(person.authority))
    assert isinstance(entry, AuthorityFactsEntry)
    assert entry.kind == "principal"
    assert entry.source == "scim: user created"
    assert entry.by is not None
    assert entry.by["roles"] == ["provisioner"]
    # What the directory does not keep as a fact is still answered, but never ledgered.
    assert "dana@example.com" not in service.system.ledger.entry(person.authority).decode()
    got = idp.get("/scim/v2/Users/emp-7001")
    assert got.json()["emails"][0]["value"] == "dana@example.com"
    assert got.json()[ENTERPRISE]["employeeNumber"] == "7001"
    assert got.headers["etag"] == f'W/"{person.authority}"'
    found = idp.get("/scim/v2/Users", params={"filter": 'userName eq "emp-7001"'}).json()
    assert found["totalResults"] == 1
    assert found["Resources"][0]["userName"] == "emp-7001"
    none = idp.get("/scim/v2/Users", params={"filter": 'userName eq "emp-0"'}).json()
    assert none["totalResults"] == 0
    page = idp.get("/scim/v2/Users", params={"startIndex": 2, "count": 3}).json()
    assert page["startIndex"] == 2
    assert page["itemsPerPage"] == 3
    assert page["totalResults"] == len(service.system.directory.principals())
    again = idp.post("/scim/v2/Users", json=dana())
    scim_error(again, 409, "uniqueness")
    clean_log(service)


def test_deactivation_terminates_and_decisions_refuse(service: Service, idp: httpx.Client) -> None:
    check = {"subject": "user-1", "category": "profile", "purpose": "trust_safety"}
    tool = service.client(service.tokens["ts-tool"])
    assert tool.post("/v1/check", json={**check, "ticket": "T-11"}).json()["decision"] == "allow"
    # emp-3001 came from a file: the IdP takes it over with a PUT of the whole user.
    body = dana(userName="emp-3001", title="trust_safety_investigator")
    etag = idp.get("/scim/v2/Users/emp-3001").headers["etag"]
    put = idp.put("/scim/v2/Users/emp-3001", json=body, headers={"If-Match": etag})
    assert put.status_code == 200, put.text
    stale = idp.put("/scim/v2/Users/emp-3001", json=body, headers={"If-Match": etag})
    scim_error(stale, 412, None)
    off = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    patched = idp.patch("/scim/v2/Users/emp-3001", json=off)
    assert patched.status_code == 200, patched.text
    assert patched.json()["active"] is False
    assert service.system.directory.principal("emp-3001").status == "terminated"
    assert tool.post("/v1/check", json={**check, "ticket": "T-11"}).json()["decision"] == "deny"
    tool.close()
    clean_log(service)


def test_patch_add_replace_remove_and_delete(service: Service, idp: httpx.Client) -> None:
    assert idp.post("/scim/v2/Users", json=dana()).status_code == 201
    ops = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "support"},
            {"op": "add", "path": "title", "value": "support_agent"},
            {"op": "remove", "path": "emails"},
        ],
    }
    reply = idp.patch("/scim/v2/Users/emp-7001", json=ops)
    assert reply.status_code == 200, reply.text
    person = service.system.directory.principal("emp-7001")
    assert (person.team, person.role) == ("support", "support_agent")
    assert "emails" not in reply.json()
    assert idp.delete("/scim/v2/Users/emp-7001").status_code == 204
    assert service.system.directory.principal("emp-7001").status == "terminated"
    scim_error(idp.get("/scim/v2/Users/emp-7001"), 404, None)
    listed = idp.get("/scim/v2/Users", params={"filter": 'userName eq "emp-7001"'}).json()
    assert listed["totalResults"] == 0
    clean_log(service)


def test_groups_are_principal_groups(service: Service, idp: httpx.Client) -> None:
    assert idp.post("/scim/v2/Users", json=dana()).status_code == 201
    made = idp.post(
        "/scim/v2/Groups",
        json={"schemas": [GROUP], "displayName": "escalations", "members": [{"value": "emp-7001"}]},
    )
    assert made.status_code == 201, made.text
    assert service.system.directory.principal("emp-7001").groups == ("escalations",)
    add = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": "emp-6001"}]}],
    }
    assert idp.patch("/scim/v2/Groups/escalations", json=add).status_code == 200
    got = idp.get("/scim/v2/Groups/escalations").json()
    assert sorted(m["value"] for m in got["members"]) == ["emp-6001", "emp-7001"]
    remove = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": 'members[value eq "emp-7001"]'}],
    }
    assert idp.patch("/scim/v2/Groups/escalations", json=remove).status_code == 200
    assert service.system.directory.principal("emp-7001").groups == ()
    privacy = idp.get("/scim/v2/Groups", params={"filter": 'displayName eq "privacy_office"'})
    assert privacy.json()["totalResults"] == 1
    assert idp.delete("/scim/v2/Groups/escalations").status_code == 204
    assert service.system.directory.principal("emp-6001").groups == ()
    unknown = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": "emp-404"}]}],
    }
    scim_error(idp.patch("/scim/v2/Groups/escalations", json=unknown), 400, "invalidValue")
    clean_log(service)


def test_malformed_bodies_get_scim_errors_and_change_nothing(
    service: Service, idp: httpx.Client
) -> None:
    size = service.system.ledger.size()
    no_name = dana()
    del no_name["userName"]
    assert "userName" in scim_error(idp.post("/scim/v2/Users", json=no_name), 400, "invalidValue")
    wrong_type = dana(active="sometimes")
    assert "active" in scim_error(idp.post("/scim/v2/Users", json=wrong_type), 400, "invalidValue")
    no_country = dana(addresses=[])
    assert "country" in scim_error(idp.post("/scim/v2/Users", json=no_country), 400, "invalidValue")
    boss = dana(**{ENTERPRISE: {"department": "x", "manager": {"value": "emp-404"}}})
    assert "emp-404" in scim_error(idp.post("/scim/v2/Users", json=boss), 400, "invalidValue")
    bad_role = dana(title="Chief Snoop!")
    assert "role" in scim_error(idp.post("/scim/v2/Users", json=bad_role), 400, "invalidValue")
    raw = idp.post("/scim/v2/Users", content=b"{not json")
    scim_error(raw, 400, "invalidSyntax")
    bad_filter = idp.get("/scim/v2/Users", params={"filter": "userName eq"})
    scim_error(bad_filter, 400, "invalidFilter")
    bad_op = {"schemas": [PATCH], "Operations": [{"op": "frobnicate", "path": "title"}]}
    scim_error(idp.patch("/scim/v2/Users/emp-3001", json=bad_op), 400, "invalidValue")
    rename = dana(userName="emp-3001")
    rename["userName"] = "emp-3009"
    scim_error(idp.put("/scim/v2/Users/emp-3001", json=rename), 400, "mutability")
    scim_error(idp.get("/scim/v2/Users/emp-404"), 404, None)
    group = {"schemas": [GROUP], "displayName": "Privacy Office"}
    scim_error(idp.post("/scim/v2/Groups", json=group), 400, "invalidValue")
    twice = idp.post("/scim/v2/Users", content=b'{"userName": "a", "userName": "b"}', headers=SCIM)
    scim_error(twice, 422, "invalidSyntax")
    form = idp.post("/scim/v2/Users", content=b"userName=a", headers={"Content-Type": "text/plain"})
    scim_error(form, 415, None)
    with httpx.Client(base_url=str(idp.base_url)) as anonymous:
        scim_error(anonymous.get("/scim/v2/Users"), 401, None)
    assert service.system.ledger.size() == size


def test_a_group_mapped_to_a_role_gives_it_through_config(
    service: Service, idp: httpx.Client
) -> None:
    home = service.system.settings.home
    (home / "config.toml").write_text(
        '[scim]\nrole_attribute = "title"\n[scim.role_groups]\nfraud_team = "fraud_analyst"\n',
        encoding="utf-8",
    )
    service.system.settings = load_settings(home)
    assert idp.post("/scim/v2/Users", json=dana()).status_code == 201
    joined = idp.post(
        "/scim/v2/Groups",
        json={"schemas": [GROUP], "displayName": "fraud_team", "members": [{"value": "emp-7001"}]},
    )
    assert joined.status_code == 201, joined.text
    person = service.system.directory.principal("emp-7001")
    assert (person.role, person.groups) == ("fraud_analyst", ("fraud_team",))
    assert idp.delete("/scim/v2/Groups/fraud_team").status_code == 204
    assert service.system.directory.principal("emp-7001").role == "trust_safety_investigator"
    clean_log(service)
