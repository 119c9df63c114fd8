"""``[[export]]`` tables: what is accepted, and a clear error naming the file, the table and
the field for everything else (never a traceback, never a secret)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custos.config import CONFIG_KEYS, Settings, load_settings
from custos.errors import ConfigurationError
from custos.export.config import KEYS, build, destination_configs
from custos.export.destinations import FileDestination, SyslogDestination, WebhookDestination


def settings_with(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    return load_settings(tmp_path)


def test_the_config_keys_are_the_exporters() -> None:
    assert CONFIG_KEYS["export"] == KEYS


def test_three_kinds_of_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    s = settings_with(
        tmp_path,
        """
[[export]]
name = "f"
kind = "file"
path = "export/ocsf.jsonl"
[[export]]
name = "s"
kind = "syslog"
host = "::1"
port = 514
transport = "udp"
[[export]]
name = "w"
kind = "webhook"
url = "https://siem.example/in"
secret_env = "HOOK_SECRET"
events = ["alerts"]
""",
    )
    f, sy, w = destination_configs(s)
    assert f.path == tmp_path / "export" / "ocsf.jsonl"
    assert f.batch == 500
    assert (sy.host, sy.port, sy.transport, sy.facility) == ("::1", 514, "udp", 13)
    assert w.events == frozenset({"alerts"})
    assert w.retries == 3
    assert isinstance(build(f, s), FileDestination)
    assert isinstance(build(sy, s), SyslogDestination)
    hook = build(w, s)
    assert isinstance(hook, WebhookDestination)
    assert hook.secret == b"s3cret"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "a"\nkind = "ftp"', r"#1 \(a\): kind must be one of file, syslog, webhook"),
        ('kind = "file"\npath = "x"', "#1: name must be"),
        ('name = "a b"\nkind = "file"', "#1: name must be"),
        ('name = "a"\nkind = "file"', r"\(a\): a file destination needs path"),
        ('name = "a"\nkind = "syslog"\nhost = "h"', r"\(a\): port is needed"),
        ('name = "a"\nkind = "syslog"\nhost = "h"\nport = 70000', "port must be a whole number"),
        ('name = "a"\nkind = "syslog"\nhost = "h"\nport = 1\ntransport = "tls"', "transport"),
        ('name = "a"\nkind = "syslog"\nhost = "h"\nport = 1\nfacility = 24', "facility"),
        ('name = "a"\nkind = "webhook"\nurl = "ftp://x"', "needs url, an http"),
        ('name = "a"\nkind = "file"\npath = "x"\nevents = ["logins"]', "events must be"),
        ('name = "a"\nkind = "file"\npath = "x"\nbatch = 0', "batch must be"),
        ('name = "a"\nkind = "file"\npath = "x"\ninterval = -1', "interval must be"),
    ],
)
def test_a_bad_table_is_named(tmp_path: Path, table: str, message: str) -> None:
    s = settings_with(tmp_path, f"[[export]]\n{table}\n")
    with pytest.raises(ConfigurationError, match=message) as caught:
        destination_configs(s)
    assert str(tmp_path / "config.toml") in caught.value.message


def test_an_unknown_key_in_an_export_table_is_refused_without_its_value(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[[export]]\nname = "w"\nkind = "webhook"\nurl = "https://x"\nsecret = "hunter2"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"unknown key 'secret' in \[export\]") as caught:
        load_settings(tmp_path)
    assert "hunter2" not in str(caught.value)
    assert "secret_env" in str(caught.value)


def test_two_tables_with_one_name(tmp_path: Path) -> None:
    one = '[[export]]\nname = "a"\nkind = "file"\npath = "x"\n'
    with pytest.raises(ConfigurationError, match="two \\[\\[export\\]\\] tables are named 'a'"):
        destination_configs(settings_with(tmp_path, one + one))


def test_a_webhook_without_a_secret_says_where_to_put_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUSTOS_WEBHOOK_SECRET", raising=False)
    s = settings_with(tmp_path, '[[export]]\nname = "w"\nkind = "webhook"\nurl = "https://x"\n')
    (config,) = destination_configs(s)
    with pytest.raises(ConfigurationError, match="needs a signing secret") as caught:
        build(config, s)
    assert "CUSTOS_WEBHOOK_SECRET" in str(caught.value)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.text(max_size=10), max_size=3),
    st.sampled_from(["file", "syslog", "webhook", "tcp", "udp", "decisions", "alerts"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=st.lists(st.dictionaries(st.sampled_from(sorted(KEYS)), VALUES), max_size=3))
def test_any_table_is_taken_or_refused_clearly(
    tmp_path: Path, tables: list[dict[str, Any]]
) -> None:
    s = Settings(home=tmp_path, database_url="sqlite://", extra={"export": tables})
    try:
        configs = destination_configs(s)
    except ConfigurationError as exc:
        refused = exc.message
    else:
        refused = ""
    if refused:
        assert "[[export]]" in refused
        return
    assert len(configs) == len(tables)
    for config in configs:
        assert config.kind in ("file", "syslog", "webhook")
        assert config.batch >= 1


def test_export_must_be_an_array_of_tables(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, database_url="sqlite://", extra={"export": {"name": "a"}})
    with pytest.raises(ConfigurationError, match=r"\[\[export\]\] tables"):
        destination_configs(s)
