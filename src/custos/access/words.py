"""Which words of the policy pack's vocabulary data, the directory and the configuration
still use: a new pack may not drop them (docs/design/policy.md, *Replacing a pack*).

A pack that dropped a category would leave that category's precise values in the vault with
no retention that can name them (``[vault.retention_days]`` takes only the pack's words) and
no read that can ask for them: kept for ever, reachable by nobody, shredded by nothing. A
pack that dropped a protected flag would silently unprotect everyone who carries it: its
policies may no longer mention the flag, so no forbid applies to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from custos.vocabulary import Vocabulary

if TYPE_CHECKING:
    from custos.access.system import Custos


def words_in_use(system: Custos, words: Vocabulary, *, vault: bool = True) -> list[str]:
    """A message per category or protected flag in use that ``words`` lacks: a category
    with a configured retention (a word an earlier pack had, or a typo) or with precise
    values still in the vault (data keys not shredded), a flag that subjects carry. Empty
    when ``words`` has them all.

    Raises :class:`StoreUnavailable` when the database cannot be read.
    """
    from custos.vault import live_categories

    problems: list[str] = []
    settings = system.settings
    retention = settings.section("vault").get("retention_days", {})
    if isinstance(retention, dict):  # not a table: the retention's own check says so
        problems.extend(
            f"category {key!r}: {settings.config_path} [vault.retention_days] sets a "
            "retention for it, which would apply to nothing"
            for key in sorted(retention)
            if not words.knows("category", key)
        )
    for category, keys in sorted(live_categories(system.db).items() if vault else ()):
        if not words.knows("category", category):
            problems.append(
                f"category {category!r}: the vault holds precise values under {keys} data "
                "key(s) not yet shredded, which no read and no retention could name"
            )
    for flag, subjects in sorted(system.directory.protected_flags().items()):
        if not words.knows("protected flag", flag):
            problems.append(
                f"protected flag {flag!r}: {subjects} subject(s) carry it, and would lose "
                "its protection"
            )
    return problems
