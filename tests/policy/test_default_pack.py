"""The default policy pack, tested as data: every case of its table, one by one and batched."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.policy import AccessRequest, AggregateRequest, PolicyEngine, load_pack
from custos.policy.cases import PolicyTable, read_table, run_table

TABLE_PATH = Path(str(resources.files("custos.policy") / "pack" / "cases.yaml"))
TABLE = read_table(TABLE_PATH)
ENGINE = PolicyEngine(load_pack())
RESULTS = {r.name: r for r in run_table(TABLE, ENGINE)}


@pytest.mark.parametrize("name", [case.name for case in TABLE.spec.cases])
def test_case(name: str) -> None:
    result = RESULTS[name]
    assert result.passed, "; ".join(result.problems)


def _requests(table: PolicyTable) -> list[AccessRequest]:
    return [
        AccessRequest(
            **case.request.model_dump(exclude={"time"}),
            time=case.request.time or table.spec.now,
        )
        for case in table.spec.cases
        if case.request.action != "aggregate"
    ]


REQUESTS = _requests(TABLE)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(range(len(REQUESTS))), min_size=2, max_size=30))
def test_batched_decisions_equal_single_decisions(indexes: list[int]) -> None:
    chosen = [REQUESTS[i] for i in indexes]
    batched = ENGINE.decide_many([(r, TABLE.facts(r)) for r in chosen])
    single = [ENGINE.decide(r, TABLE.facts(r)) for r in chosen]
    assert batched == single


def test_the_2022_case_explains_source_protection_in_words() -> None:
    decision = RESULTS[TABLE.spec.cases[0].name].decision
    assert decision is not None
    assert decision.outcome == "deny"
    assert "source protection" in decision.explanation
    assert decision.explanation.startswith("Denied: ")


def test_obligations_come_from_annotations() -> None:
    pack = load_pack()
    two_person = pack.policies["protected-two-person"]
    assert (two_person.remedy, two_person.approvals, two_person.approver_groups) == (
        "approval",
        2,
        ("privacy_office",),
    )
    assert pack.policies["break-glass"].review_required
    assert pack.coarse_by_default == {"ip_history", "location", "device"}
    assert pack.policies["source-protection"].remedy is None


def test_requests_and_entities_custos_builds_match_the_schema() -> None:
    """The engine skips per-request schema validation for speed; this keeps it honest."""
    strict = PolicyEngine(load_pack(), validate_requests=True)
    for request in REQUESTS:
        facts = TABLE.facts(request)
        for precision in ("coarse", "precise"):
            asked = strict._ask(request, facts, precision)
            cedarpy.Entities.from_json_str(json.dumps(asked.entities), strict.pack.schema)
        assert strict.decide(request, facts) == ENGINE.decide(request, facts)


def test_aggregate_requests_match_the_schema_and_batch_like_single() -> None:
    strict = PolicyEngine(load_pack(), validate_requests=True)
    principals = {p.id: p for p in TABLE.world.principals}
    asked = [
        (
            AggregateRequest(
                principal=c.request.principal,
                category=c.request.category,
                purpose=c.request.purpose,
                dataset="app",
                time=TABLE.spec.now,
            ),
            principals[c.request.principal],
        )
        for c in TABLE.spec.cases
        if c.request.action == "aggregate"
    ]
    assert len(asked) >= 5
    for request, principal in asked:
        entities = strict._ask_aggregate(request, principal).entities
        cedarpy.Entities.from_json_str(json.dumps(entities), strict.pack.schema)
    batched = ENGINE.decide_aggregate(asked)
    assert batched == [strict.decide_aggregate([one])[0] for one in asked]
    assert all(d.precision is None and d.approvals is None for d in batched)
