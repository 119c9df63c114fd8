"""config.toml: a wrong value is a ConfigurationError naming the key, never a crash."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from custos.access import Custos
from custos.api import create_app
from custos.config import CONFIG_KEYS, load_settings
from custos.detect.config import DetectConfig
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


def test_a_retention_for_a_category_the_pack_lacks_is_refused_when_custos_opens(
    home: Path,
) -> None:
    """[vault.retention_days] takes the active pack's categories (config.py cannot know
    them): a typo is refused when the pack is activated and when the vault opens, naming the
    file, the key and the nearest category; nothing is decided meanwhile."""
    Custos.init(home).close()
    (home / "config.toml").write_text("[vault.retention_days]\nip_histroy = 30\n")
    load_settings(home)  # the section is open: its words are the pack's
    for use in ("vault", "policy_pack"):
        with Custos.open(home) as system, pytest.raises(ConfigurationError) as refused:
            getattr(system, use)
        message = refused.value.message
        assert message.startswith(f"{home / 'config.toml'}: [vault.retention_days] ")
        assert (
            "unknown category 'ip_histroy' (did you mean 'ip_history'? valid: profile," in message
        )
        assert refused.value.hint is not None
        assert "vocabulary.yaml" in refused.value.hint
    (home / "config.toml").write_text("[vault.retention_days]\nip_history = 30\n")
    with Custos.open(home) as system:
        assert system.vault.retention_days["ip_history"] == 30


@pytest.mark.parametrize(
    ("toml", "message", "hint"),
    [
        ("[approvals]\nreviews_neded = 3\n", r"unknown key 'reviews_neded' in \[approvals\]",
         "did you mean reviews_needed?"),
        ('[vaultt]\ngeoip = "x.mmdb"\n', r"unknown section \[vaultt\] at the top level",
         "did you mean [vault]?"),
        ('[service.odic]\nissuer = "https://id.example"\n',
         r"unknown section \[service.odic\] in \[service\]", "did you mean [service.oidc]?"),
        ('databse_url = "sqlite:///x.db"\n', r"unknown key 'databse_url' at the top level",
         "did you mean database_url?"),
        ("[detect]\nzzz = 1\n", r"unknown key 'zzz' in \[detect\]", "known: break_glass_max"),
    ],
)  # fmt: skip
def test_a_typo_in_config_toml_is_named_with_the_nearest_setting(
    tmp_path: Path, toml: str, message: str, hint: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_settings(home)
    assert str(home / "config.toml") in caught.value.message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(hint)


def test_every_setting_the_readme_and_parts_name_is_known(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        'database_url = "sqlite:///x.db"\n'
        '[residency]\nUS = ["US"]\nXK = ["XK"]\n'
        "[vault]\ncity = true\ngrid_km = 5\nshred_interval = 60\n"
        "[vault.retention_days]\nip_history = 30\nlocation = 7\n"
        "[approvals]\nreviews_needed = 2\nwebhook_timeout = 3\n"
        "[service]\nburst = 10\n[service.oidc]\nscopes = 'openid'\n"
        "[ledger]\ncheckpoint_interval = 5\n[detect]\nrobust_k = 3.5\n[keys]\nprovider = 'local'\n",
        encoding="utf-8",
    )
    assert load_settings(home).section("detect") == {"robust_k": 3.5}
    # The [detect] keys are DetectConfig's fields, no more and no fewer.
    assert {f.name for f in fields(DetectConfig)} == CONFIG_KEYS["detect"]
