"""A witness checks the service's log through the authenticated API, cosigns, and hands the
cosignature back; the log keeps only cosignatures by witnesses it was told to trust."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from custos.access import Custos
from custos.ledger import Witness
from custos.policy import AccessRequest
from tests.api.conftest import populate, run_service


def test_a_witness_cosigns_through_the_api(system: Custos, tmp_path: Path) -> None:
    tokens = populate(system)
    trusted = Witness.create(tmp_path / "w1", "witness-one")
    stranger = Witness.create(tmp_path / "w2", "witness-two")
    settings = dataclasses.replace(
        system.settings,
        extra={**system.settings.extra, "ledger": {"witnesses": [trusted.signer.verifier_key()]}},
    )
    configured = Custos(settings, system.db)
    configured.decide(AccessRequest("emp-3001", "user-1", "profile", "trust_safety", ticket="T-11"))
    configured.ledger.checkpoint()
    for url, _app in run_service(configured):
        env = {**os.environ, "CUSTOS_WITNESS_TOKEN": tokens["monitor"]}

        def witness(
            folder: Path, *extra: str, url: str = url, env: dict[str, str] = env
        ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "custos",
                    "witness",
                    "check",
                    "--state",
                    str(folder),
                    "--log",
                    f"{url}/v1/ledger",
                    "--log-key",
                    configured.ledger.signer.verifier_key(),
                    "--json",
                    *extra,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )

        done = witness(tmp_path / "w1", "--submit")
        assert done.returncode == 0, done.stderr
        size = json.loads(done.stdout)["size"]
        assert [w for w, _ in configured.ledger.cosignatures()[size]] == ["witness-one"]
        refused = witness(tmp_path / "w2", "--submit")
        assert refused.returncode != 0
        assert "no valid cosignature by a configured witness" in refused.stdout
        assert stranger.state()  # it cosigned locally, but the log did not keep it
        assert [w for w, _ in configured.ledger.cosignatures()[size]] == ["witness-one"]
        with httpx.Client(base_url=url, timeout=30) as anonymous:
            assert anonymous.get("/v1/ledger/checkpoint").status_code == 401
        no_token = subprocess.run(
            [
                sys.executable,
                "-m",
                "custos",
                "witness",
                "check",
                "--state",
                str(tmp_path / "w3"),
                "--log",
                f"{url}/v1/ledger",
                "--log-key",
                configured.ledger.signer.verifier_key(),
            ],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "CUSTOS_WITNESS_TOKEN"},
            timeout=120,
            check=False,
        )
        assert no_token.returncode != 0
