"""Traces sent over OTLP/HTTP to a real receiver on loopback: an http.server that decodes
each ExportTraceServiceRequest with the opentelemetry-proto package the exporter itself
uses. Real decisions (through the API and the Custos object), real HTTP, real protobuf.

A collector that is down, refuses or stalls never holds a decision: its spans are counted
dropped. Bad settings are refused at open time, naming the file or variable and the key."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import generate_latest

from custos import telemetry
from custos.access import Custos
from custos.config import load_settings
from custos.errors import ConfigurationError
from custos.policy import AccessRequest
from tests.api.conftest import free_port, run_service
from tests.api.conftest import populate as populate_service
from tests.export.conftest import write_config
from tests.factories import APPROVALS_WORLD, load_org, logins

API_KEY = "k3y, with=signs & spaces"  # percent-encoded where it is written down
#: What must never reach a collector: ids of people and accounts, tickets, IP addresses.
PERSONAL = ("user-1", "user-42", "user-nobody-77", "emp-5001", "emp-6001", "T-12", "203.0.113")


@dataclass
class Seen:
    """One span as the collector decoded it."""

    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status: str
    events: int


@dataclass
class Collector:
    """An OTLP/HTTP receiver on 127.0.0.1: keeps every request (path, headers, raw body)
    and the spans decoded from it; answers ``status``; while ``release`` is clear it holds
    each request unanswered (``arrived`` says one is in hand)."""

    server: ThreadingHTTPServer
    status: int = 200
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def named(self, name: str) -> list[Seen]:
        return [s for s in self.spans() if s.name == name]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@pytest.fixture
def collector() -> Iterator[Collector]:
    received: Collector

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with received.lock:
                received.bodies.append(body)
                received.paths.append(self.path)
                received.headers.append({k.lower(): v for k, v in self.headers.items()})
                for resource_spans in request.resource_spans:
                    resource = _attributes(resource_spans.resource.attributes)
                    for scope in resource_spans.scope_spans:
                        for s in scope.spans:
                            received.seen.append(
                                Seen(
                                    s.name,
                                    _attributes(s.attributes),
                                    resource,
                                    s.status.message,
                                    len(s.events),
                                )
                            )
            received.arrived.set()
            received.release.wait()
            answer = ExportTraceServiceResponse().SerializeToString()
            try:
                self.send_response(received.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the exporter gave up waiting: its timeout
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    received = Collector(server)
    received.release.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    received.release.set()
    telemetry.install(None)  # a provider a test left on is shut down before the server
    server.shutdown()
    server.server_close()
    thread.join()


def otlp(endpoint: str, **more: object) -> dict[str, object]:
    return {"traces": "otlp", "endpoint": endpoint, **more}


def delta(before: dict[str, int]) -> dict[str, int]:
    after = telemetry.span_counts()
    return {k: after[k] - before[k] for k in after}


def test_spans_of_api_decisions_reach_the_collector_without_personal_data(
    system: Custos, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = populate_service(system)
    monkeypatch.setenv("CUSTOS_TEST_OTLP", f"x-api-key={quote(API_KEY)},x-team=privacy")
    write_config(
        system,
        f'[telemetry]\ntraces = "otlp"\nendpoint = "{collector.base}"\n'
        'headers_env = "CUSTOS_TEST_OTLP"\ntimeout = 5\nservice_name = "custos-test"\n',
    )
    before = telemetry.span_counts()
    with Custos.open(system.settings.home) as served:
        for url, app in run_service(served):
            auth = {"Authorization": f"Bearer {tokens['soc-tool']}"}
            with httpx.Client(base_url=url, headers=auth, timeout=30) as soc:
                read = soc.post(
                    "/v1/read",
                    json={
                        "subject": "user-1",
                        "category": "ip_history",
                        "purpose": "security_incident",
                        "ticket": "T-12",
                    },
                )
                assert read.status_code == 200, read.text
                assert read.json()["decision"] == "allow"
                denied = soc.post(
                    "/v1/check",
                    json={"subject": "user-42", "category": "ip_history", "purpose": "support"},
                )
                assert denied.json()["decision"] == "deny"
                unknown = soc.post(
                    "/v1/check",
                    json={"subject": "user-nobody-77", "category": "profile", "purpose": "support"},
                )
                assert unknown.status_code == 404
            metrics = generate_latest(app.state.registry).decode()
            assert 'custos_trace_spans_total{outcome="queue_full"} 0.0' in metrics
    # The service has stopped: its exit sent what was still queued.
    assert set(collector.paths) == {"/v1/traces"}
    assert all(h["content-type"] == "application/x-protobuf" for h in collector.headers)
    assert all(h["x-api-key"] == API_KEY for h in collector.headers)
    assert all(h["x-team"] == "privacy" for h in collector.headers)
    decides = collector.named("custos.decide")
    assert [d.attributes.get("custos.decisions.allow") for d in decides].count(1) == 1
    assert [d.attributes.get("custos.decisions.deny") for d in decides].count(1) == 1
    failed = [d for d in decides if "error.type" in d.attributes]
    assert [(d.attributes["error.type"], d.events, d.status) for d in failed] == [
        ("UnknownSubject", 0, "")  # the type only: the message names the subject
    ]
    (vault,) = collector.named("custos.vault.read")
    assert vault.attributes["custos.category"] == "ip_history"
    assert vault.attributes["custos.precision"] == "coarse"
    assert vault.attributes["custos.records"] == 3
    appends = collector.named("custos.ledger.append")
    assert appends
    assert all(a.attributes["custos.entries"] >= 1 for a in appends)
    assert {s.resource["service.name"] for s in collector.spans()} == {"custos-test"}
    counted = delta(before)
    assert counted["sent"] == len(collector.spans())
    assert counted["export_failed"] == counted["queue_full"] == counted["unsent_at_exit"] == 0
    for body in collector.bodies:  # the raw protobuf, attributes, events and all
        for personal in (*PERSONAL, API_KEY, tokens["soc-tool"]):
            assert personal.encode() not in body


def test_the_custos_object_traces_with_a_header_file_and_the_standard_variables(
    system: Custos, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=4), "logins.jsonl")
    home = system.settings.home
    (home / "keys" / "otlp.headers").write_text(
        f"# the collector's API key\nx-api-key={quote(API_KEY)}\n", encoding="utf-8"
    )
    (home / "keys" / "otlp.headers").chmod(0o600)
    # The standard variables: the base URL (custos adds /v1/traces), and headers the
    # exporter adds under the file's (the same name: the file's wins).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=from-env,x-tenant=acme")
    before = telemetry.span_counts()
    section = {"traces": "otlp", "headers_file": "keys/otlp.headers"}
    settings = telemetry.read_settings(section, home, "config.toml")
    assert settings.otlp is not None
    assert settings.otlp.endpoint == collector.base + "/v1/traces"
    assert settings.otlp.source == "$OTEL_EXPORTER_OTLP_ENDPOINT"
    assert API_KEY not in repr(settings)
    assert telemetry.configure(section, home, "config.toml")
    released = system.read(
        AccessRequest("emp-5001", "user-1", "ip_history", "security_incident", ticket="T-12")
    )
    assert len(released.records) == 4
    telemetry.shutdown()
    assert telemetry.span_counts()["sent"] - before["sent"] == len(collector.spans()) >= 3
    assert {h["x-api-key"] for h in collector.headers} == {API_KEY}
    assert {h["x-tenant"] for h in collector.headers} == {"acme"}
    assert set(collector.paths) == {"/v1/traces"}
    with telemetry.span("custos.decide") as current:  # off again after shutdown
        assert current is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("collector_state", ["down", "refusing"])
def test_a_collector_down_or_refusing_never_fails_a_decision(
    system: Custos,
    collector: Collector,
    collector_state: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=2), "logins.jsonl")
    if collector_state == "down":
        endpoint = f"http://127.0.0.1:{_closed_port()}"
    else:
        collector.status = 401  # a wrong API key: not retried
        endpoint = collector.base
    before = telemetry.span_counts()
    assert telemetry.configure(otlp(endpoint, timeout=0.5), system.settings.home, "config.toml")
    with caplog.at_level(logging.INFO):
        allowed = system.read(
            AccessRequest("emp-5001", "user-1", "ip_history", "security_incident", ticket="T-12")
        )
        denied = system.decide(AccessRequest("emp-6001", "user-42", "ip_history", "support"))
        telemetry.flush()  # the export fails here, on this thread: never in a decision
        telemetry.shutdown()
    assert len(allowed.records) == 2
    assert denied.outcome == "deny"
    counted = delta(before)
    assert counted["sent"] == 0
    assert counted["export_failed"] >= 4  # read: decide, vault, 2 appends; decide: 2 more
    assert counted["unsent_at_exit"] == 0
    assert "the collector did not take" in caplog.text
    for personal in (*PERSONAL, API_KEY):
        assert personal not in caplog.text
    assert system.ledger.size() >= 3  # the audit trail does not depend on traces


def test_a_stalled_collector_holds_no_decision_and_a_full_queue_drops_spans(
    system: Custos, collector: Collector
) -> None:
    load_org(system, APPROVALS_WORLD)
    before = telemetry.span_counts()
    assert telemetry.configure(otlp(collector.base, timeout=120), system.settings.home, "c")
    collector.release.clear()  # from the first request on, whoever sends it
    system.decide(AccessRequest("emp-6001", "user-42", "ip_history", "support"))
    flushing = threading.Thread(target=telemetry.flush, daemon=True)
    flushing.start()  # the exporter's thread of work now waits on the collector
    assert collector.arrived.wait(60)
    outcomes: list[str] = []

    def decide() -> None:
        for _ in range(3):
            outcomes.append(
                system.decide(AccessRequest("emp-6001", "user-42", "ip_history", "support")).outcome
            )
        for n in range(telemetry.QUEUE_SPANS + 100):
            with telemetry.span("custos.test", n=n):
                pass

    deciding = threading.Thread(target=decide, daemon=True)
    deciding.start()
    deciding.join(60)  # a guard against a hang, not a timing: the collector holds all along
    assert not deciding.is_alive()
    assert outcomes == ["deny"] * 3
    assert len(collector.bodies) == 1  # still the one request, unanswered
    assert not collector.release.is_set()
    counted = delta(before)
    assert counted["queue_full"] > 0
    assert counted["sent"] == 0
    collector.release.set()
    flushing.join(60)
    assert not flushing.is_alive()
    telemetry.shutdown()
    counted = delta(before)
    assert counted["sent"] == len(collector.spans())
    assert counted["queue_full"] == telemetry.QUEUE_SPANS + 100 - len(
        collector.named("custos.test")
    )
    assert counted["export_failed"] == counted["unsent_at_exit"] == 0


def test_an_exit_waits_for_a_stalled_collector_no_longer_than_its_timeout(
    collector: Collector, tmp_path: Path
) -> None:
    before = telemetry.span_counts()
    assert telemetry.configure(otlp(collector.base, timeout=0.5), tmp_path, "config.toml")
    collector.release.clear()  # never answers while the test runs
    for n in range(5):
        with telemetry.span("custos.test", n=n):
            pass
    stopping = threading.Thread(target=telemetry.shutdown, daemon=True)
    stopping.start()
    stopping.join(60)  # a guard against a hang; the exit itself is bounded by the timeout
    assert not stopping.is_alive()
    counted = delta(before)
    assert counted["sent"] == 0
    assert counted["export_failed"] + counted["unsent_at_exit"] == 5


def test_a_process_that_exits_without_shutting_down_still_sends_its_spans(
    collector: Collector, tmp_path: Path
) -> None:
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from custos import telemetry\n"
        "telemetry.configure({'traces': 'otlp', 'endpoint': sys.argv[1]}, Path(sys.argv[2]), 'c')\n"
        "with telemetry.span('custos.decide', **{'custos.requests': 7}):\n"
        "    pass\n"
    )  # no shutdown: the exit hook sends what the 5 s schedule has not sent yet
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [sys.executable, "-c", probe, collector.base, str(tmp_path)],
        env=env,
        check=True,
        timeout=120,
    )
    (decide,) = collector.named("custos.decide")
    assert decide.attributes == {"custos.requests": 7}


def test_only_otlp_imports_the_exporter(tmp_path: Path) -> None:
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from custos import telemetry\n"
        "telemetry.configure({'traces': sys.argv[1]}, Path(sys.argv[2]), 'c')\n"
        "telemetry.shutdown()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    loaded = {}
    for mode in ("off", "console", "otlp"):
        out = subprocess.run(
            [sys.executable, "-c", probe, mode, str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=120,
        )
        loaded[mode] = set(json.loads(out.stdout))
    heavy = ("opentelemetry.exporter", "google.protobuf", "requests")
    assert not [m for m in loaded["off"] if m.startswith("opentelemetry")]
    assert not [m for m in loaded["console"] if m.startswith(heavy)]
    assert {"opentelemetry.exporter.otlp.proto.http", "google.protobuf"} <= loaded["otlp"]


# --- settings: refused at open time, by name ------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (otlp("ftp://collector:21"), r"\[telemetry\] endpoint must be an http or https URL"),
        (otlp("collector:4318"), "must be an http or https URL"),
        (otlp("https://"), "with a host"),
        (otlp("https://collector:99999"), "has a bad port"),
        (otlp("https://user:hunter2@collector"), "must not hold a user or password"),
        (otlp("https://collector/#x"), r"must not have a \?query or #fragment"),
        (otlp("https://collector/v1/traces?key=hunter2"), r"must not have a \?query"),
        (otlp("https://collector", timeout=0), "timeout must be a number of seconds"),
        (otlp("https://collector", timeout="5"), "timeout must be a number of seconds"),
        (otlp("https://collector", timeout=True), "timeout must be a number of seconds"),
        (otlp("https://collector", timeout=301), "timeout must be a number of seconds"),
        (otlp("https://collector", timeout=float("nan")), "timeout must be a number"),
        ({"traces": "file", "path": "t.jsonl", "endpoint": "https://c"}, "only with traces"),
        ({"traces": "otlp", "headers": "x-api-key=hunter2"}, "API key in config.toml"),
        (otlp("https://c", headers_env="1BAD"), "must name an environment variable"),
        (otlp("https://c", headers_env="CUSTOS_NOT_SET_EVER"), r"\$CUSTOS_NOT_SET_EVER"),
        (otlp("https://c", headers_env="A", headers_file="f"), "not both"),
        (otlp("https://c", headers_file=""), "headers_file must be a file's path"),
        (otlp("https://c", headers_file="keys/none"), r"keys/none cannot be read \(No such"),
    ],
)
def test_bad_otlp_settings_are_named(
    section: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        telemetry.read_settings(section, tmp_path, "/h/config.toml", env={})
    text = str(caught.value)
    assert "hunter2" not in text
    assert text.startswith("/h/config.toml: [telemetry]") or "keys/none" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("x-api-key: hunter2\n", "header 1 is not name=value"),
        ("x-team=a\nx api key=hunter2\n", "header 2 is not name=value"),
        ("x-api-key=\n", r"header 1 \(x-api-key\) must have a value of printable ASCII"),
        ("x-api-key=hun%0Ater2\n", "printable ASCII"),
        ("x-api-key=hunter2\u00e9\n", "printable ASCII"),
        ("x-api-key=hunter2,X-Api-Key=hunter2\n", "header x-api-key is given twice"),
        ("# only a comment\n\n", "no header in name=value form"),
    ],
)
def test_a_malformed_header_file_is_named_without_its_values(
    content: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "otlp.headers"
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match=message) as caught:
        telemetry.read_settings(otlp("https://c", headers_file=str(path)), tmp_path, "c", env={})
    assert str(caught.value).startswith(str(path))
    assert "hunter2" not in str(caught.value)


def test_a_header_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "otlp.headers"
    path.write_text("x-api-key=hunter2\n", encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="must not be readable by others"):
        telemetry.read_settings(otlp("https://c", headers_file="otlp.headers"), tmp_path, "c")
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    settings = telemetry.read_settings(
        otlp("https://c", headers_file="otlp.headers"), tmp_path, "c"
    )
    assert settings.otlp is not None
    assert settings.otlp.headers == {"x-api-key": "hunter2"}


def test_headers_cross_the_network_only_over_https_or_to_this_host(tmp_path: Path) -> None:
    env = {"OTLP_KEY": "x-api-key=hunter2"}
    with pytest.raises(ConfigurationError, match="in clear over http"):
        telemetry.read_settings(
            otlp("http://collector.example:4318", headers_env="OTLP_KEY"), tmp_path, "c", env=env
        )
    with pytest.raises(ConfigurationError, match="in clear over http"):  # the standard one too
        telemetry.read_settings(
            otlp("http://collector.example"),
            tmp_path,
            "c",
            env={"OTEL_EXPORTER_OTLP_HEADERS": "a=b"},
        )
    for endpoint in ("https://collector.example", "http://127.0.0.1:4318", "http://localhost"):
        settings = telemetry.read_settings(
            otlp(endpoint, headers_env="OTLP_KEY"), tmp_path, "c", env=env
        )
        assert settings.otlp is not None
        assert settings.otlp.endpoint == endpoint.rstrip("/") + "/v1/traces"
    # No header at all: a collector inside the network over http is fine.
    assert telemetry.read_settings(otlp("http://collector.example"), tmp_path, "c", env={}).otlp


def test_the_endpoint_comes_from_the_key_then_the_variables_then_the_default(
    tmp_path: Path,
) -> None:
    both = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/custom/path",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://base.example:4318",
    }

    def resolved(section: dict[str, object], env: dict[str, str]) -> tuple[str, str]:
        otlp_settings = telemetry.read_settings(section, tmp_path, "c", env=env).otlp
        assert otlp_settings is not None
        return otlp_settings.endpoint, otlp_settings.source

    assert resolved(otlp("https://key.example/v1/x"), both) == (
        "https://key.example/v1/x",
        "c: [telemetry] endpoint",
    )
    assert resolved({"traces": "otlp"}, both) == (
        "https://traces.example/custom/path",
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    )
    base_only = {"OTEL_EXPORTER_OTLP_ENDPOINT": both["OTEL_EXPORTER_OTLP_ENDPOINT"]}
    assert resolved({"traces": "otlp"}, base_only)[0] == "https://base.example:4318/v1/traces"
    assert resolved({"traces": "otlp"}, {})[0] == "http://localhost:4318/v1/traces"
    with pytest.raises(ConfigurationError, match=r"^\$OTEL_EXPORTER_OTLP_ENDPOINT must be"):
        resolved({"traces": "otlp"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


def test_unknown_and_refused_keys_stop_the_installation_opening(system: Custos) -> None:
    home = system.settings.home
    write_config(system, '[telemetry]\ntraces = "otlp"\nendpont = "https://c"\n')
    with pytest.raises(ConfigurationError, match=r"unknown key 'endpont' in \[telemetry\]") as e:
        load_settings(home)
    assert "endpoint" in str(e.value)  # the hint names the key meant
    system.settings.config_path.write_text(
        '[telemetry]\ntraces = "otlp"\nheaders = "x-api-key=hunter2"\n', encoding="utf-8"
    )
    settings = load_settings(home)
    with pytest.raises(ConfigurationError, match="in clear") as refused:
        telemetry.configure(settings.section("telemetry"), home, str(settings.config_path))
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith(str(settings.config_path))


def test_serve_refuses_bad_telemetry_before_it_listens(system: Custos) -> None:
    write_config(
        system, '[telemetry]\ntraces = "otlp"\nendpoint = "https://c"\nheaders_file = "nope"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "custos", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "[telemetry] headers_file" in done.stderr
    assert "cannot be read" in done.stderr
    assert "serving" not in done.stdout


_NAME = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30)


@given(st.dictionaries(_NAME, _VALUE, min_size=1, max_size=5), st.sampled_from([",", "\n"]))
def test_headers_written_as_the_standard_says_read_back(
    headers: dict[str, str], separator: str
) -> None:
    text = separator.join(f"{name.upper()}={quote(value)}" for name, value in headers.items())
    assert telemetry.parse_headers(text, "h") == headers


@given(st.text(max_size=80))
def test_any_header_text_is_read_or_refused_clearly(text: str) -> None:
    refused = ""
    try:
        parsed = telemetry.parse_headers(text, "h")
    except ConfigurationError as exc:
        refused = str(exc)
    if refused:
        assert refused.startswith("h: ")
    else:
        assert parsed
        assert all(re.fullmatch(r"[\t -~]+", v) for v in parsed.values())


@given(st.text(max_size=60))
def test_any_endpoint_is_an_http_url_or_refused(raw: str) -> None:
    refused = ""
    try:
        settings = telemetry.read_settings(otlp(raw), Path("/h"), "c", env={})
    except ConfigurationError as exc:
        refused = str(exc)
    if refused:
        assert refused.startswith("c: [telemetry] endpoint")
    else:
        assert settings.otlp is not None
        assert settings.otlp.endpoint.startswith(("http://", "https://"))
