"""The vault: sensitive records encrypted under envelope keys, coarse by default, shredded
when their retention ends. See ``docs/design/vault.md``."""

from custos.vault.coarse import GeoLookup
from custos.vault.keys import KEK_FILE, KeyProvider, LocalKeyFile
from custos.vault.records import SensitiveRecord, parse_lines
from custos.vault.vault import (
    IngestReport,
    Release,
    ShredReport,
    Vault,
    live_categories,
    week_of,
)

__all__ = [
    "KEK_FILE",
    "GeoLookup",
    "IngestReport",
    "KeyProvider",
    "LocalKeyFile",
    "Release",
    "SensitiveRecord",
    "ShredReport",
    "Vault",
    "live_categories",
    "parse_lines",
    "week_of",
]
