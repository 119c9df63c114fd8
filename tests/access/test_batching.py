"""The service's batching of concurrent checks and reads, on a real system: every answer is a
decision whose ledger entry is durable (for a read, followed by its release's), a bad request
fails alone, and an unwritable ledger answers nobody."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import pytest
from sqlalchemy import text

from custos.access import Custos
from custos.access.batching import RequestBatcher, ThreadBatcher
from custos.access.read import ReadResult
from custos.errors import CustosError, IntegrityError, LedgerUnavailable, UnknownSubject
from custos.policy import AccessRequest, Decision
from tests.access.test_read import _make_ledger_read_only
from tests.factories import APPROVALS_WORLD, SUPPORT_WORLD, load_org, logins

T = TypeVar("T")
CHECK = AccessRequest("emp-1001", "user-1", "profile", "support", ticket="T-1")


@pytest.fixture
def world(system: Custos) -> Custos:
    load_org(system, SUPPORT_WORLD)
    return system


def batcher_of(system: Custos, *, max_batch: int = 256) -> RequestBatcher[Decision]:
    return RequestBatcher(
        lambda requests, source: system.decide_many(requests, source=source),
        max_batch=max_batch,
    )


async def _submit_all(
    batcher: RequestBatcher[T], requests: list[AccessRequest]
) -> list[T | BaseException]:
    """Submit ``requests`` all at once; each one's outcome or error, in order."""
    return await asyncio.gather(
        *(batcher.submit(r, "api:test") for r in requests), return_exceptions=True
    )


@pytest.mark.parametrize("max_batch", [256, 3])
def test_concurrent_checks_are_each_answered_after_their_entry_is_durable(
    world: Custos, max_batch: int
) -> None:
    before = world.ledger.size()
    answers = asyncio.run(_submit_all(batcher_of(world, max_batch=max_batch), [CHECK] * 40))
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
    answers = asyncio.run(_submit_all(batcher_of(world), [CHECK, bad, CHECK, CHECK]))
    assert isinstance(answers[1], UnknownSubject)
    assert [isinstance(a, Decision) for a in answers] == [True, False, True, True]
    assert world.ledger.size() == before + 3


def test_with_the_ledger_unwritable_nobody_gets_a_decision(world: Custos) -> None:
    _make_ledger_read_only(world)
    before = world.ledger.size()
    answers = asyncio.run(_submit_all(batcher_of(world, max_batch=2), [CHECK] * 7))
    assert all(isinstance(a, LedgerUnavailable) for a in answers)
    assert world.ledger.size() == before


# -- reads ------------------------------------------------------------------------------

COARSE = AccessRequest("emp-5001", "user-1", "ip_history", "security_incident", ticket="T-12")
REFUSED = AccessRequest("emp-5001", "user-1", "ip_history", "security_incident", ticket="T-11")
PRECISE = AccessRequest(
    "emp-3001", "user-1", "ip_history", "trust_safety", ticket="T-11", precision="precise"
)


@pytest.fixture
def readers(system: Custos) -> Custos:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=5), "logins.jsonl")
    opened = system.request_access(
        principal="emp-3001",
        subject="user-1",
        categories=["ip_history"],
        purpose="trust_safety",
        ticket="T-11",
        precision="precise",
        reason="account takeover report",
    )
    system.approvals.approve(opened.id, "emp-3002", "matches the report")
    return system


def swap_ciphertext(system: Custos, source: str, *, onto: str) -> None:
    """Copy one vault record's ciphertext onto another row, as a tamperer with the database
    (but not the keys) could."""
    with system.db.engine.begin() as conn:
        nonce, ciphertext = conn.execute(
            text("SELECT nonce, ciphertext FROM vault_records WHERE id = :id"), {"id": source}
        ).one()
        conn.execute(
            text("UPDATE vault_records SET nonce = :n, ciphertext = :c WHERE id = :id"),
            {"n": nonce, "c": ciphertext, "id": onto},
        )


def read_batcher_of(system: Custos, *, max_batch: int = 256) -> RequestBatcher[ReadResult]:
    return RequestBatcher(
        lambda requests, source: system.read_many(requests, source=source),
        max_batch=max_batch,
    )


def _entry(system: Custos, index: int | None) -> dict[str, object]:
    assert index is not None
    parsed: dict[str, object] = json.loads(system.ledger.entry(index))
    return parsed


