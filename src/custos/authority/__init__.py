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

from custos.authority.entries import (
    BATCH,
    KINDS,
    REMOVED,
    AuthorityEntry,
    EncodedFacts,
    facts_set,
    is_removed,
    tombstone,
)
from custos.authority.vouch import (
    AuthorityWriter,
    EntryReader,
    EntryWriter,
    Record,
    Vouch,
    Voucher,
)

__all__ = [
    "BATCH",
    "KINDS",
    "REMOVED",
    "AuthorityEntry",
    "AuthorityWriter",
    "EncodedFacts",
    "EntryReader",
    "EntryWriter",
    "Record",
    "Vouch",
    "Voucher",
    "facts_set",
    "is_removed",
    "tombstone",
]
