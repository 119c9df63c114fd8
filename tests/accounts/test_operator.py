"""Accounts and tokens change only after the ledger names the change and who made it; a
person's token is theirs (made with their password) and acts as their account."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos, acts
from custos.accounts import Accounts, Operator
from custos.errors import AuthenticationFailed, LedgerUnavailable, UnknownAccount
from tests.factories import APPROVALS_WORLD, load_org
from tests.operators import Cli, cli, of_type, require_operators

__all__ = ["cli"]

PASSWORD = "correct horse battery"


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, APPROVALS_WORLD)
    return system


class BrokenLedger:
    """A ledger whose storage is gone (fault injection): every append fails."""

    def append(self, entry: Any) -> Any:
        raise LedgerUnavailable("the ledger is unavailable: disk gone")

    append_many = append


def test_nothing_changes_when_the_ledger_cannot_name_the_change(world: Custos) -> None:
    someone = Operator.claimed("ops", None)
    _, kept = world.accounts.create_token("kept", ["auditor"])
    world.accounts.add("pat", PASSWORD, ["auditor"])
    tokens = len(world.accounts.tokens())
    world.__dict__["ledger"] = BrokenLedger()
    with pytest.raises(LedgerUnavailable):
        acts.add_account(world, someone, "sam", PASSWORD, ["auditor"])
    with pytest.raises(LedgerUnavailable):
        acts.create_token(world, someone, "ci", ["auditor"])
    with pytest.raises(LedgerUnavailable):
        acts.revoke_token(world, someone, kept.split("_")[1])
    with pytest.raises(LedgerUnavailable):
        acts.disable_account(world, someone, "pat")
    with pytest.raises(UnknownAccount):
        world.accounts.get("sam")
    assert len(world.accounts.tokens()) == tokens
    assert world.accounts.verify_token(kept).revoked is None
    assert world.accounts.get("pat").disabled is False


def test_a_refused_change_is_not_logged(world: Custos) -> None:
    someone = Operator.claimed("ops", None)
    before = world.ledger.size()
    with pytest.raises(Exception, match="admin may not also"):
        acts.add_account(world, someone, "sam", PASSWORD, ["admin", "approver"], "emp-4001")
    with pytest.raises(Exception, match="tool token acts as a principal"):
        acts.create_token(world, someone, "ci", ["tool"])
    assert world.ledger.size() == before


def test_the_cli_logs_accounts_and_tokens_before_they_count(
    world: Custos, home: Path, cli: Cli
) -> None:
    before = world.ledger.size()
    cli.ok("users", "add", "priv", "--role", "privacy_officer", "--principal", "emp-4001",
           "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    (added,) = of_type(world, before, "account_added")
    assert added["account"] == "priv"
    assert added["roles"] == ["privacy_officer"]
    assert added["operator"]["authenticated"] is False
    assert PASSWORD not in str(added)

    # A person's own token, made with their password: it acts as their account.
    assert cli("users", "token", "priv", "--name", "laptop", "--password-stdin",
               stdin="wrong password!\n").code == 9  # fmt: skip
    made = cli.ok("users", "token", "priv", "--name", "laptop", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    token = world.accounts.verify_token(made["token"])
    assert (token.account, token.principal, token.roles) == (
        "priv",
        "emp-4001",
        ("privacy_officer",),
    )
    (created,) = of_type(world, before, "token_created")
    assert created["token"] == token.id
    assert created["account"] == "priv"
    assert created["operator"] == {
        "account": "priv",
        "principal": "emp-4001",
        "authenticated": True,
        "roles": ["privacy_officer"],
    }
    assert made["token"] not in str(created)

    cli.ok("users", "disable", "priv")
    (disabled,) = of_type(world, before, "account_disabled")
    assert disabled["account"] == "priv"
    # A disabled account's tokens stop (at once in a process that has not just seen them).
    with pytest.raises(AuthenticationFailed):
        Accounts(world.db).verify_token(made["token"])

    tool = cli.ok("tokens", "create", "--name", "console", "--role", "tool",
                  "--principal", "emp-6001")  # fmt: skip
    cli.ok("tokens", "revoke", tool["id"])
    (revoked,) = of_type(world, before, "token_revoked")
    assert revoked["token"] == tool["id"]
    assert of_type(world, before, "token_created")[1]["principal"] == "emp-6001"


def test_with_operator_auth_accounts_and_tokens_are_the_admins(
    world: Custos, home: Path, cli: Cli
) -> None:
    require_operators(home)
    add_admin = ("users", "add", "boss", "--role", "admin", "--password-stdin")
    # No admin yet: the first is made on the host, recorded as unauthenticated.
    cli.ok(*add_admin, stdin=PASSWORD + "\n")
    boss = cli.ok("users", "token", "boss", "--name", "t", "--password-stdin",
                  stdin=PASSWORD + "\n")["token"]  # fmt: skip
    # From now on, only with an admin's token.
    before = world.ledger.size()
    add_priv = ("users", "add", "priv", "--role", "privacy_officer", "--principal", "emp-4001",
                "--password-stdin")  # fmt: skip
    assert cli(*add_priv, stdin=PASSWORD + "\n").code == 9
    assert cli("users", "add", "boss2", "--role", "admin", "--password-stdin",
               stdin=PASSWORD + "\n").code == 9  # fmt: skip
    assert cli("tokens", "create", "--name", "ci", "--role", "auditor").code == 9
    assert world.ledger.size() == before
    cli.ok(*add_priv, token=boss, stdin=PASSWORD + "\n")
    (added,) = of_type(world, before, "account_added")
    assert added["operator"]["account"] == "boss"
    assert added["operator"]["authenticated"] is True

    priv = cli.ok("users", "token", "priv", "--name", "t", "--password-stdin",
                  stdin=PASSWORD + "\n")  # fmt: skip
    # Not an admin: cannot make tokens or disable accounts, may revoke their own token.
    assert cli("tokens", "create", "--name", "ci", "--role", "auditor",
               token=priv["token"]).code == 9  # fmt: skip
    assert cli("users", "disable", "boss", token=priv["token"]).code == 9
    ci = cli.ok("tokens", "create", "--name", "ci", "--role", "auditor", token=boss)
    assert cli("tokens", "revoke", ci["id"], token=priv["token"]).code == 9
    cli.ok("tokens", "revoke", priv["id"], token=priv["token"])
    assert world.accounts.get("boss").disabled is False
    assert world.accounts.token(ci["id"]).revoked is None
