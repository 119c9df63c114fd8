"""The parts of :mod:`custos.telemetry` that need the OpenTelemetry SDK: imported only when
traces are on, and the OTLP exporter (protobuf, requests) only for ``traces = "otlp"``.

Every mode goes through one counted batch processor: finished spans enter a bounded queue
(the guarded path appends and goes on), a background thread hands them to the exporter in
batches, and :class:`custos.telemetry.SpanTally` counts what was sent and what was dropped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from custos.errors import ConfigurationError
from custos.telemetry import (
    BATCH_SPANS,
    OTLP_DEFAULT_TIMEOUT,
    QUEUE_SPANS,
    SCHEDULE_MILLIS,
    SpanTally,
    TraceSettings,
)

_log = logging.getLogger("custos.telemetry")


@dataclass(frozen=True)
class Built:
    """A tracer provider with its counted processor; ``wait`` bounds its shutdown, after
    which ``abort`` stops the exporter's retries."""

    provider: TracerProvider
    tally: SpanTally
    wait: float
    abort: Callable[[], None]


class CountedExporter(SpanExporter):
    """Hands batches to ``inner`` and settles them in ``tally``: a batch the exporter did
    not report sent (or that raised) is counted dropped. Shut down once."""

    def __init__(self, inner: SpanExporter, tally: SpanTally) -> None:
        self.inner = inner
        self.tally = tally
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # noqa: BLE001 - an exporter's bug must not end the processor's thread
            _log.warning("traces: the exporter failed; the batch is dropped", exc_info=True)
            result = SpanExportResult.FAILURE
        self.tally.settle(len(spans), result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountedBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, with the queue's bound checked by ``tally`` before a span
    enters it, so that every span dropped for room is counted (the SDK only logs it)."""

    def __init__(self, exporter: CountedExporter) -> None:
        super().__init__(
            exporter,
            max_queue_size=QUEUE_SPANS,
            schedule_delay_millis=SCHEDULE_MILLIS,
            max_export_batch_size=BATCH_SPANS,
        )
        self.tally = exporter.tally

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        if self.tally.admit():
            super().on_end(span)


def build(settings: TraceSettings, where: str) -> Built:
    """A provider exporting as ``settings`` say (a checked ``console``, ``file`` or
    ``otlp`` mode). Raises :class:`ConfigurationError` when the traces file cannot be opened
    or the OTLP exporter refuses its environment (e.g. an unknown credential provider)."""
    exporter: SpanExporter
    wait = OTLP_DEFAULT_TIMEOUT
    if settings.mode == "file" and settings.path is not None:
        try:
            settings.path.parent.mkdir(parents=True, exist_ok=True)
            out = settings.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"{where}: [telemetry] cannot open {settings.path} ({exc.strerror})"
            ) from None
        exporter = ConsoleSpanExporter(out=out, formatter=_json_line)
    elif settings.mode == "otlp" and settings.otlp is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        try:
            otlp = OTLPSpanExporter(
                endpoint=settings.otlp.endpoint,
                headers=dict(settings.otlp.headers),
                timeout=settings.otlp.timeout,
            )
        except (ImportError, RuntimeError, ValueError) as exc:
            # e.g. OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER naming nothing installed
            raise ConfigurationError(
                f"{where}: [telemetry] the OTLP exporter refused its settings ({exc})"
            ) from None
        exporter, wait = otlp, settings.otlp.timeout
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    counted = CountedExporter(exporter, SpanTally(QUEUE_SPANS))
    # Not the SDK's own exit hook: it waits 30 s and more on a collector that is down;
    # custos.telemetry.shutdown (at exit too) bounds the wait by the timeout.
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(CountedBatchProcessor(counted))
    # Shutting the exporter down ends its retries at once (the processor's own shutdown
    # then finds it stopped and does not call it twice).
    return Built(provider, counted.tally, wait, counted.shutdown)


def _json_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"
