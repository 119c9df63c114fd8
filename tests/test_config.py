"""config.toml: a wrong value is a ConfigurationError naming the key, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from custos.access import Custos
from custos.api import create_app
from custos.errors import ConfigurationError


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[vault]\ngrid_km = "ten"\n', r"\[vault\] grid_km must be a positive number"),
        ("[vault]\ngrid_km = 0\n", r"\[vault\] grid_km must be a positive number"),
        ('[vault]\ngeoip = "x.mmdb"\ncity = "false"\n', r"\[vault\] city must be true or false"),
        ('[vault.retention_days]\nip_history = "x"\n', r"ip_history must be a positive whole"),
        ("[vault]\nretention_days = 3\n", r"\[vault.retention_days\] must be a table"),
    ],
)
def test_bad_vault_settings_name_the_key(home: Path, toml: str, message: str) -> None:
    Custos.init(home).close()
    (home / "config.toml").write_text(toml)
    with Custos.open(home) as system, pytest.raises(ConfigurationError, match=message):
        _ = system.vault


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[service]\nhttps = "no"\n', r"\[service\] https must be true or false"),
        ("[service]\nrate_limit = -1\n", r"\[service\] rate_limit must be a positive number"),
        ("[service]\nmax_body_bytes = 1.5\n", r"max_body_bytes must be a positive whole number"),
    ],
)
def test_bad_service_settings_name_the_key(home: Path, toml: str, message: str) -> None:
    Custos.init(home).close()
    (home / "config.toml").write_text(toml)
    with Custos.open(home) as system, pytest.raises(ConfigurationError, match=message):
        create_app(system)


def test_a_config_file_that_cannot_be_read_is_named(home: Path) -> None:
    Custos.init(home).close()
    (home / "config.toml").mkdir()
    with pytest.raises(ConfigurationError, match=r"config.toml: cannot read"):
        Custos.open(home)