@pytest.mark.parametrize("max_batch", [256, 2])
def test_concurrent_reads_each_release_what_a_lone_read_does_after_both_entries(
    readers: Custos, max_batch: int
) -> None:
    alone = {r: readers.read(r) for r in (COARSE, PRECISE, REFUSED)}
    before = readers.ledger.size()
    mix = [COARSE, PRECISE, REFUSED] * 5
    answers = asyncio.run(_submit_all(read_batcher_of(readers, max_batch=max_batch), mix))
    assert all(isinstance(a, ReadResult) for a in answers)
    for request, answer in zip(mix, answers, strict=True):
        assert isinstance(answer, ReadResult)
        assert answer.decision.outcome == alone[request].decision.outcome
        assert answer.records == alone[request].records
        decision = _entry(readers, answer.decision.ledger_index)
        assert decision["id"] == answer.decision.event_id
        assert (decision["type"], decision["source"]) == ("decision", "api:test")
        if request is REFUSED:
            assert answer.release_index is None
            continue
        # The release is logged right after its own decision, with the count released.
        assert answer.decision.ledger_index is not None
        assert answer.release_index == answer.decision.ledger_index + 1
        release = _entry(readers, answer.release_index)
        assert release["decision_id"] == answer.decision.event_id
        assert (release["records"], release["precision"]) == (
            len(answer.records),
            answer.decision.precision,
        )
    # Ten reads released, five refused: 10 * 2 + 5 entries.
    assert readers.ledger.size() == before + 25
    precise = [a for r, a in zip(mix, answers, strict=True) if r is PRECISE]
    assert all(
        isinstance(a, ReadResult) and all(r["ip"].startswith("198.51.100.") for r in a.records)
        for a in precise
    )
    coarse = [a for r, a in zip(mix, answers, strict=True) if r is COARSE]
    assert all(isinstance(a, ReadResult) and "ip" not in a.records[0] for a in coarse)


def test_a_read_whose_ciphertext_was_swapped_fails_alone_after_its_decision_is_logged(
    readers: Custos,
) -> None:
    # Both user-1's logins, in the same week: the same data key, another row.
    swap_ciphertext(readers, "user-1-login-1", onto="user-1-login-2")
    before = readers.ledger.size()
    answers = asyncio.run(_submit_all(read_batcher_of(readers), [COARSE, PRECISE, COARSE]))
    assert isinstance(answers[1], IntegrityError)
    assert "198.51" not in str(answers[1])
    assert [isinstance(a, ReadResult) and len(a.records) == 5 for a in answers] == [
        True,
        False,
        True,
    ]
    # Two coarse reads (decision + release each) and the failed read's decision alone.
    assert readers.ledger.size() == before + 5
    logged = [_entry(readers, i) for i in range(before, before + 5)]
    assert [e["type"] for e in logged] == ["decision", "release", "decision", "decision", "release"]
    assert logged[2]["precision"] == "precise"


def test_a_read_with_an_unknown_id_fails_alone_and_logs_nothing(readers: Custos) -> None:
    bad = AccessRequest("emp-5001", "user-999", "ip_history", "security_incident", ticket="T-12")
    before = readers.ledger.size()
    answers = asyncio.run(_submit_all(read_batcher_of(readers), [COARSE, bad, PRECISE]))
    assert isinstance(answers[1], UnknownSubject)
    assert [isinstance(a, ReadResult) for a in answers] == [True, False, True]
    assert readers.ledger.size() == before + 4


def test_with_the_ledger_unwritable_no_read_returns_anything(readers: Custos) -> None:
    _make_ledger_read_only(readers)
    before = readers.ledger.size()
    answers = asyncio.run(_submit_all(read_batcher_of(readers, max_batch=2), [PRECISE, COARSE] * 3))
    assert all(isinstance(a, LedgerUnavailable) for a in answers)
    assert readers.ledger.size() == before


# -- callers on threads (Custos.decide and Custos.read) ---------------------------------


def _on_threads(calls: list[Callable[[], object]], threads: int = 8) -> list[object]:
    """Run ``calls`` on ``threads`` threads that start together; each outcome or error."""
    start = threading.Barrier(threads)
    shares = [list(range(i, len(calls), threads)) for i in range(threads)]
    outcomes: list[object] = [None] * len(calls)

    def work(share: list[int]) -> None:
        start.wait()
        for i in share:
            try:
                outcomes[i] = calls[i]()
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes[i] = exc

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes


