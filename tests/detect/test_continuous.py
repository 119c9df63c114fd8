"""The lease on detection runs, when a run is due, and alerts raised once and announced once,
with when their evidence arrived — on the real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from custos.access import Custos
from custos.detect import DetectConfig
from custos.detect.continuous import NO_RUN, DetectionLease, due
from custos.errors import ConfigurationError
from tests.factories import APPROVALS_WORLD, load_org

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def misuse(n: int, principal: str = "emp-2001", day: int = 7) -> list[dict[str, Any]]:
    """Unexplained reads of a journalist's IP history: a critical alert on their own."""
    return [
        {
            "id": f"{principal}-m{n}-{i}",
            "time": f"2026-12-{day:02d}T10:0{i}:00Z",
            "principal": principal,
            "action": "read",
            "subject": "user-42",
            "category": "ip_history",
            "purpose": "internal_investigation",
            "decision": "allow",
        }
        for i in range(2)
    ]


def test_one_holder_at_a_time_and_an_expired_lease_is_taken_over(system: Custos) -> None:
    first = DetectionLease(system.db, 10, holder="w1")
    second = DetectionLease(system.db, 10, holder="w2")
    assert first.acquire(T0)
    assert not second.acquire(T0 + timedelta(seconds=5))
    assert first.acquire(T0 + timedelta(seconds=5))  # ours already: extended
    assert first.renew(T0 + timedelta(seconds=9))
    held = first.status()
    assert (held.holder, held.expires) == ("w1", T0 + timedelta(seconds=19))
    # w1 dies: nobody renews, and once the lease expires w2 takes it.
    assert not second.acquire(T0 + timedelta(seconds=18))
    assert second.acquire(T0 + timedelta(seconds=19))
    # w1 wakes up: it can neither renew nor record its run, and says so.
    assert not first.renew(T0 + timedelta(seconds=20))
    finished = T0 + timedelta(seconds=21)
    assert not first.finish(started=T0, finished=finished, lag=1.0, seen=5, raised=1)
    assert not first.fail()
    assert second.finish(
        started=T0 + timedelta(seconds=19), finished=finished, lag=2.5, seen=7, raised=3
    )
    status = second.status()
    assert (status.holder, status.expires, status.seen, status.raised, status.runs) == (
        None,
        None,
        7,
        3,
        1,
    )
    assert (status.duration, status.lag, status.finished) == (2.0, 2.5, finished)
    assert first.acquire(finished)
    assert first.fail()
    assert first.status().failures == 1


def test_a_run_is_due_after_the_interval_or_a_burst_never_while_another_runs() -> None:
    config = DetectConfig(interval=300, burst_events=100)
    assert due(NO_RUN, config, 0, T0)  # never ran
    done = NO_RUN.__class__(None, None, T0, T0, 1.0, 0.5, 10, 0, 1, 0)
    assert not due(done, config, 99, T0 + timedelta(seconds=299))
    assert due(done, config, 100, T0 + timedelta(seconds=1))  # a burst
    assert due(done, config, 0, T0 + timedelta(seconds=300))
    running = NO_RUN.__class__("w2", T0 + timedelta(seconds=60), None, None, None, None, 0, 0, 0, 0)
    assert not due(running, config, 10_000, T0)
    assert due(running, config, 0, T0, holder="w2")  # the holder itself may go on
    assert due(running, config, 0, T0 + timedelta(seconds=60))  # expired


@pytest.mark.parametrize("key", ["interval", "lease_seconds", "burst_events"])
def test_schedule_settings_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        DetectConfig.from_section({key: 0})
    assert getattr(DetectConfig.from_section({key: 7}), key) == 7


def test_an_alert_is_announced_once_with_its_time_to_alert(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    before = datetime.now(UTC)
    system.events.append(misuse(1))
    stored = datetime.now(UTC)
    first = system.detect()
    assert first.raised == len(first.alerts) >= 1
    (alert,) = [a for a in first.alerts if a.rule == "protected_subject_access"]
    assert alert.evidence_arrived is not None
    assert before <= alert.evidence_arrived <= stored
    assert alert.raised is not None
    assert alert.raised >= alert.evidence_arrived
    body = alert.to_dict()
    assert body["time_to_alert"] == pytest.approx(
        (alert.raised - alert.evidence_arrived).total_seconds()
    )
    assert body["raised"]
    assert body["evidence_arrived"]
    # Seen again (and again after more evidence): updated, never raised or announced again.
    system.events.append(misuse(2))
    again = system.detect()
    assert again.raised == 0
    assert system.casebook.alert(alert.id).raised == alert.raised
    notes = [n for n in system.approvals.outbox.notifications() if n["kind"] == "alert"]
    assert sorted(n["id"] for n in notes) == sorted(f"alert-{a.id}" for a in first.alerts)
    (note,) = [n for n in notes if n["id"] == f"alert-{alert.id}"]
    assert note["body"]["rule"] == "protected_subject_access"
    assert note["body"]["principals"] == ["emp-2001"]


def test_a_suppressed_finding_is_neither_raised_nor_announced(system: Custos) -> None:
    load_org(system, APPROVALS_WORLD)
    system.events.append(misuse(1))
    run = system.detect()
    # Every pattern the misuse raised (the protected-subject rule and, for these imported
    # reads, policy replay) is closed as a false positive.
    cases = {a.case for a in run.alerts}
    assert None not in cases
    for case in cases:
        assert case is not None
        system.casebook.close(case, "false_positive", author="t")
    notes = len(system.approvals.outbox.notifications())
    system.events.append(misuse(3, day=21))  # another period: other findings, suppressed
    later = system.detect()
    assert later.raised == 0
    assert later.suppressed == len(run.alerts)
    assert len(system.approvals.outbox.notifications()) == notes
