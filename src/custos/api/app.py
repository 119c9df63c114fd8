"""The ASGI application: API, dashboard, middleware and the background housekeeping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from custos import __version__, telemetry
from custos.access import Custos
from custos.access.batching import RequestBatcher
from custos.api import errors
from custos.api.auth import RateLimiter
from custos.api.detection import ContinuousDetection
from custos.api.middleware import BodyLimit, Metrics, SecurityHeaders, StrictRequests
from custos.api.routes import COSIGNATURES_PATH, TOKEN_PATH, ops, router
from custos.api.routes_detect import router as detect_router
from custos.api.routes_feeds import directory_router, scim_router
from custos.config import Settings
from custos.detect.continuous import RunStatus
from custos.errors import ConfigurationError, CustosError, IntegrityError
from custos.export import Exporter

log = logging.getLogger("custos.api")


def create_app(system: Custos, *, housekeeping_seconds: float = 30.0) -> FastAPI:
    """The service for an opened installation.

    Settings from ``[service]`` in config.toml: ``rate_limit`` (requests per second per
    credential, default 2000), ``burst`` (default 4000), ``max_body_bytes`` (default 10 MiB),
    ``https`` (adds HSTS, default true), ``public_origin`` (``https://host[:port]`` people
    reach the service at, when a proxy in front ends TLS; browser requests from any other
    origin are refused). Session cookies are Secure either way: browsers keep them over
    plain http on loopback only.

    In the background, besides the ``housekeeping_seconds`` round (requests, notifications,
    the events feed): detection runs every ``[detect] interval`` seconds (default 300) or
    sooner after a burst of ``burst_events``, one worker at a time (see
    :mod:`custos.api.detection`); a checkpoint is signed whenever the log has grown and
    the newest one is ``[ledger] checkpoint_interval`` seconds old (default 1), and records
    past retention are shredded at start-up and every ``[vault] shred_interval`` seconds
    (default 3600).
    Raises :class:`ConfigurationError` for a setting that is not a positive number.
    """
    settings = system.settings

    checkpoint_every = settings.number("ledger", "checkpoint_interval", 1.0)
    shred_every = settings.number("vault", "shred_interval", 3600.0)
    detection = ContinuousDetection(system)
    telemetry.configure(settings.section("telemetry"), settings.home, str(settings.config_path))
    exporter = Exporter(settings, system.db, system.ledger)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_housekeeping(system, housekeeping_seconds)),
            asyncio.create_task(
                _every(
                    max(checkpoint_every / 2, 0.05),
                    "signing a checkpoint",
                    lambda: system.ledger.checkpoint_if_due(timedelta(seconds=checkpoint_every)),
                )
            ),
            asyncio.create_task(
                _every(shred_every, "shredding expired records", system.shred, at_start=True)
            ),
            asyncio.create_task(_every(detection.poll, "detection", detection.step)),
        ]
        if exporter.configs:
            poll = max(min(min(c.interval for c in exporter.configs) / 2, 1.0), 0.05)
            tasks.append(
                asyncio.create_task(
                    _every(poll, "export", lambda: exporter.step(time.monotonic()), at_start=True)
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            exporter.close()
            # Bounded: a collector that is down delays the exit by its timeout at most.
            telemetry.shutdown()

    app = FastAPI(
        title="custos",
        version=__version__,
        summary="The guarded path between staff and personal data.",
        lifespan=lifespan,
        # The schema maps every operation, so it is served to signed-in callers only (see
        # routes.openapi_schema); no docs page, whose script would come from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.system = system
    # Concurrent checks and reads are run in batches: one policy batch and one durable
    # ledger batch each (see custos.access.batching).
    app.state.checks = RequestBatcher(
        lambda requests, source: system.decide_many(requests, source=source)
    )
    app.state.reads = RequestBatcher(
        lambda requests, source: system.read_many(requests, source=source)
    )
    app.state.rate_limiter = RateLimiter(
        rate=settings.number("service", "rate_limit", 2000),
        burst=settings.number("service", "burst", 4000),
    )
    app.state.https = settings.flag("service", "https", True)
    app.state.public_origin = public_origin(settings)
    registry = CollectorRegistry()
    app.state.registry = registry
    ledger_size = Gauge("custos_ledger_size", "Entries in the ledger.", registry=registry)
    ledger_size.set_function(lambda: _safe_size(system))
    app.state.detection = detection
    app.state.exporter = exporter
    _detection_gauges(registry, detection)
    registry.register(PushMetrics(system, exporter))
    errors.install(app)
    app.include_router(router)
    app.include_router(detect_router)
    app.include_router(directory_router)
    app.include_router(scim_router)
    app.include_router(ops)
    from custos.web import install as install_dashboard

    install_dashboard(app)
    app.add_middleware(
        StrictRequests,
        text_paths=frozenset({COSIGNATURES_PATH}),
        form_paths=frozenset({TOKEN_PATH}),
    )
    app.add_middleware(StrictRequests, prefix="/scim/")
    app.add_middleware(Metrics, registry=registry)
    app.add_middleware(
        BodyLimit, limit=settings.whole("service", "max_body_bytes", 10 * 1024 * 1024)
    )
    app.add_middleware(SecurityHeaders, https=app.state.https)
    return app


def public_origin(settings: Settings) -> str | None:
    """``[service] public_origin``, normalised (lower case, no trailing slash), or None.
    Raises :class:`ConfigurationError` unless it is a bare http(s) origin."""
    value = settings.section("service").get("public_origin")
    if value is None:
        return None
    where = f"{settings.config_path}: [service] public_origin"
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string such as 'https://custos.example'")
    parts = urllib.parse.urlsplit(value.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(
            f"{where} must be scheme and host only, such as 'https://custos.example'"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{where} has a port that is no number") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    # As a browser writes it in Origin: lower case, the scheme's own port left out.
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _detection_gauges(registry: CollectorRegistry, detection: ContinuousDetection) -> None:
    """The last detection run, whichever worker ran it (read from the database)."""

    def reading(field: Callable[[RunStatus], object]) -> Callable[[], float]:
        def read() -> float:
            try:
                value = field(detection.status())
            except Exception:  # noqa: BLE001 - a gauge must not fail the scrape
                return float("nan")
            if isinstance(value, datetime):
                return value.timestamp()
            return float("nan") if value is None else float(cast("float", value))

        return read

    for name, text, field in (
        (
            "custos_detect_last_run_timestamp_seconds",
            "When the last detection run finished (Unix time).",
            lambda s: s.finished,
        ),
        (
            "custos_detect_last_run_duration_seconds",
            "How long the last detection run took.",
            lambda s: s.duration,
        ),
        (
            "custos_detect_lag_seconds",
            "The longest an event taken in by the last run had waited for it.",
            lambda s: s.lag,
        ),
        (
            "custos_detect_last_run_alerts",
            "Alerts the last detection run raised.",
            lambda s: s.raised,
        ),
        ("custos_detect_runs", "Detection runs finished.", lambda s: s.runs),
        ("custos_detect_failed_runs", "Detection runs that failed.", lambda s: s.failures),
    ):
        Gauge(name, text, registry=registry).set_function(reading(field))


class PushMetrics(Collector):
    """Decisions by outcome and trace spans by fate (this process's, since it started), the
    ages of the newest checkpoint and witness cosignature, and per export destination its
    queue depth and counts (read from the database at each scrape, so every worker reports
    the same)."""

    def __init__(self, system: Custos, exporter: Exporter) -> None:
        self.system = system
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "custos_decisions",
            "Decisions this process logged, by outcome.",
            labels=["outcome"],
        )
        counts = telemetry.decision_counts()
        for outcome in sorted({"allow", "deny", "approval_required", *counts}):
            decisions.add_metric([outcome], float(counts.get(outcome, 0)))
        yield decisions
        spans = CounterMetricFamily(
            "custos_trace_spans",
            "Spans of this process's traces: sent, or dropped (export_failed, queue_full, "
            "unsent_at_exit); traces are not the audit trail.",
            labels=["outcome"],
        )
        for outcome, count in telemetry.span_counts().items():
            spans.add_metric([outcome], float(count))
        yield spans
        now = datetime.now(UTC)
        for name, text, moment in (
            (
                "custos_ledger_checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed (NaN: none yet).",
                self.system.ledger.latest_checkpoint_time,
            ),
            (
                "custos_witness_age_seconds",
                "Seconds since a witness's cosignature was last kept (NaN: none yet).",
                self.system.ledger.latest_cosignature_time,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=_age(moment, now))
        depth = GaugeMetricFamily(
            "custos_export_queue_depth",
            "Ledger entries and alerts a destination has not acknowledged yet.",
            labels=["destination"],
        )
        delivered = CounterMetricFamily(
            "custos_export_delivered",
            "Events a destination acknowledged.",
            labels=["destination"],
        )
        redelivered = CounterMetricFamily(
            "custos_export_redelivered",
            "Events sent again after a crash or an unacknowledged send (duplicates).",
            labels=["destination"],
        )
        failures = CounterMetricFamily(
            "custos_export_failures",
            "Export rounds that failed (the cursor stayed).",
            labels=["destination"],
        )
        verified = GaugeMetricFamily(
            "custos_export_cursor_verified",
            "1 when a destination's cursor verifies against the export key; 0 when it was "
            "changed in the database (the destination is stopped until reset).",
            labels=["destination"],
        )
        if self.exporter.configs:
            try:
                depths = self.exporter.queue_depth()
                states = {c.name: c for c in self.exporter.cursors.all()}
            except Exception:  # noqa: BLE001 - a scrape must not fail
                depths, states = {}, {}
            for config in self.exporter.configs:
                state = states.get(config.name)
                depth.add_metric([config.name], float(depths.get(config.name, float("nan"))))
                delivered.add_metric([config.name], float(state.delivered if state else 0))
                redelivered.add_metric([config.name], float(state.redelivered if state else 0))
                failures.add_metric([config.name], float(state.failures if state else 0))
                verified.add_metric([config.name], float(state.verified if state else 1))
        yield depth
        yield verified
        yield delivered
        yield redelivered
        yield failures


def _age(moment: Callable[[], datetime | None], now: datetime) -> float:
    try:
        found = moment()
    except Exception:  # noqa: BLE001 - a gauge must not fail the scrape
        return float("nan")
    return float("nan") if found is None else max((now - found).total_seconds(), 0.0)


def _safe_size(system: Custos) -> float:
    try:
        return float(system.ledger.size())
    except Exception:  # noqa: BLE001 - a gauge must not fail the scrape
        return float("nan")


async def _every(
    seconds: float, name: str, job: Callable[[], object], *, at_start: bool = False
) -> None:
    """Run ``job`` on a worker thread every ``seconds``, forever (after waiting first unless
    ``at_start``). A failure never ends the loop: it is logged once when a run of failures
    begins (with custos's own message, which names no secret, or else only the error's
    class: a driver's message may quote values) and once when the job works again."""
    failing = False
    if not at_start:
        await asyncio.sleep(seconds)
    while True:
        try:
            await asyncio.to_thread(job)
        except Exception as exc:  # noqa: BLE001 - keep going; the next run retries
            if not failing:
                level = logging.ERROR if isinstance(exc, IntegrityError) else logging.WARNING
                reason = exc.message if isinstance(exc, CustosError) else type(exc).__name__
                log.log(level, "%s failed (%s); retrying every %g s", name, reason, seconds)
            failing = True
        else:
            if failing:
                log.warning("%s works again", name)
            failing = False
        await asyncio.sleep(seconds)


async def _housekeeping(system: Custos, every: float) -> None:
    """Expire requests, announce ended grants and deliver notifications, forever."""
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(system.approvals.sweep)
            await asyncio.to_thread(system.approvals.outbox.deliver)
            await asyncio.to_thread(system.feed_events)
        except Exception:  # noqa: BLE001 - keep going; the next round retries
            log.warning("housekeeping failed; will retry", exc_info=False)


def app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: the home in $CUSTOS_HOME."""
    home = os.environ.get("CUSTOS_HOME")
    app = create_app(Custos.open(Path(home) if home else None))
    _tune_garbage_collector()
    return app


def _tune_garbage_collector() -> None:
    """Settle what start-up built, then collect young objects less often.

    Every check allocates a few hundred short-lived objects; at the default threshold (700)
    the collector runs every couple of requests and walks the long-lived caches (directory,
    policy pack, SQLAlchemy) each time it reaches the older generations. Freezing what exists
    after start-up takes those out of every collection; a larger first threshold trades a
    little memory for fewer pauses. Measured: about 15-20% more checks per second.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
