"""Traces of the guarded path (OpenTelemetry) and the process's decision counts.

Off by default: until :func:`install` or :func:`configure` sets a tracer provider, :func:`span`
is a context manager that does nothing and imports nothing, so the guarded path and the CLI
pay no cost for it. ``[telemetry] traces`` in config.toml turns it on: ``console`` writes
finished spans to standard error, ``file`` to ``path`` (one JSON object per span, as the
SDK's console exporter writes them); ``service_name`` names the service (default
``custos``).

Span attributes carry no personal data: counts, outcomes, categories, purposes and ledger
sizes; never a subject's or a principal's id, never a value.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from custos.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

TRACE_MODES: Final = ("off", "console", "file")
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_decisions: Counter[str] = Counter()
_decisions_lock = threading.Lock()

AttributeValue = str | bool | int | float


@contextlib.contextmanager
def span(name: str, **attributes: AttributeValue) -> Iterator[Any]:
    """A span named ``name`` with ``attributes`` around the block (nothing when traces are
    off). Yields the span (or None), on which more attributes may be set with
    :func:`annotate`. An exception leaving the block is recorded on the span and re-raised."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def annotate(current: Any, **attributes: AttributeValue) -> None:
    """Set ``attributes`` on a span from :func:`span` (no-op when traces are off)."""
    if current is not None:
        current.set_attributes(attributes)


def install(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` from now on (None: traces off). Tests install a provider
    with the SDK's in-memory exporter."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("custos")


def flush() -> None:
    """Write out the spans still buffered (at shutdown; a no-op when traces are off)."""
    if _provider is not None:
        _provider.force_flush()


def configure(section: Mapping[str, Any], home: Path, where: str) -> bool:
    """Set traces up from ``[telemetry]`` (``where`` names the file in messages); returns
    whether they are on. Raises :class:`ConfigurationError` for an unknown mode or a
    ``file`` mode without ``path``."""
    mode = section.get("traces", "off")
    if mode not in TRACE_MODES:
        raise ConfigurationError(
            f"{where}: [telemetry] traces must be one of {', '.join(TRACE_MODES)}"
        )
    if mode == "off":
        install(None)
        return False
    service = section.get("service_name", "custos")
    if not isinstance(service, str) or not service:
        raise ConfigurationError(f"{where}: [telemetry] service_name must be a non-empty string")
    import sys

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if mode == "file":
        raw = section.get("path")
        if not isinstance(raw, str) or not raw:
            raise ConfigurationError(f"{where}: [telemetry] traces = 'file' needs path")
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else home / path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                f"{where}: [telemetry] cannot open {path} ({exc.strerror})"
            ) from None
        exporter = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return True


def count_decisions(outcomes: Iterable[str]) -> None:
    """Count durably logged decisions by outcome (``allow``, ``deny``,
    ``approval_required``) for this process's metrics."""
    with _decisions_lock:
        _decisions.update(outcomes)


def decision_counts() -> dict[str, int]:
    """Decisions logged by this process so far, by outcome."""
    with _decisions_lock:
        return dict(_decisions)
