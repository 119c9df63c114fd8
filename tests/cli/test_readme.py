"""The README's command blocks run as written, in order, against ``custos example``.

Every ```sh block of README.md is either run here, command by command, through the real CLI
(in-process, through Typer's runner: a subprocess per command would cost ~1.5 s each), or is
preceded by ``<!-- illustrative: why -->``. A placeholder with ``…`` stands for what a person
copies from the output above (``req-…``, ``grant-…``, ``cst_…``, the key from ``custos
keys``); anything else in a command is taken literally, so the README cannot drift from the
CLI, the example files or the ledger indices it names.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from custos.cli import app

ROOT = Path(__file__).resolve().parents[2]
ILLUSTRATIVE = re.compile(r"<!--\s*illustrative:\s*(.*?)\s*-->\s*$")
PASSWORD = "a README password"


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in README.md (1-based), for messages
    text: str
    illustrative: str | None  # the reason given, when marked


def readme_blocks(text: str) -> list[Block]:
    """Every ```sh block with the illustrative marker (and its reason) just before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        if lines[n].strip() == "```sh":
            start = n
            end = lines.index("```", n + 1)
            before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
            marker = ILLUSTRATIVE.search(before)
            blocks.append(
                Block(start + 1, "\n".join(lines[start + 1 : end]), marker and marker.group(1))
            )
            n = end
        n += 1
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    joined = block.replace("\\\n", " ")
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@dataclass
class Reader:
    """What a person following the README has seen so far: the ids to copy."""

    home: Path
    seen: dict[str, str] = field(default_factory=dict)

    def fill(self, command: str) -> list[str]:
        command = command.replace("~/.custos", str(self.home))
        for placeholder, kind in (
            ("req-…", "req"),
            ("grant-…", "grant"),
            ("cst_…", "token"),
            ("custos/…+…+…", "key"),
        ):
            if placeholder in command:
                assert kind in self.seen, f"{placeholder} before any command printed one"
                command = command.replace(placeholder, self.seen[kind])
        assert "…" not in command, f"a placeholder this test does not know: {command}"
        return shlex.split(command, comments=True)

    def note(self, output: str) -> None:
        for kind, pattern in (
            ("req", r"\breq-[0-9a-f]+"),
            ("grant", r"\bgrant-[0-9a-f]+"),
            ("token", r"\bcst_[A-Za-z0-9_\-]+"),
            ("key", r"verifier key: (\S+)"),
        ):
            found = re.findall(pattern, output)
            if found:
                self.seen[kind] = found[-1]


def test_every_readme_block_is_run_or_says_why_not() -> None:
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    for block in blocks:
        if block.illustrative is not None:
            assert len(block.illustrative) > 10, f"line {block.line}: give a reason"
        else:
            assert all(c.startswith("custos ") for c in commands(block.text)), block.line


def test_the_readme_runs_as_written(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()
    reader = Reader(home)
    outputs: dict[str, str] = {}
    ran = 0
    for block in readme_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
        if block.illustrative is not None:
            continue
        for command in commands(block.text):
            args = reader.fill(command)
            assert args[0] == "custos"
            result = runner.invoke(
                app, args[1:], input=f"{PASSWORD}\n{PASSWORD}\n", env={"COLUMNS": "200"}
            )
            assert result.exit_code == 0, (
                f"README line {block.line}: {command}\n{result.output}\n{result.exception!r}"
            )
            reader.note(result.output)
            outputs[" ".join(args[1:3])] = result.output
            ran += 1
    assert ran >= 25
    # What the README says about the outcomes is what they are.
    assert json.loads(outputs["check --principal"])["decision"] == "approval_required"
    read = json.loads(outputs["read --principal"])
    assert (read["decision"], read["precision"], read["ledger_index"]) == ("allow", "coarse", 7)
    assert read["records"]
    assert "protected_subject_access" in outputs["detect"]
    assert json.loads(outputs["log replay"])["same"] is True
    assert "verified" in outputs["report verify"]
    assert (work / "report.html").exists()
    assert (work / "W").is_dir()
