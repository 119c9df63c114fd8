"""The service's own detection: each worker asks, on a timer, whether a run is due, and the
one holding the lease runs it (see :mod:`custos.detect.continuous`), then announces what it
raised through the outbox at once."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from custos.access import Custos
from custos.detect.config import DetectConfig
from custos.detect.continuous import DetectionLease, RunStatus, due

log = logging.getLogger("custos.api")

#: The longest a worker waits between two looks at whether a run is due: a burst of events
#: is taken in within about this long (plus the run), whatever the interval.
MAX_POLL = 30.0


@dataclass(frozen=True, slots=True)
class Round:
    """What one look did: whether it ran detection, and what the run raised."""

    ran: bool
    raised: int = 0


class ContinuousDetection:
    """One worker's part in running detection continuously over ``system``."""

    def __init__(self, system: Custos, holder: str | None = None) -> None:
        self.system = system
        self.config = DetectConfig.from_section(system.settings.section("detect"))
        self.lease = DetectionLease(system.db, self.config.lease_seconds, holder)
        #: Seconds between two looks: often enough for the interval and for bursts.
        self.poll = max(min(self.config.interval / 2, MAX_POLL), 0.05)
        self._status: tuple[float, RunStatus] | None = None

    def pending(self, status: RunStatus) -> int:
        """Events stored since the last run took its share, plus ledger entries not yet
        copied into the events (custos's own decisions among them), plus bulk accesses
        imported since the last run started (one it may have read is counted again: at
        worst one run more)."""
        backlog = max(self.system.ledger.size() - self.lease.feed_position(), 0)
        bulk = self.lease.bulk_arrived(status.started)
        return max(self.lease.sequence() - status.seen, 0) + backlog + bulk

    def step(self, now: datetime | None = None) -> Round:
        """Run detection if it is due and this worker wins the lease; never two at once.

        Raises what the run raises (the lease is then given up and the failure counted),
        e.g. :class:`StoreUnavailable` or :class:`ConfigurationError`.
        """
        now = now or datetime.now(UTC)
        status = self.lease.status()
        if not due(status, self.config, self.pending(status), now):
            return Round(False)
        if not self.lease.acquire(now):
            return Round(False)
        # Read again under the lease: another worker may have finished a run just now.
        status = self.lease.status()
        if not due(status, self.config, self.pending(status), now, self.lease.holder):
            self.lease.release()
            return Round(False)
        return Round(True, self._run(status))

    def _run(self, before: RunStatus) -> int:
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(stop,), daemon=True)
        renewer.start()
        started = datetime.now(UTC)
        try:
            self.system.feed_events()
            seen = self.lease.sequence()
            oldest = self.lease.oldest_arrival(before.seen, seen)
            run = self.system.detect()
        except BaseException:
            stop.set()
            renewer.join()
            self.lease.fail()
            raise
        stop.set()
        renewer.join()
        finished = datetime.now(UTC)
        lag = max((finished - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        if not self.lease.finish(
            started=started, finished=finished, lag=lag, seen=seen, raised=run.raised
        ):
            log.warning("detection ran longer than its lease; another worker took over")
        if run.raised:
            # Announce now rather than at the next housekeeping round.
            self.system.approvals.outbox.deliver()
        return run.raised

    def _renew(self, stop: threading.Event) -> None:
        while not stop.wait(self.config.lease_seconds / 3):
            if not self.lease.renew():
                return

    def status(self, max_age: float = 1.0) -> RunStatus:
        """The stored status, read at most once every ``max_age`` seconds (for /metrics,
        whose gauges each ask)."""
        moment = time.monotonic()
        if self._status is None or moment - self._status[0] > max_age:
            self._status = (moment, self.lease.status())
        return self._status[1]
