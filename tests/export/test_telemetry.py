"""Traces of the guarded path through the OpenTelemetry SDK's own in-memory exporter:
spans for the decision, the ledger append and the vault read, with no personal data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from custos import telemetry
from custos.access import Custos
from custos.errors import ConfigurationError
from custos.policy import AccessRequest
from tests.factories import APPROVALS_WORLD, load_org, logins


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.install(provider)
    yield exporter
    telemetry.install(None)
    provider.shutdown()


def test_a_guarded_read_is_traced_without_personal_data(
    system: Custos, spans: InMemorySpanExporter
) -> None:
    load_org(system, APPROVALS_WORLD)
    system.ingest(logins("user-1", count=4), "logins.jsonl")
    spans.clear()
    system.read(
        AccessRequest("emp-5001", "user-1", "ip_history", "security_incident", ticket="T-12")
    )
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert {"custos.decide", "custos.vault.read", "custos.ledger.append"} <= set(finished)
    decide = finished["custos.decide"].attributes or {}
    assert decide["custos.requests"] == 1
    assert decide["custos.decisions.allow"] == 1
    read = finished["custos.vault.read"].attributes or {}
    assert (read["custos.category"], read["custos.precision"], read["custos.records"]) == (
        "ip_history",
        "coarse",
        4,
    )
    append = finished["custos.ledger.append"].attributes or {}
    assert append["custos.entries"] == 2
    assert append["custos.ledger.size"] == system.ledger.size()
    everything = json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    for personal in ("user-1", "emp-5001", "198.51.100", "T-12"):
        assert personal not in everything


def test_traces_are_off_by_default_and_cost_nothing(system: Custos) -> None:
    assert telemetry.configure({}, system.settings.home, "config.toml") is False
    with telemetry.span("custos.decide", n=1) as current:
        assert current is None


def test_file_traces_are_written_as_json(tmp_path: Path) -> None:
    try:
        assert telemetry.configure({"traces": "file", "path": "traces.jsonl"}, tmp_path, "c")
        with telemetry.span("custos.decide", **{"custos.requests": 3}):
            pass
        telemetry.flush()
    finally:
        telemetry.install(None)
    lines = (tmp_path / "traces.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["name"] == "custos.decide"


def test_bad_telemetry_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"\[telemetry\] traces must be one of"):
        telemetry.configure({"traces": "otlp-ish"}, tmp_path, "config.toml")
    with pytest.raises(ConfigurationError, match="needs path"):
        telemetry.configure({"traces": "file"}, tmp_path, "config.toml")
