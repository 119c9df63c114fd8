"""docs/design/detect.md's quality figures are exactly what `custos eval --seeds 1-5` prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from custos.sim.run import evaluate_seeds, parse_seeds, seeds_text

DOC = Path(__file__).resolve().parents[2] / "docs" / "design" / "detect.md"


def test_parse_seeds() -> None:
    assert parse_seeds("1-3,7,2") == [1, 2, 3, 7]
    assert parse_seeds("4") == [4]


@pytest.mark.slow
def test_the_design_notes_quality_table_is_what_the_command_prints() -> None:
    found = re.search(
        r"<!-- quality: custos eval --seeds (\S+) -->\n```\n\$ custos eval --seeds \1\n"
        r"(.*?)\n```\n<!-- /quality -->",
        DOC.read_text(encoding="utf-8"),
        re.DOTALL,
    )
    assert found is not None, "the quality block is missing from detect.md"
    runs = evaluate_seeds(parse_seeds(found.group(1)))
    assert seeds_text(runs) == found.group(2)
