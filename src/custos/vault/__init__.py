"""The vault: sensitive records encrypted under envelope keys, coarse by default, shredded
when their retention ends. See ``docs/design/vault.md``."""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.vault.coarse import GeoLookup as GeoLookup
    from custos.vault.keys import (
        KEK_FILE as KEK_FILE,
    )
    from custos.vault.keys import (
        KeyProvider as KeyProvider,
    )
    from custos.vault.keys import (
        LocalKeyFile as LocalKeyFile,
    )
    from custos.vault.records import SensitiveRecord as SensitiveRecord
    from custos.vault.records import parse_lines as parse_lines
    from custos.vault.vault import (
        IngestReport as IngestReport,
    )
    from custos.vault.vault import (
        Release as Release,
    )
    from custos.vault.vault import (
        ShredReport as ShredReport,
    )
    from custos.vault.vault import (
        Vault as Vault,
    )
    from custos.vault.vault import (
        live_categories as live_categories,
    )
    from custos.vault.vault import (
        week_of as week_of,
    )

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "coarse": ("GeoLookup",),
        "keys": ("KEK_FILE", "KeyProvider", "LocalKeyFile"),
        "records": ("SensitiveRecord", "parse_lines"),
        "vault": ("IngestReport", "Release", "ShredReport", "Vault", "live_categories", "week_of"),
    },
)
