"""The parsers of on-behalf-of: assertions, exchanged tokens and the ``[on_behalf]`` table.

Whatever arrives in ``X-Custos-On-Behalf-Of`` or as a bearer token, the answer is an
:class:`AssertionRefused` with its own message, never another exception.
(tests/api/test_on_behalf.py runs the whole path against a JWKS served on loopback.)
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.access import Custos
from custos.accounts.onbehalf import (
    EXCHANGED_PREFIX,
    AssertionVerifier,
    KeySet,
    OnBehalf,
    OnBehalfSettings,
)
from custos.errors import AssertionRefused, ConfigurationError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SETTINGS = OnBehalfSettings(
    jwks_url=f"http://127.0.0.1:{_closed_port()}/jwks.json",
    issuer="https://idp.example.test",
    audience="custos",
    timeout=0.5,
)
B64 = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(lambda a, b, c: f"{a}.{b}.{c}", B64, B64, B64),
        st.builds(
            lambda b, c: f"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.{b}.{c}", B64, B64
        ),  # {"alg":"RS256","kid":"k"}
    )
)
def test_any_assertion_is_refused_with_a_reason(text: str) -> None:
    verifier = AssertionVerifier(SETTINGS, KeySet(SETTINGS.jwks_url, timeout=0.5))
    with pytest.raises(AssertionRefused) as refused:
        verifier.principal(text)
    assert refused.value.message.startswith("the assertion") or "identity provider" in (
        refused.value.message
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.text(max_size=200), st.builds(lambda t: EXCHANGED_PREFIX + t, st.text())))
def test_any_exchanged_token_but_custos_own_is_refused(module_system: Custos, text: str) -> None:
    resolver = OnBehalf(
        SETTINGS, module_system.accounts, lambda _: ("active", "employee"), b"k" * 32
    )
    with pytest.raises(AssertionRefused, match="invalid exchanged token"):
        resolver.exchanged(EXCHANGED_PREFIX + text)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"issuer": "i", "audience": "a"}, "missing jwks_url"),
        ({"jwks_url": "http://idp.example.test/k", "issuer": "i", "audience": "a"}, "https"),
        ({"jwks_url": "https://u@idp.example.test/k", "issuer": "i", "audience": "a"}, "https"),
        (
            {"jwks_url": "https://idp.example.test/k", "issuer": "i", "audience": "a",
             "leeway": "30"},
            "leeway must be a number",
        ),
        (
            {"jwks_url": "https://idp.example.test/k", "issuer": "i", "audience": "a",
             "claim": ""},
            "claim must name",
        ),
    ],
)  # fmt: skip
def test_a_bad_configuration_is_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OnBehalfSettings.from_config(config)


def test_a_claim_pattern_maps_an_email_to_a_principal_id() -> None:
    found = OnBehalfSettings.from_config(
        {"jwks_url": "https://idp.example.test/k", "issuer": "i", "audience": "a",
         "claim": "email", "claim_pattern": r"(?P<id>[a-z0-9-]+)@corp\.example"}
    )  # fmt: skip
    assert found is not None
    assert found.claim_pattern is not None
    matched = found.claim_pattern.fullmatch("emp-1@corp.example")
    assert matched is not None
    assert matched.group("id") == "emp-1"
    for bad, message in (("(", "not a regular expression"), ("[a-z]+", "named group id")):
        with pytest.raises(ConfigurationError, match=message):
            OnBehalfSettings.from_config(
                {"jwks_url": "https://idp.example.test/k", "issuer": "i", "audience": "a",
                 "claim_pattern": bad}
            )  # fmt: skip


def test_no_configuration_is_no_on_behalf() -> None:
    assert OnBehalfSettings.from_config({}) is None
    found = OnBehalfSettings.from_config(
        {"jwks_url": "https://idp.example.test/k", "issuer": "i", "audience": "a", "claim": "email"}
    )
    assert found is not None
    assert (found.claim, found.leeway, found.exchange_seconds) == ("email", 30.0, 300.0)
