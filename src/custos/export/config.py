"""``[[export]]`` tables of config.toml: the destinations events are pushed to.

```toml
[[export]]
name = "siem-file"            # unique; names the destination's cursor and metrics
kind = "file"                 # file | syslog | webhook
path = "export/ocsf.jsonl"    # relative to the home folder

[[export]]
name = "siem-syslog"
kind = "syslog"
host = "127.0.0.1"
port = 6514
transport = "tcp"             # tcp (RFC 6587 octet counting) | udp
facility = 13                 # log audit

[[export]]
name = "soar"
kind = "webhook"
url = "https://soar.example/hooks/custos"
secret_env = "CUSTOS_EXPORT_SOAR_SECRET"   # default: $CUSTOS_WEBHOOK_SECRET, keys/webhook.secret
events = ["alerts", "approvals"]           # default: all of decisions, releases, approvals, alerts
```

Every destination also takes ``batch`` (events per send, default 500), ``interval`` (seconds
between rounds once caught up, default 5), ``timeout`` (seconds, default 5), and a webhook
``retries`` (default 3) and ``backoff`` (seconds, default 0.5).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from custos.config import Settings
from custos.errors import ConfigurationError
from custos.export.destinations import (
    Destination,
    FileDestination,
    SyslogDestination,
    WebhookDestination,
)
from custos.export.ocsf import KINDS

KINDS_OF_DESTINATION: Final = ("file", "syslog", "webhook")
#: The keys of one ``[[export]]`` table (config.CONFIG_KEYS["export"] is this set).
KEYS: Final = frozenset(
    {
        "name",
        "kind",
        "events",
        "batch",
        "interval",
        "timeout",
        "path",
        "host",
        "port",
        "transport",
        "facility",
        "url",
        "secret_env",
        "retries",
        "backoff",
    }
)
WEBHOOK_SECRET_ENV: Final = "CUSTOS_WEBHOOK_SECRET"  # noqa: S105 - a variable's name
WEBHOOK_SECRET_FILE: Final = "webhook.secret"  # noqa: S105 - a file's name
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class DestinationConfig:
    """One ``[[export]]`` table, checked."""

    name: str
    kind: str
    events: frozenset[str] = frozenset(KINDS)
    batch: int = 500
    interval: float = 5.0
    timeout: float = 5.0
    path: Path | None = None
    host: str = ""
    port: int = 0
    transport: str = "tcp"
    facility: int = 13
    url: str = ""
    secret_env: str = WEBHOOK_SECRET_ENV
    retries: int = 3
    backoff: float = 0.5


def destination_configs(settings: Settings) -> list[DestinationConfig]:
    """Every ``[[export]]`` table of ``settings``, in file order.

    Raises :class:`ConfigurationError` naming the file, the table (by position and name)
    and the field for anything missing, mistyped or out of range, and for two tables with
    one name.
    """
    tables = settings.extra.get("export", [])
    where = f"{settings.config_path}"
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigurationError(f"{where}: export must be written as [[export]] tables")
    configs: list[DestinationConfig] = []
    for number, table in enumerate(tables, 1):
        configs.append(_one(table, f"{where}: [[export]] #{number}", settings.home))
    names = [c.name for c in configs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigurationError(f"{where}: two [[export]] tables are named {name!r}")
    return configs


def _one(table: Mapping[str, Any], where: str, home: Path) -> DestinationConfig:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"{where}: name must be 1-64 letters, digits, '.', '_' or '-' (starting with "
            "a letter or digit)"
        )
    where = f"{where} ({name})"
    kind = table.get("kind")
    if kind not in KINDS_OF_DESTINATION:
        raise ConfigurationError(f"{where}: kind must be one of {', '.join(KINDS_OF_DESTINATION)}")
    events = table.get("events", list(KINDS))
    if (
        not isinstance(events, list)
        or not events
        or not all(isinstance(e, str) and e in KINDS for e in events)
    ):
        raise ConfigurationError(f"{where}: events must be a non-empty list of {', '.join(KINDS)}")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "events": frozenset(events),
        "batch": _whole(table, "batch", 500, where, most=100_000),
        "interval": _number(table, "interval", 5.0, where),
        "timeout": _number(table, "timeout", 5.0, where),
    }
    if kind == "file":
        path = table.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigurationError(f"{where}: a file destination needs path")
        full = Path(path).expanduser()
        return DestinationConfig(**common, path=full if full.is_absolute() else home / full)
    if kind == "syslog":
        host = table.get("host")
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"{where}: a syslog destination needs host")
        transport = table.get("transport", "tcp")
        if transport not in ("tcp", "udp"):
            raise ConfigurationError(f"{where}: transport must be 'tcp' or 'udp'")
        facility = table.get("facility", 13)
        if isinstance(facility, bool) or not isinstance(facility, int) or not 0 <= facility <= 23:
            raise ConfigurationError(f"{where}: facility must be a whole number from 0 to 23")
        return DestinationConfig(
            **common,
            host=host,
            port=_whole(table, "port", 0, where, most=65535, needed=True),
            transport=transport,
            facility=facility,
        )
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}: a webhook destination needs url, an http(s) URL")
    secret_env = table.get("secret_env", WEBHOOK_SECRET_ENV)
    if not isinstance(secret_env, str) or not secret_env:
        raise ConfigurationError(f"{where}: secret_env must name an environment variable")
    retries = table.get("retries", 3)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
        raise ConfigurationError(f"{where}: retries must be a whole number from 0 to 20")
    return DestinationConfig(
        **common,
        url=url,
        secret_env=secret_env,
        retries=retries,
        backoff=_number(table, "backoff", 0.5, where),
    )


def _number(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{where}: {key} must be a positive number")
    return float(value)


def _whole(
    table: Mapping[str, Any],
    key: str,
    default: int,
    where: str,
    *,
    most: int,
    needed: bool = False,
) -> int:
    if needed and key not in table:
        raise ConfigurationError(f"{where}: {key} is needed")
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigurationError(f"{where}: {key} must be a whole number from 1 to {most}")
    return value


def build(config: DestinationConfig, settings: Settings) -> Destination:
    """The destination a checked table describes. Raises :class:`ConfigurationError` when a
    webhook's secret is found neither in its environment variable nor in the home's keys."""
    if config.kind == "file":
        assert config.path is not None
        return FileDestination(config.name, config.path)
    if config.kind == "syslog":
        return SyslogDestination(
            config.name,
            config.host,
            config.port,
            transport=config.transport,
            facility=config.facility,
            timeout=config.timeout,
        )
    return WebhookDestination(
        config.name,
        config.url,
        _secret(config, settings),
        timeout=config.timeout,
        retries=config.retries,
        backoff=config.backoff,
    )


def _secret(config: DestinationConfig, settings: Settings) -> bytes:
    value = os.environ.get(config.secret_env)
    if value:
        return value.strip().encode()
    path = settings.keys_dir / WEBHOOK_SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if not text:
        raise ConfigurationError(
            f"{settings.config_path}: export {config.name!r} needs a signing secret",
            hint=f"set ${config.secret_env} or create {path}",
        )
    return text.encode()
