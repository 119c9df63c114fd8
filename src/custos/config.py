"""Where custos keeps its state and how it is configured.

A *home* folder (``--home``, ``$CUSTOS_HOME``, default ``~/.custos``) holds:

- ``custos.db`` — the embedded SQLite database (unless ``CUSTOS_DATABASE_URL`` or
  ``database_url`` in the config file points elsewhere);
- ``config.toml`` — optional settings (residency regions, retention, …);
- ``policies/`` — the active Cedar policy pack, copied from the default pack by
  ``custos init`` so that it can be read, tested and changed;
- ``keys/`` — local key files (created by the parts that need them, mode 0600); with
  ``[keys] provider = "pkcs11"`` the vault's and the log's keys are in a token instead
  (:mod:`custos.hsm`) and ``keys/`` holds only what is not secret;
- ``detect/`` — detection's copy of the events and directory, kept between runs
  (:mod:`custos.detect.mirror`; derived from the database, removable at any time).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from custos.errors import ConfigurationError

HOME_ENV = "CUSTOS_HOME"
DATABASE_URL_ENV = "CUSTOS_DATABASE_URL"
CONFIG_FILE = "config.toml"
#: The PKCS#11 token's user PIN: from the environment only, never from config.toml.
PIN_ENV = "CUSTOS_PKCS11_PIN"
DEFAULT_KEK_LABEL = "custos-vault-kek"
DEFAULT_LOG_KEY_LABEL = "custos-log-key"
KEY_PROVIDERS = ("local", "pkcs11")

# European Economic Area: GDPR applies, so staff anywhere in it may serve its residents.
_EEA_CODES = (
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO"
)
_EEA: tuple[str, ...] = tuple(_EEA_CODES.split())

#: Jurisdictions whose data may be reached beyond coarse level only by staff in these
#: countries. A jurisdiction not listed is reachable only by staff in that same country.
DEFAULT_RESIDENCY: dict[str, tuple[str, ...]] = {
    "US": ("US",),
    "CA": ("CA", "US"),
    "GB": ("GB", *_EEA),
    "EU": _EEA,
    **dict.fromkeys(_EEA, _EEA),
}


#: Every section of config.toml and the keys custos reads in it: the one place to add a
#: setting (a key not here is refused by :func:`load_settings` as a typo, naming the nearest
#: known one). ``""`` is the top level; a dotted name is a table inside a section
#: (``[hooks.jira]``). Each key's meaning and type are checked where it is read.
CONFIG_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "": frozenset({"database_url"}),
    "keys": frozenset({"provider", "module", "token", "kek_label", "log_key_label"}),
    "vault": frozenset({"geoip", "city", "grid_km", "shred_interval"}),
    "ledger": frozenset({"origin", "witnesses", "checkpoint_interval"}),
    "service": frozenset(
        {"rate_limit", "burst", "max_body_bytes", "https", "operator_auth", "public_origin"}
    ),
    # Guarded SQL: the analyzer's k and the runner's limits (custos.access.query), and the
    # wire front's listening address, limits and TLS (custos.wire.WireSettings).
    "sql": frozenset(
        {
            "k",
            "row_cap",
            "statement_timeout",
            "listen",
            "port",
            "max_connections",
            "max_message_bytes",
            "idle_timeout",
            "auth_timeout",
            "tls_cert",
            "tls_key",
            "tls_client_ca",
            "allow_cleartext",
        }
    ),
    "service.oidc": frozenset(
        {"issuer", "client_id", "client_secret", "redirect_uri", "name", "scopes"}
    ),
    "on_behalf": frozenset(
        {
            "jwks_url",
            "issuer",
            "audience",
            "claim",
            "claim_pattern",
            "leeway",
            "max_lifetime",
            "jwks_refresh",
            "jwks_min_refresh",
            "exchange_seconds",
            "timeout",
        }
    ),
    "approvals": frozenset(
        {
            "request_ttl_hours",
            "grant_hours",
            "max_grant_hours",
            "break_glass_hours",
            "reciprocal_window_days",
            "approver_groups",
            "review_groups",
            "reviews_needed",
            "break_glass_open_limit",
            "webhook_url",
            "webhook_timeout",
        }
    ),
    # One [[export]] table (custos.export.config.KEYS; a test keeps the two equal).
    "export": frozenset(
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
    ),
    "telemetry": frozenset(
        {"traces", "path", "service_name", "endpoint", "headers_file", "headers_env", "timeout"}
    ),
    # Directory feeds (custos.feeds): the SCIM mapping and the ticket webhooks.
    "scim": frozenset({"role_attribute"}),
    "hooks": frozenset({"window_seconds"}),
    "hooks.jira": frozenset({"kind", "kind_field", "subject_field", "assignee_field"}),
    "hooks.servicenow": frozenset({"kind", "kind_field", "subject_field", "closed_states"}),
    # The fields of custos.detect.config.DetectConfig (a test keeps the two equal).
    "detect": frozenset(
        {
            "window_days",
            "retro_minutes",
            "near_days",
            "robust_k",
            "own_min_periods",
            "volume_min_subjects",
            "repeat_min_days",
            "repeat_gap_hours",
            "convergence_min_principals",
            "convergence_hours",
            "sensitive_categories",
            "locating_categories",
            "minor_categories",
            "new_role_days",
            "new_role_min_subjects",
            "leaving_min_subjects",
            "usual_hour_share",
            "usual_min_events",
            "off_hours_min_subjects",
            "retry_minutes",
            "shopping_min_purposes",
            "retry_min_denials",
            "break_glass_max",
            "pretext_min_subjects",
            "rare_category_share",
            "rare_min_peer_events",
            "rare_category_min_subjects",
            "export_min_records",
            "sql_probing_refusals",
            "sql_probing_minutes",
            "sql_hunt_purposes",
            "max_evidence",
            "suppress_days",
            "replay",
            "interval",
            "burst_events",
            "lease_seconds",
            "ring_days",
            "ring_max",
            "grant_convergence_min_principals",
            "grant_volume_min",
        }
    ),
}
#: Sections whose keys are names of the user's own, not settings: jurisdiction codes, roles,
#: and the data categories of the active policy pack (``[vault.retention_days]``: the pack
#: is not known here, so :meth:`custos.access.Custos.retention_days` checks those keys
#: against its vocabulary when the vault opens and whenever a pack is activated).
OPEN_SECTIONS: Final = frozenset({"residency", "scim.role_groups", "vault.retention_days"})
#: Keys refused by their own reader with a message of their own (a secret written down:
#: :meth:`KeysConfig.from_section` and :func:`custos.telemetry.read_settings` say where it
#: belongs instead).
_REFUSED_ELSEWHERE: Final = {
    "keys": frozenset({"pin", "so_pin"}),
    "telemetry": frozenset({"headers"}),
}


def check_known_keys(config: Mapping[str, Any], path: Path) -> None:
    """Refuse a section or key of ``config.toml`` that custos does not read (a typo would
    otherwise be ignored, silently keeping the default).

    Raises :class:`ConfigurationError` naming the key, its section, the file and the nearest
    known name.
    """
    _check_table(config, "", path)


def _check_table(table: Mapping[str, Any], section: str, path: Path) -> None:
    known = CONFIG_KEYS[section]
    tables = {
        name.removeprefix(f"{section}.") if section else name
        for name in [*CONFIG_KEYS, *OPEN_SECTIONS]
        if name and name.rpartition(".")[0] == section
    }
    for key, value in table.items():
        inner = f"{section}.{key}" if section else key
        if key in tables:
            # A value that is not a table is its reader's error ("must be a table").
            if isinstance(value, Mapping) and inner not in OPEN_SECTIONS:
                _check_table(value, inner, path)
            elif isinstance(value, list):  # an array of tables: [[export]]
                for item in value:
                    if isinstance(item, Mapping):
                        _check_table(item, inner, path)
            continue
        if key in known or key in _REFUSED_ELSEWHERE.get(section, ()):
            continue
        is_table = isinstance(value, Mapping)
        candidates = sorted(tables if is_table else known) or sorted(known | tables)
        nearest = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
        name = f"[{inner}]" if is_table else repr(key)
        what = "section" if is_table else "key"
        where = f"in [{section}]" if section else "at the top level"
        if nearest:
            near = f"[{section + '.' if section else ''}{nearest[0]}]" if is_table else nearest[0]
            hint = f"did you mean {near}?"
        else:
            hint = "known: " + ", ".join(candidates)
        raise ConfigurationError(f"{path}: unknown {what} {name} {where}", hint=hint)


def default_home() -> Path:
    """The home folder from ``$CUSTOS_HOME``, else ``~/.custos``."""
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else Path.home() / ".custos"


@dataclass(frozen=True)
class KeysConfig:
    """``[keys]`` of config.toml: where the vault's KEK and the log's signing key live.

    ``provider`` is ``local`` (files in the home's ``keys/``, the default) or ``pkcs11``,
    which needs ``module`` (the PKCS#11 library's path) and ``token`` (its label) and may name
    ``kek_label`` and ``log_key_label`` (the keys' labels in the token).
    """

    provider: str = "local"
    module: Path | None = None
    token: str | None = None
    kek_label: str = DEFAULT_KEK_LABEL
    log_key_label: str = DEFAULT_LOG_KEY_LABEL

    @classmethod
    def from_section(cls, section: Mapping[str, Any], where: str) -> KeysConfig:
        """Parse ``[keys]`` (``where`` names the file in messages).

        Raises :class:`ConfigurationError` for an unknown provider, a missing or mistyped
        field, and for a PIN written into the file (it belongs in the environment).
        """
        if "pin" in section or "so_pin" in section:
            # Never echo the value: it is a secret that should not have been written down.
            raise ConfigurationError(
                f"{where}: [keys] must not hold the token's PIN",
                hint=f"remove it from the file and set ${PIN_ENV} instead",
            )
        provider = section.get("provider", "local")
        if provider not in KEY_PROVIDERS:
            raise ConfigurationError(f"{where}: [keys] provider must be 'local' or 'pkcs11'")
        kek_label, log_key_label = (
            _label(section, "kek_label", DEFAULT_KEK_LABEL, where),
            _label(section, "log_key_label", DEFAULT_LOG_KEY_LABEL, where),
        )
        if kek_label == log_key_label:
            raise ConfigurationError(f"{where}: [keys] kek_label and log_key_label must differ")
        if provider == "local":
            return cls(kek_label=kek_label, log_key_label=log_key_label)
        module, token = section.get("module"), section.get("token")
        if not isinstance(module, str) or not module:
            raise ConfigurationError(
                f"{where}: [keys] provider 'pkcs11' needs module, the path of the PKCS#11 "
                "library (for instance /usr/lib/softhsm/libsofthsm2.so)"
            )
        if not isinstance(token, str) or not token:
            raise ConfigurationError(
                f"{where}: [keys] provider 'pkcs11' needs token, the token's label"
            )
        return cls("pkcs11", Path(module), token, kek_label, log_key_label)


def _label(section: Mapping[str, Any], name: str, default: str, where: str) -> str:
    value = section.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{where}: [keys] {name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one custos home."""

    home: Path
    database_url: str
    residency: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_RESIDENCY)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def policy_dir(self) -> Path:
        return self.home / "policies"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    def section(self, name: str) -> Mapping[str, Any]:
        """A table of ``config.toml`` by name (empty when absent)."""
        value = self.extra.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"{self.config_path}: [{name}] must be a table")
        return value

    def number(self, section: str, key: str, default: float) -> float:
        """A positive number from ``[section] key``. Raises :class:`ConfigurationError`."""
        value = self.section(section).get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigurationError(
                f"{self.config_path}: [{section}] {key} must be a positive number"
            )
        return float(value)

    def whole(self, section: str, key: str, default: int) -> int:
        """A positive whole number from ``[section] key``. Raises :class:`ConfigurationError`."""
        value = self.section(section).get(key, default)
        return self.positive_whole(value, f"[{section}] {key}")

    def positive_whole(self, value: Any, name: str) -> int:
        """``value`` if it is a positive whole number. Raises :class:`ConfigurationError`."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{self.config_path}: {name} must be a positive whole number")
        return value

    def flag(self, section: str, key: str, default: bool) -> bool:
        """A true/false from ``[section] key`` (a TOML boolean: the string "false" is not
        false). Raises :class:`ConfigurationError`."""
        value = self.section(section).get(key, default)
        if not isinstance(value, bool):
            raise ConfigurationError(f"{self.config_path}: [{section}] {key} must be true or false")
        return value

    @property
    def keys(self) -> KeysConfig:
        """``[keys]``: where the vault's KEK and the log's signing key are kept.
        Raises :class:`ConfigurationError`."""
        return KeysConfig.from_section(self.section("keys"), str(self.config_path))

    def allowed_countries(self, jurisdiction: str) -> tuple[str, ...]:
        """Countries whose staff may see ``jurisdiction``'s data beyond coarse level."""
        return self.residency.get(jurisdiction, (jurisdiction,))


def decision_settings(settings: Settings) -> dict[str, Any]:
    """The settings that change decisions, as JSON values: residency (which countries' staff
    may see each jurisdiction beyond coarse level) and the approval rules. custos ledgers
    them whenever they change, so a decision can be replayed with the settings it used."""
    return {
        "residency": {k: list(v) for k, v in sorted(settings.residency.items())},
        "approvals": dict(settings.section("approvals")),
    }


def decision_settings_digest(settings: Settings) -> str:
    """SHA-256 (hex) of :func:`decision_settings` as canonical JSON: what a ``settings``
    ledger entry and every decision made under those settings name."""
    body = json.dumps(decision_settings(settings), sort_keys=True).encode()
    return hashlib.sha256(body).hexdigest()


def load_settings(home: Path | None = None) -> Settings:
    """Resolve settings for ``home`` (default :func:`default_home`).

    Raises :class:`ConfigurationError` when ``config.toml`` exists but is not valid TOML
    or has fields of the wrong type.
    """
    home = (home or default_home()).expanduser().resolve()
    config: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.exists():
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read ({exc.strerror})") from None
    check_known_keys(config, path)
    url = os.environ.get(DATABASE_URL_ENV) or config.get("database_url")
    if url is not None and not isinstance(url, str):
        raise ConfigurationError(f"{path}: database_url must be a string")
    if not url:
        url = f"sqlite:///{home / 'custos.db'}"
    residency = dict(DEFAULT_RESIDENCY)
    extra_residency = config.get("residency", {})
    if not isinstance(extra_residency, dict):
        raise ConfigurationError(
            f"{path}: [residency] must be a table of jurisdiction = [countries]"
        )
    for jurisdiction, countries in extra_residency.items():
        if not isinstance(countries, list) or not all(isinstance(c, str) for c in countries):
            raise ConfigurationError(
                f"{path}: residency.{jurisdiction} must be a list of country codes"
            )
        residency[jurisdiction] = tuple(countries)
    return Settings(home=home, database_url=url, residency=residency, extra=config)
