"""Traces of the guarded path (OpenTelemetry) and the process's decision counts.

Off by default: until :func:`install` or :func:`configure` sets a tracer provider, :func:`span`
is a context manager that does nothing and imports nothing, so the guarded path and the CLI
pay no cost for it. ``[telemetry] traces`` in config.toml turns it on: ``console`` writes
finished spans to standard error, ``file`` to ``path`` (one JSON object per span, as the
SDK's console exporter writes them), ``otlp`` sends them to an OpenTelemetry collector over
OTLP/HTTP (``endpoint``, ``headers_file`` or ``headers_env``, ``timeout``; see
:func:`read_settings`); ``service_name`` names the service (default ``custos``).

Span attributes carry no personal data: counts, outcomes, categories, purposes and ledger
sizes; never a subject's or a principal's id, never a value. An exception leaving a span is
recorded by its type only: its message may name a person.

Traces are not the audit trail (the ledger is): spans go through a bounded queue to a
background thread, the guarded path never waits for the network, and spans that cannot be
delivered are dropped and counted (:func:`span_counts`), never retried at a decision's cost.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import math
import os
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from custos.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

TRACE_MODES: Final = ("off", "console", "file", "otlp")
#: Where OTLP/HTTP receivers take traces, under a collector's base URL.
OTLP_TRACES_PATH: Final = "/v1/traces"
OTLP_DEFAULT_ENDPOINT: Final = "http://localhost:4318/v1/traces"
OTLP_DEFAULT_TIMEOUT: Final = 10.0
OTLP_MAX_TIMEOUT: Final = 300.0
#: The standard variables custos reads for the endpoint, in order of precedence after
#: ``[telemetry] endpoint``: the first is the traces URL as is, the second a base URL.
ENV_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
#: Headers the exporter itself adds from the environment, under custos's own.
ENV_TRACES_HEADERS: Final = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
ENV_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
#: Spans waiting for the exporter at most (the SDK's default); past it new ones are dropped.
QUEUE_SPANS: Final = 2048
BATCH_SPANS: Final = 512
SCHEDULE_MILLIS: Final = 5000
#: What became of the spans handed to the exporter: ``sent``, or dropped as one of the rest.
SPAN_OUTCOMES: Final = ("sent", "export_failed", "queue_full", "unsent_at_exit")

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
#: The provider :func:`configure` built (and so must shut down), with its tally and wait.
_owned: _Owned | None = None
_owned_lock = threading.Lock()
_atexit_registered = False
_decisions: Counter[str] = Counter()
_decisions_lock = threading.Lock()
_spans: Counter[str] = Counter()
_spans_lock = threading.Lock()
_log = logging.getLogger(__name__)

AttributeValue = str | bool | int | float

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What a header value may hold once decoded: printable ASCII and tabs (http.client sends
# Latin-1 and the collectors' API keys are ASCII; anything else would fail every export).
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]+")


@contextlib.contextmanager
def span(name: str, **attributes: AttributeValue) -> Iterator[Any]:
    """A span named ``name`` with ``attributes`` around the block (nothing when traces are
    off). Yields the span (or None), on which more attributes may be set with
    :func:`annotate`. An exception leaving the block marks the span as an error with its
    type (``error.type``), never its message (which may name a person), and is re-raised."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            from opentelemetry.trace import Status, StatusCode

            current.set_attribute("error.type", type(exc).__qualname__)
            current.set_status(Status(StatusCode.ERROR))
            raise


def annotate(current: Any, **attributes: AttributeValue) -> None:
    """Set ``attributes`` on a span from :func:`span` (no-op when traces are off)."""
    if current is not None:
        current.set_attributes(attributes)