def test_reads_from_threads_run_in_batches_and_each_gets_its_own_answer(readers: Custos) -> None:
    alone = {r: readers.read(r) for r in (COARSE, PRECISE, REFUSED)}
    sizes: list[int] = []

    def read_many(
        requests: Sequence[AccessRequest], source: str
    ) -> Sequence[ReadResult | CustosError]:
        sizes.append(len(requests))
        return readers.read_many(requests, source=source)

    batcher = ThreadBatcher(read_many)
    mix = [COARSE, PRECISE, REFUSED, COARSE] * 8
    before = readers.ledger.size()
    answers = _on_threads([partial(batcher.run, r, "sdk") for r in mix])
    assert sum(sizes) == len(mix)
    assert max(sizes) > 1
    for request, answer in zip(mix, answers, strict=True):
        assert isinstance(answer, ReadResult)
        assert answer.records == alone[request].records
        if answer.release_index is not None:
            assert answer.release_index - 1 == answer.decision.ledger_index
    assert readers.ledger.size() == before + 3 * 16 + 8


def test_custos_read_and_decide_from_threads_fail_alone(readers: Custos) -> None:
    unknown = AccessRequest(
        "emp-5001", "user-999", "ip_history", "security_incident", ticket="T-12"
    )
    swap_ciphertext(readers, "user-1-login-1", onto="user-1-login-2")
    mix = [COARSE, unknown, PRECISE, REFUSED] * 6
    before = readers.ledger.size()
    reads = _on_threads([partial(readers.read, r) for r in mix])
    checks = _on_threads([partial(readers.decide, r) for r in mix])
    for request, read, check in zip(mix, reads, checks, strict=True):
        if request is unknown:
            assert isinstance(read, UnknownSubject)
            assert isinstance(check, UnknownSubject)
        elif request is PRECISE:
            assert isinstance(read, IntegrityError)  # after its decision was logged
            assert isinstance(check, Decision)
            assert check.precision == "precise"
        else:
            assert isinstance(read, ReadResult)
            assert isinstance(check, Decision)
            assert read.decision.outcome == check.outcome
    # Reads: 6 coarse (2 entries), 6 precise failed (1), 6 refused (1); checks: 18.
    assert readers.ledger.size() == before + 12 + 6 + 6 + 18


def test_a_failing_batch_reaches_every_waiter_and_the_next_batch_runs(readers: Custos) -> None:
    sizes: list[int] = []

    def read_many(
        requests: Sequence[AccessRequest], source: str
    ) -> Sequence[ReadResult | CustosError]:
        sizes.append(len(requests))
        if len(sizes) == 1:
            time.sleep(0.1)  # the other threads queue behind this batch, forming the next
        elif len(sizes) == 2:
            raise RuntimeError("a bug in the batch function")
        return readers.read_many(requests, source=source)

    batcher = ThreadBatcher(read_many)
    answers = _on_threads([partial(batcher.run, COARSE, "sdk")] * 8)
    failed = [a for a in answers if isinstance(a, RuntimeError)]
    assert sizes[1] > 1
    assert len(failed) == sizes[1]
    assert all(isinstance(a, ReadResult) for a in answers if a not in failed)
    assert isinstance(batcher.run(COARSE, "sdk"), ReadResult)


def test_a_stop_iteration_from_the_batch_function_reaches_its_waiters(readers: Custos) -> None:
    """asyncio cannot put a StopIteration into a future: unconverted, the waiters would hang."""

    def read_many(
        requests: Sequence[AccessRequest], source: str
    ) -> Sequence[ReadResult | CustosError]:
        raise StopIteration

    async def both() -> list[ReadResult | BaseException]:
        return await asyncio.wait_for(_submit_all(RequestBatcher(read_many), [COARSE] * 3), 10)

    assert all(isinstance(a, RuntimeError) for a in asyncio.run(both()))
    answers = _on_threads([partial(ThreadBatcher(read_many).run, COARSE, "sdk")] * 4, threads=4)
    assert all(isinstance(a, RuntimeError) for a in answers)
