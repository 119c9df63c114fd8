"""Who answers requests from the command line: with operator_auth, the person whose token is
in $CUSTOS_TOKEN, under the API's role rules; without it, the host's login name and the
claimed --by, logged as unauthenticated. The ledger entry of each answer names the operator."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from custos.access import Custos
from tests.factories import APPROVALS_WORLD, ask, load_org
from tests.operators import Cli, cli, of_type, require_operators

__all__ = ["cli"]


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, APPROVALS_WORLD)
    system.accounts.add("priv", None, ["privacy_officer"], "emp-4001", oidc_subject="i|priv")
    system.accounts.add("approver", None, ["approver"], "emp-3000", oidc_subject="i|appr")
    system.accounts.add("boss", None, ["admin"], "emp-4002", oidc_subject="i|boss")
    return system


def token_of(system: Custos, account: str) -> str:
    return system.accounts.create_token(f"{account}'s laptop", [], account=account)[1]


def test_with_operator_auth_only_the_tokens_person_answers(
    world: Custos, home: Path, cli: Cli
) -> None:
    require_operators(home)
    request_id = ask(world)
    priv, boss = token_of(world, "priv"), token_of(world, "boss")
    before = world.ledger.size()
    answer = ("approvals", "approve", request_id, "--reason", "checked R-77")

    # No token, a wrong one, a token that is no longer live: refused, nothing recorded.
    missing = cli(*answer, "--json")
    assert missing.code == 9
    assert "CUSTOS_TOKEN" in missing.json()["error"]["message"]
    assert cli(*answer, token="cst_0123456789abcdef_" + "x" * 43).code == 9
    assert cli(*answer, token=priv[:-1] + ("A" if priv[-1] != "A" else "B")).code == 9
    # An admin's token: refused by role, whatever principal the account is linked to.
    admin = cli(*answer, "--json", token=boss)
    assert admin.code == 9
    assert admin.json()["error"]["code"] == "forbidden"
    # The privacy officer's token naming someone else.
    other = cli(*answer, "--by", "emp-3000", "--json", token=priv)
    assert other.code == 9
    assert "emp-4001, not emp-3000" in other.json()["error"]["message"]
    assert world.approvals.request(request_id).votes == ()
    assert world.ledger.size() == before

    # The privacy officer's own token: --by may be left out, or name them.
    answered = cli.ok(*answer, token=priv)
    assert [v["approver"] for v in answered["votes"]] == ["emp-4001"]
    (entry,) = of_type(world, before, "approval")
    assert entry["approver"] == "emp-4001"
    assert entry["operator"]["account"] == "priv"
    assert entry["operator"]["principal"] == "emp-4001"
    assert entry["operator"]["authenticated"] is True
    assert entry["operator"]["token"] == priv.split("_")[1]
    assert priv not in str(entry)


def test_a_refused_answer_names_its_operator_too(world: Custos, home: Path, cli: Cli) -> None:
    require_operators(home)
    # emp-3001 asks; their manager emp-3000 may not approve (rule management-chain).
    request_id = ask(world)
    before = world.ledger.size()
    ran = cli(
        "approvals", "approve", request_id, "--reason", "fine", "--json",
        token=token_of(world, "approver"),
    )  # fmt: skip
    assert ran.code == 7
    (refused,) = of_type(world, before, "approval_refused")
    assert refused["operator"]["account"] == "approver"


def test_without_operator_auth_the_login_name_is_recorded_as_unauthenticated(
    world: Custos, cli: Cli
) -> None:
    request_id = ask(world)
    before = world.ledger.size()
    # --by is needed: nobody else says who answers.
    assert cli("approvals", "deny", request_id, "--reason", "no").code == 2
    # A principal with an admin account may not answer, signed in or not.
    admin = cli("approvals", "approve", request_id, "--by", "emp-4002", "--reason", "ok", "--json")
    assert admin.code == 9
    assert "separation of duties" in admin.json()["error"]["message"]
    assert world.ledger.size() == before

    cli.ok("approvals", "approve", request_id, "--by", "emp-4001", "--reason", "checked")
    (entry,) = of_type(world, before, "approval")
    assert entry["operator"] == {
        "account": getpass.getuser(),
        "principal": "emp-4001",
        "authenticated": False,
    }


def test_revoke_and_review_name_their_operator(world: Custos, home: Path, cli: Cli) -> None:
    from tests.factories import take_break_glass

    grant = take_break_glass(world)
    before = world.ledger.size()
    cli.ok("approvals", "review", grant.id, "--by", "emp-4001", "--note", "was real")
    (review,) = of_type(world, before, "break_glass_review")
    assert review["operator"]["authenticated"] is False

    require_operators(home)
    priv = token_of(world, "priv")
    # Reviewing twice as the same person is refused by the workflow, not by who asks.
    assert cli("approvals", "review", grant.id, "--note", "again", token=priv).code == 7
    before = world.ledger.size()
    cli.ok("approvals", "revoke", grant.id, "--reason", "incident over", token=priv)
    (revoked,) = of_type(world, before, "grant_revoked")
    assert revoked["by"] == "emp-4001"
    assert revoked["operator"]["account"] == "priv"
    assert revoked["operator"]["authenticated"] is True
