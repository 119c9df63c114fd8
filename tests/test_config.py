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
        ("[service]\npublic_origin = 443\n", r"\[service\] public_origin must be a string"),
        *(
            (f'[service]\npublic_origin = "{bad}"\n', r"public_origin must be scheme and host")
            for bad in (
                "custos.example",
                "ftp://custos.example",
                "https://custos.example/app",
                "https://user@custos.example",
                "https://custos.example?x=1",
                "https://",
            )
        ),
        ('[service]\npublic_origin = "https://c.example:x"\n', r"port that is no number"),
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


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("https://Custos.Example/", "https://custos.example"),
        ("https://custos.example:443", "https://custos.example"),
        ("http://custos.example:8080", "http://custos.example:8080"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_the_public_origin_is_written_as_browsers_write_it(
    home: Path, given: str, origin: str
) -> None:
    Custos.init(home).close()
    (home / "config.toml").write_text(f'[service]\npublic_origin = "{given}"\n')
    with Custos.open(home) as system:
        assert create_app(system).state.public_origin == origin


@pytest.mark.parametrize("origin", ["custos log", "log+b", "", "lög.example"])
def test_an_origin_no_key_may_have_is_refused_before_anything_is_made(
    home: Path, origin: str
) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f'[ledger]\norigin = "{origin}"\n', encoding="utf-8")
    if origin == "":  # empty means "choose one": a fine home
        Custos.init(home).close()
        return
    with pytest.raises(ConfigurationError, match="must be printable ASCII without spaces"):
        Custos.init(home)
    assert not (home / "keys").exists()
