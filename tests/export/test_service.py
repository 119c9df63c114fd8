"""Export inside ``custos serve``: the service pushes what it decides without being asked,
/metrics shows decisions, ledger, witness and queue figures, /healthz says only "ok"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from prometheus_client import generate_latest

from custos.access import Custos
from custos.policy import AccessRequest
from tests.api.conftest import run_service
from tests.export.conftest import populate, write_config


def test_the_service_pushes_decisions_as_they_are_made(system: Custos, tmp_path: Path) -> None:
    populate(system)
    out = tmp_path / "pushed.jsonl"
    write_config(
        system,
        f'[[export]]\nname = "file"\nkind = "file"\npath = "{out}"\ninterval = 0.1\n'
        'events = ["decisions"]\n',
    )
    with Custos.open(system.settings.home) as served:
        for url, app in run_service(served):
            deadline = time.monotonic() + 20
            while not (out.exists() and out.read_text().count("\n") >= 4):
                assert time.monotonic() < deadline, "the service did not export"
                time.sleep(0.05)
            served.decide(AccessRequest("emp-6001", "user-1", "profile", "support"))
            last = served.ledger.size() - 1
            while f'"uid":"ledger:{last}"' not in out.read_text():
                assert time.monotonic() < deadline, "a new decision was not exported"
                time.sleep(0.05)
            text = generate_latest(app.state.registry).decode()
            assert 'custos_export_queue_depth{destination="file"} 0.0' in text
            assert 'custos_decisions_total{outcome="deny"}' in text
            assert "custos_ledger_checkpoint_age_seconds" in text
            assert "custos_witness_age_seconds NaN" in text  # no witness has cosigned
            with httpx.Client(base_url=url) as anonymous:
                health = anonymous.get("/healthz")
                assert health.status_code == 200
                assert health.json() == {"status": "ok"}
                assert health.content == b'{"status":"ok"}'  # no version, size or name
                assert anonymous.get("/metrics").status_code == 401
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["metadata"]["sequence"] for e in lines] == sorted(
        {e["metadata"]["sequence"] for e in lines}
    )
