"""Authority you can prove: every fact a decision rests on is ledgered before it counts, and
custos honours a row only when it equals the ledger entry that set it.

- :mod:`~custos.authority.entries`: the ``authority`` entry and how to read the facts any
  entry sets.
- :mod:`~custos.authority.vouch`: :class:`Voucher` (the check on use) and
  :class:`AuthorityWriter` (the entries, written before the rows).
- :mod:`~custos.authority.projection`: the authority state re-derived from the ledger alone,
  compared with the tables and with what each decision says it used (``custos log verify``).

Design and threat model: docs/design/authority.md.
"""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.authority.entries import (
        BATCH as BATCH,
    )
    from custos.authority.entries import (
        KINDS as KINDS,
    )
    from custos.authority.entries import (
        REMOVED as REMOVED,
    )
    from custos.authority.entries import (
        AuthorityEntry as AuthorityEntry,
    )
    from custos.authority.entries import (
        EncodedFacts as EncodedFacts,
    )
    from custos.authority.entries import (
        facts_set as facts_set,
    )
    from custos.authority.entries import (
        is_removed as is_removed,
    )
    from custos.authority.entries import (
        tombstone as tombstone,
    )
    from custos.authority.vouch import (
        AuthorityWriter as AuthorityWriter,
    )
    from custos.authority.vouch import (
        EntryReader as EntryReader,
    )
    from custos.authority.vouch import (
        EntryWriter as EntryWriter,
    )
    from custos.authority.vouch import (
        Record as Record,
    )
    from custos.authority.vouch import (
        Vouch as Vouch,
    )
    from custos.authority.vouch import (
        Voucher as Voucher,
    )

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "entries": (
            "BATCH",
            "KINDS",
            "REMOVED",
            "AuthorityEntry",
            "EncodedFacts",
            "facts_set",
            "is_removed",
            "tombstone",
        ),
        "vouch": ("AuthorityWriter", "EntryReader", "EntryWriter", "Record", "Vouch", "Voucher"),
    },
)
