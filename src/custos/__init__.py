"""custos — the guarded path between staff and users' personal data.

It prevents (deny by default, purpose and ticket bound, coarse by default, two-person rule
for protected subjects), proves (an append-only Merkle ledger with signed checkpoints),
detects (explained alerts) and tells (subject transparency reports).
"""

__version__ = "0.1.0"
