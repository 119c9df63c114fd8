"""Running the real command line in-process as an operator would, and reading what it
logged: shared by the tests of who acts (tests/cli, tests/approvals, tests/accounts,
tests/detect)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from custos.access import Custos
from custos.cli import main


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``custos …`` run in this process against the test's home (``$CUSTOS_HOME`` set by the
    ``home`` fixture), with ``$CUSTOS_TOKEN`` as given (absent when None)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def __call__(self, *args: str, token: str | None = None, stdin: str | None = None) -> Ran:
        if token is None:
            self.monkeypatch.delenv("CUSTOS_TOKEN", raising=False)
        else:
            self.monkeypatch.setenv("CUSTOS_TOKEN", token)
        if stdin is not None:
            import io

            self.monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        self.capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self.capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    def ok(self, *args: str, token: str | None = None, stdin: str | None = None) -> Any:
        ran = self(*args, "--json", token=token, stdin=stdin)
        assert ran.code == 0, ran.err + ran.out
        return ran.json()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(monkeypatch, capsys)


def require_operators(home: Path) -> None:
    """Turn ``[service] operator_auth`` on in the home's config.toml."""
    with (home / "config.toml").open("a") as handle:
        handle.write("\n[service]\noperator_auth = true\n")


def entries_since(system: Custos, since: int) -> list[dict[str, Any]]:
    """The ledger entries appended at or after index ``since``."""
    return [json.loads(e) for _, e in system.ledger.entries(since, system.ledger.size())]


def of_type(system: Custos, since: int, kind: str) -> list[dict[str, Any]]:
    return [e for e in entries_since(system, since) if e["type"] == kind]
