"""Schemathesis against the running service's own OpenAPI schema: whatever it sends, the
service never answers with a server error, with a tool's token or an auditor's."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from custos.access import Custos
from tests.api.conftest import populate, run_service

EXAMPLES = 25


def fuzz_service(url: str, headers: dict[str, str]) -> int:
    """Fuzz every operation of the schema at ``url``; returns how many cases were sent."""
    schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    calls = 0
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        fuzz()
    return calls


@pytest.mark.parametrize("credential", ["ts-tool", "monitor"])
def test_no_server_errors(system: Custos, credential: str) -> None:
    tokens = populate(system)
    for url, app in run_service(system):
        # The fuzzer must reach the handlers, not the rate limiter.
        app.state.rate_limiter.rate = app.state.rate_limiter.burst = 1e9
        calls = fuzz_service(url, {"Authorization": f"Bearer {tokens[credential]}"})
        assert calls >= 20 * 5  # the fuzzer really ran
