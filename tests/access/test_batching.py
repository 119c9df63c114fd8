"""The service's batching of concurrent checks, on a real system: every answer is a decision
whose ledger entry is durable, a bad request fails alone, and an unwritable ledger answers
nobody."""

from __future__ import annotations

import asyncio
import json

import pytest

from custos.access import Custos
from custos.access.batching import DecisionBatcher
from custos.errors import LedgerUnavailable, UnknownSubject
from custos.policy import AccessRequest, Decision
from tests.access.test_read import _make_ledger_read_only
from tests.factories import SUPPORT_WORLD, load_org

CHECK = AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    return system


def batcher_of(system: Custos, *, max_batch: int = 256) -> DecisionBatcher:
    return DecisionBatcher(
        lambda requests, source: system.decide_many(requests, source=source),
        max_batch=max_batch,
    )


async def _check_all(
    batcher: DecisionBatcher, requests: list[AccessRequest]
) -> list[Decision | BaseException]:
    return await asyncio.gather(
        *(batcher.decide(r, "api:test") for r in requests), return_exceptions=True
    )


@pytest.mark.parametrize("max_batch", [256, 3])
def test_concurrent_checks_are_each_answered_after_their_entry_is_durable(
    world: Custos, max_batch: int
) -> None:
    before = world.ledger.size()
    answers = asyncio.run(_check_all(batcher_of(world, max_batch=max_batch), [CHECK] * 40))
    assert all(isinstance(a, Decision) and a.allowed for a in answers)
    decisions = [a for a in answers if isinstance(a, Decision)]
    indexes = [d.ledger_index for d in decisions]
    assert len(set(indexes)) == 40
    assert world.ledger.size() == before + 40
    for decision in decisions:
        assert decision.ledger_index is not None
        entry = json.loads(world.ledger.entry(decision.ledger_index))
        assert entry["id"] == decision.event_id
        assert entry["source"] == "api:test"


def test_a_request_with_an_unknown_id_fails_alone(world: Custos) -> None:
    bad = AccessRequest("emp-1001", "user-999", "profile", "support", ticket="T-1")
    before = world.ledger.size()
    answers = asyncio.run(_check_all(batcher_of(world), [CHECK, bad, CHECK, CHECK]))
    assert isinstance(answers[1], UnknownSubject)
    assert [isinstance(a, Decision) for a in answers] == [True, False, True, True]
    assert world.ledger.size() == before + 3


def test_with_the_ledger_unwritable_nobody_gets_a_decision(world: Custos) -> None:
    _make_ledger_read_only(world)
    before = world.ledger.size()
    answers = asyncio.run(_check_all(batcher_of(world, max_batch=2), [CHECK] * 7))
    assert all(isinstance(a, LedgerUnavailable) for a in answers)
    assert world.ledger.size() == before