def install(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` from now on (None: traces off). Tests install a provider
    with the SDK's in-memory exporter. A provider :func:`configure` built before is shut
    down first (see :func:`shutdown`)."""
    global _tracer, _provider
    _close_owned()
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("custos")


def flush() -> None:
    """Write out the spans still buffered (a no-op when traces are off). Blocks until the
    exporter has tried them all: at exit use :func:`shutdown`, which bounds the wait."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Send the spans still buffered and stop tracing (at the exit of ``custos serve`` and,
    through :mod:`atexit`, of any process :func:`configure` turned traces on in).

    Waits at most the exporter's ``timeout`` (OTLP) or 10 s for the last spans; those not
    sent by then are counted ``unsent_at_exit``. A no-op when traces are off or the
    provider was installed by hand (its owner shuts it down). Never raises."""
    global _tracer, _provider
    with _owned_lock:
        owned = _owned
        if owned is not None:
            _tracer = None
            _provider = None
    _close_owned()


@dataclass
class _Owned:
    provider: TracerProvider
    tally: SpanTally
    wait: float
    abort: Callable[[], None]  # stops the exporter's retries when the wait is over


def _close_owned() -> None:
    global _owned
    with _owned_lock:
        owned, _owned = _owned, None
    if owned is None:
        return
    # The SDK's shutdown waits up to 30 s per processor and its exporter retries until its
    # own timeout: run it aside and stop waiting after ``wait``, so that an exit never hangs
    # on a collector that is down.
    worker = threading.Thread(
        target=_quietly, args=(owned.provider.shutdown,), name="custos-traces-exit", daemon=True
    )
    worker.start()
    worker.join(owned.wait)
    if worker.is_alive():
        _quietly(owned.abort)
    left = owned.tally.close()
    if left:
        _log.warning("traces: %d spans were not sent before exit and are dropped", left)


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - telemetry never fails an exit; the counts tell
        _log.warning("traces: the exporter failed while stopping", exc_info=True)


class SpanTally:
    """The spans one provider handed to its exporter and what became of them, added to
    the process's counts (:func:`span_counts`). Thread-safe.

    ``admit`` is asked before a span enters the queue: when ``capacity`` spans are still
    waiting or being sent, the span is dropped and counted ``queue_full`` (so the SDK's own
    queue never overflows silently). ``settle`` records a batch's fate, ``close`` counts what
    is left as ``unsent_at_exit`` and ignores every later report.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._waiting = 0
        self._closed = False
        self._failing = False

    def admit(self) -> bool:
        """Whether a finished span may enter the queue (counting it dropped otherwise)."""
        with _spans_lock:
            if self._closed:
                return False
            if self._waiting >= self.capacity:
                _spans["queue_full"] += 1
                first = not self._failing
                self._failing = True
            else:
                self._waiting += 1
                return True
        if first:
            _log.warning(
                "traces: %d spans are waiting for the collector; new spans are dropped "
                "(decisions go on)",
                self.capacity,
            )
        return False

    def settle(self, count: int, sent: bool) -> None:
        """Record that a batch of ``count`` admitted spans was sent or failed."""
        with _spans_lock:
            if self._closed:
                return
            self._waiting = max(self._waiting - count, 0)
            _spans["sent" if sent else "export_failed"] += count
            changed = self._failing == sent
            self._failing = not sent
        if changed and sent:
            _log.info("traces: the collector takes spans again")
        elif changed:
            _log.warning(
                "traces: the collector did not take %d spans; they are dropped (decisions go "
                "on; traces are not the audit trail)",
                count,
            )

    def close(self) -> int:
        """Count the spans still waiting as ``unsent_at_exit``; returns how many."""
        with _spans_lock:
            left, self._waiting = self._waiting, 0
            if not self._closed:
                _spans["unsent_at_exit"] += left
            self._closed = True
        return left


def span_counts() -> dict[str, int]:
    """Spans of this process's traces by outcome (:data:`SPAN_OUTCOMES`): ``sent``, or
    dropped as ``export_failed`` (the collector refused or could not be reached in time),
    ``queue_full`` (too many waiting) or ``unsent_at_exit``."""
    with _spans_lock:
        return {outcome: _spans[outcome] for outcome in SPAN_OUTCOMES}


@dataclass(frozen=True)
class OtlpSettings:
    """Where and how spans are sent with ``traces = "otlp"``, resolved and checked.

    ``endpoint`` is the URL spans are POSTed to, ``source`` where it came from (the key or
    the environment variable, for messages), ``headers`` those custos adds to each request
    (from ``headers_file`` or ``headers_env``; never shown), ``timeout`` in seconds per
    export (retries included).
    """

    endpoint: str
    source: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = OTLP_DEFAULT_TIMEOUT


@dataclass(frozen=True)
class TraceSettings:
    """``[telemetry]`` of config.toml, checked (see :func:`read_settings`)."""

    mode: str = "off"
    service_name: str = "custos"
    path: Path | None = None
    otlp: OtlpSettings | None = None


def read_settings(
    section: Mapping[str, Any], home: Path, where: str, env: Mapping[str, str] | None = None
) -> TraceSettings:
    """Check ``[telemetry]`` (``where`` names the file in messages) without importing the
    SDK; ``env`` defaults to the process environment.

    With ``traces = "otlp"``: ``endpoint`` is an http(s) URL (without a path, ``/v1/traces``
    is added); absent, ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (as is), else
    ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (plus ``/v1/traces``), else
    ``http://localhost:4318/v1/traces``. Headers (an API key) come from ``headers_file`` (a
    file only its owner may read, relative to the home) or ``headers_env`` (a variable's
    name), never from config.toml, written as ``$OTEL_EXPORTER_OTLP_HEADERS`` is:
    ``name=value`` pairs, comma- or line-separated, values percent-encoded. They are refused
    over plain http to another host than this one. ``timeout`` is seconds (default 10).

    Raises :class:`ConfigurationError` naming the file or variable and the key for an
    unknown mode, a bad URL, an unreadable or malformed header file, a missing variable or a
    key of another mode. No message shows a header's value.
    """
    env = os.environ if env is None else env
    mode = section.get("traces", "off")
    if mode not in TRACE_MODES:
        raise ConfigurationError(
            f"{where}: [telemetry] traces must be one of {', '.join(TRACE_MODES)}"
        )
    if "headers" in section:
        raise ConfigurationError(
            f"{where}: [telemetry] headers would keep an API key in config.toml in clear",
            hint="put the headers in a file named by headers_file, or a variable named by "
            "headers_env",
        )
    service = section.get("service_name", "custos")
    if not isinstance(service, str) or not service:
        raise ConfigurationError(f"{where}: [telemetry] service_name must be a non-empty string")
    otlp_keys = [k for k in ("endpoint", "headers_file", "headers_env", "timeout") if k in section]
    if otlp_keys and mode != "otlp":
        raise ConfigurationError(
            f"{where}: [telemetry] {otlp_keys[0]} is read only with traces = 'otlp'"
        )
    if mode == "off":
        return TraceSettings()
    if mode == "file":
        raw = section.get("path")
        if not isinstance(raw, str) or not raw:
            raise ConfigurationError(f"{where}: [telemetry] traces = 'file' needs path")
        path = Path(raw).expanduser()
        return TraceSettings(mode, service, path if path.is_absolute() else home / path)
    if mode == "console":
        return TraceSettings(mode, service)
    return TraceSettings(mode, service, otlp=_otlp_settings(section, home, where, env))


def _otlp_settings(
    section: Mapping[str, Any], home: Path, where: str, env: Mapping[str, str]
) -> OtlpSettings:
    if "endpoint" in section:
        source = f"{where}: [telemetry] endpoint"
        endpoint = _endpoint(section["endpoint"], source, add_path=True)
    elif env.get(ENV_TRACES_ENDPOINT):
        source = f"${ENV_TRACES_ENDPOINT}"
        endpoint = _endpoint(env[ENV_TRACES_ENDPOINT], source, add_path=False)
    elif env.get(ENV_ENDPOINT):
        source = f"${ENV_ENDPOINT}"
        base = _endpoint(env[ENV_ENDPOINT], source, add_path=False)
        endpoint = base.rstrip("/") + OTLP_TRACES_PATH
    else:
        source, endpoint = "the default endpoint", OTLP_DEFAULT_ENDPOINT
    timeout = section.get("timeout", OTLP_DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= OTLP_MAX_TIMEOUT
        or not math.isfinite(timeout)
    ):
        raise ConfigurationError(
            f"{where}: [telemetry] timeout must be a number of seconds above 0 and at most "
            f"{OTLP_MAX_TIMEOUT:g}"
        )
    headers = _headers(section, home, where, env)
    target = urllib.parse.urlsplit(endpoint)
    if (headers or _env_headers(env)) and target.scheme == "http" and not _loopback(target):
        raise ConfigurationError(
            f"{source}: headers (an API key) would cross the network in clear over http",
            hint="use an https endpoint, or a collector on this host",
        )
    return OtlpSettings(endpoint, source, headers, float(timeout))


def _endpoint(raw: Any, source: str, *, add_path: bool) -> str:
    # The URL is not echoed: a mistaken one may hold a credential.
    if not isinstance(raw, str) or not raw or _BAD_VALUE.search(raw) or " " in raw:
        raise ConfigurationError(f"{source} must be an http or https URL")
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{source} must be an http or https URL with a host",
            hint="for example https://collector.example:4318",
        )
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigurationError(f"{source} has a bad port") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            f"{source} must not hold a user or password",
            hint="send credentials as headers, from headers_file or headers_env",
        )
    if parts.query or parts.fragment:
        # The exporter's log lines name the URL it failed to reach: a key in a query would
        # be written to the log.
        raise ConfigurationError(
            f"{source} must not have a ?query or #fragment",
            hint="send credentials as headers, from headers_file or headers_env",
        )
    if add_path and parts.path in ("", "/"):
        parts = parts._replace(path=OTLP_TRACES_PATH)
    return urllib.parse.urlunsplit(parts._replace(scheme=parts.scheme.lower()))


def _loopback(parts: urllib.parse.SplitResult) -> bool:
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_headers(env: Mapping[str, str]) -> bool:
    # The exporter adds these itself, under ours (same name: ours win).
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS")
    )


def _headers(
    section: Mapping[str, Any], home: Path, where: str, env: Mapping[str, str]
) -> dict[str, str]:
    if "headers_file" in section and "headers_env" in section:
        raise ConfigurationError(
            f"{where}: [telemetry] name one of headers_file and headers_env, not both"
        )
    if "headers_env" in section:
        name = section["headers_env"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigurationError(
                f"{where}: [telemetry] headers_env must name an environment variable"
            )
        text = env.get(name)
        if not text:
            raise ConfigurationError(
                f"{where}: [telemetry] headers_env names ${name}, which is not set"
            )
        return parse_headers(text, f"${name}")
    if "headers_file" not in section:
        return {}
    raw = section["headers_file"]
    if not isinstance(raw, str) or not raw:
        raise ConfigurationError(f"{where}: [telemetry] headers_file must be a file's path")
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else home / path
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"{where}: [telemetry] headers_file {path} cannot be read ({exc.strerror})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"{where}: [telemetry] headers_file {path} is not UTF-8 text"
        ) from None
    if mode & 0o077:
        raise ConfigurationError(
            f"{path}: a headers file must not be readable by others",
            hint=f"chmod 600 {path}",
        )
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return parse_headers("\n".join(lines), str(path))


def parse_headers(text: str, source: str) -> dict[str, str]:
    """Headers written as ``$OTEL_EXPORTER_OTLP_HEADERS`` is: ``name=value`` pairs
    separated by commas or new lines, values percent-encoded (``%20``), names
    case-insensitive (returned in lower case).

    Raises :class:`ConfigurationError` naming ``source`` and the pair's position (never its
    value) for a pair without ``=``, a name that is not an HTTP token, a value that is empty
    or not printable ASCII once decoded, a name given twice, or no pair at all.
    """
    headers: dict[str, str] = {}
    pairs = [p for p in re.split(r"[,\n]", text) if p.strip()]
    for position, pair in enumerate(pairs, start=1):
        name, equals, value = pair.partition("=")
        name = name.strip().lower()
        if not equals or not _HEADER_NAME.fullmatch(name):
            raise ConfigurationError(f"{source}: header {position} is not name=value")
        decoded = urllib.parse.unquote(value.strip())
        if not _HEADER_VALUE.fullmatch(decoded):
            raise ConfigurationError(
                f"{source}: header {position} ({name}) must have a value of printable ASCII "
                "(percent-encoded where needed)"
            )
        if name in headers:
            raise ConfigurationError(f"{source}: header {name} is given twice")
        headers[name] = decoded
    if not headers:
        raise ConfigurationError(f"{source}: no header in name=value form")
    return headers


def configure(section: Mapping[str, Any], home: Path, where: str) -> bool:
    """Set traces up from ``[telemetry]`` (``where`` names the file in messages); returns
    whether they are on. The OTLP exporter is imported only for ``traces = "otlp"``; a
    provider built here is shut down at exit (:func:`shutdown`, through :mod:`atexit` too).

    Raises :class:`ConfigurationError` as :func:`read_settings` does, and when the file of
    ``file`` mode cannot be opened. Changes nothing on error."""
    settings = read_settings(section, home, where)
    if settings.mode == "off":
        install(None)
        return False
    from custos import telemetry_sdk

    built = telemetry_sdk.build(settings, where)
    install(built.provider)
    global _owned, _atexit_registered
    with _owned_lock:
        _owned = _Owned(built.provider, built.tally, built.wait, built.abort)
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
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
