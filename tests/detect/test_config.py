"""The [detect] section of config.toml: defaults, overrides, and clear errors."""

from __future__ import annotations

import pytest

from custos.access import Custos
from custos.detect import DetectConfig, run_detection
from custos.errors import ConfigurationError


def test_overrides_and_defaults() -> None:
    config = DetectConfig.from_section(
        {"robust_k": 3, "repeat_min_days": 5, "sensitive_categories": ["credentials"]}
    )
    assert config.robust_k == 3.0
    assert config.repeat_min_days == 5
    assert config.sensitive_categories == ("credentials",)
    assert config.window_days == DetectConfig().window_days


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"repeat_min_day": 3}, "unknown setting 'repeat_min_day'"),
        ({"repeat_min_days": "three"}, "non-negative integer"),
        ({"repeat_min_days": True}, "non-negative integer"),
        ({"robust_k": -1}, "non-negative number"),
        ({"sensitive_categories": "messages"}, "list of strings"),
        ({"window_days": 0}, "at least 1"),
    ],
)
def test_bad_settings_name_the_key(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DetectConfig.from_section(section)


def test_an_empty_store_runs_and_finds_nothing(system: Custos) -> None:
    run = run_detection(system.db, system.directory)
    assert (run.alerts, run.events, run.findings) == ([], 0, 0)


def test_config_file_section_reaches_detection(system: Custos) -> None:
    system.settings.config_path.write_text("[detect]\nrobust_k = 'high'\n", encoding="utf-8")
    reopened = Custos.open(system.settings.home)
    try:
        with pytest.raises(ConfigurationError, match="robust_k"):
            run_detection(reopened.db, reopened.directory, reopened.settings.section("detect"))
    finally:
        reopened.close()
