"""The ledger: an append-only, verifiable RFC 9162 Merkle log of everything custos decides.

:class:`Ledger` appends entries durably (group commit) and serves proofs and signed
checkpoints; :func:`verify_log` recomputes everything (``custos log verify``); :class:`Witness`
cosigns checkpoints after checking consistency; :class:`TileServer` serves hash tiles.
"""

from custos.ledger.hashing import Spliced, canonical_json, leaf_hash, node_hash
from custos.ledger.keys import (
    LOG_KEY_FILE,
    ORIGIN_FILE,
    SIGNED_HEAD_FILE,
    check_key_name,
    read_key,
    read_origin,
    write_new_key,
    write_origin,
)
from custos.ledger.log import (
    Chain,
    ConsistencyProof,
    InclusionProof,
    Ledger,
    LedgerReceipt,
)
from custos.ledger.notes import Checkpoint, NoteSigner, NoteVerifier, SignedNote, open_checkpoint
from custos.ledger.tiles import TileClient, TileServer
from custos.ledger.tree import verify_consistency, verify_inclusion
from custos.ledger.verify import VerifyReport, verify_log
from custos.ledger.witness import CosignResult, Witness, WitnessRefusal

__all__ = [
    "LOG_KEY_FILE",
    "ORIGIN_FILE",
    "SIGNED_HEAD_FILE",
    "Chain",
    "Checkpoint",
    "ConsistencyProof",
    "CosignResult",
    "InclusionProof",
    "Ledger",
    "LedgerReceipt",
    "NoteSigner",
    "NoteVerifier",
    "SignedNote",
    "Spliced",
    "TileClient",
    "TileServer",
    "VerifyReport",
    "Witness",
    "WitnessRefusal",
    "canonical_json",
    "check_key_name",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "read_key",
    "read_origin",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "write_new_key",
    "write_origin",
]
