"""Accounts on a real database: who may hold which roles, and how sign-in fails."""

from __future__ import annotations

import pytest

from custos.access import Custos
from custos.errors import AuthenticationFailed, InvalidInput

PASSWORD = "correct horse battery staple"


@pytest.mark.parametrize("role", ["investigator", "approver", "privacy_officer"])
def test_roles_whose_rules_need_to_know_who_acts_need_a_principal(
    system: Custos, role: str
) -> None:
    with pytest.raises(InvalidInput, match="must be linked to a principal"):
        system.accounts.add("someone", PASSWORD, [role])
    linked = system.accounts.add("someone", PASSWORD, [role], "emp-1")
    assert linked.principal == "emp-1"


def test_an_sso_only_account_refuses_passwords_like_an_unknown_name(system: Custos) -> None:
    system.accounts.add("sso", None, ["auditor"], oidc_subject="https://idp.example|42")
    for username, password in (("sso", "!"), ("sso", ""), ("nobody", "!")):
        with pytest.raises(AuthenticationFailed) as refused:
            system.accounts.authenticate(username, password)
        assert refused.value.message == "wrong username or password"


@pytest.mark.parametrize("other", ["auditor", "investigator"])
def test_a_tool_token_cannot_also_oversee(system: Custos, other: str) -> None:
    with pytest.raises(InvalidInput, match="a tool token may hold no other role"):
        system.accounts.create_token("reader", ["tool", other], "emp-1")
    token, _ = system.accounts.create_token("reader", ["tool"], "emp-1")
    assert token.roles == ("tool",)
