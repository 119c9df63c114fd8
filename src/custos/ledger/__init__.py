"""The ledger: an append-only, verifiable RFC 9162 Merkle log of everything custos decides.

:class:`Ledger` appends entries durably (group commit) and serves proofs and signed
checkpoints; :func:`verify_log` recomputes everything (``custos log verify``); :class:`Witness`
cosigns checkpoints after checking consistency; :class:`TileServer` serves hash tiles.
"""

from typing import TYPE_CHECKING

from custos.lazyface import lazy_face

if TYPE_CHECKING:  # the names as type checkers see them
    from custos.ledger.hashing import (
        Spliced as Spliced,
    )
    from custos.ledger.hashing import (
        canonical_json as canonical_json,
    )
    from custos.ledger.hashing import (
        leaf_hash as leaf_hash,
    )
    from custos.ledger.hashing import (
        node_hash as node_hash,
    )
    from custos.ledger.keys import (
        LOG_KEY_FILE as LOG_KEY_FILE,
    )
    from custos.ledger.keys import (
        ORIGIN_FILE as ORIGIN_FILE,
    )
    from custos.ledger.keys import (
        SIGNED_HEAD_FILE as SIGNED_HEAD_FILE,
    )
    from custos.ledger.keys import (
        check_key_name as check_key_name,
    )
    from custos.ledger.keys import (
        read_key as read_key,
    )
    from custos.ledger.keys import (
        read_origin as read_origin,
    )
    from custos.ledger.keys import (
        write_new_key as write_new_key,
    )
    from custos.ledger.keys import (
        write_origin as write_origin,
    )
    from custos.ledger.log import (
        Chain as Chain,
    )
    from custos.ledger.log import (
        ConsistencyProof as ConsistencyProof,
    )
    from custos.ledger.log import (
        InclusionProof as InclusionProof,
    )
    from custos.ledger.log import (
        Ledger as Ledger,
    )
    from custos.ledger.log import (
        LedgerReceipt as LedgerReceipt,
    )
    from custos.ledger.notes import (
        Checkpoint as Checkpoint,
    )
    from custos.ledger.notes import (
        NoteSigner as NoteSigner,
    )
    from custos.ledger.notes import (
        NoteVerifier as NoteVerifier,
    )
    from custos.ledger.notes import (
        SignedNote as SignedNote,
    )
    from custos.ledger.notes import (
        open_checkpoint as open_checkpoint,
    )
    from custos.ledger.tiles import TileClient as TileClient
    from custos.ledger.tiles import TileServer as TileServer
    from custos.ledger.tree import (
        verify_consistency as verify_consistency,
    )
    from custos.ledger.tree import (
        verify_inclusion as verify_inclusion,
    )
    from custos.ledger.verify import VerifyReport as VerifyReport
    from custos.ledger.verify import verify_log as verify_log
    from custos.ledger.witness import (
        CosignResult as CosignResult,
    )
    from custos.ledger.witness import (
        Witness as Witness,
    )
    from custos.ledger.witness import (
        WitnessRefusal as WitnessRefusal,
    )

__getattr__, __dir__, __all__ = lazy_face(
    __name__,
    {
        "hashing": ("Spliced", "canonical_json", "leaf_hash", "node_hash"),
        "keys": (
            "LOG_KEY_FILE",
            "ORIGIN_FILE",
            "SIGNED_HEAD_FILE",
            "check_key_name",
            "read_key",
            "read_origin",
            "write_new_key",
            "write_origin",
        ),
        "log": ("Chain", "ConsistencyProof", "InclusionProof", "Ledger", "LedgerReceipt"),
        "notes": ("Checkpoint", "NoteSigner", "NoteVerifier", "SignedNote", "open_checkpoint"),
        "tiles": ("TileClient", "TileServer"),
        "tree": ("verify_consistency", "verify_inclusion"),
        "verify": ("VerifyReport", "verify_log"),
        "witness": ("CosignResult", "Witness", "WitnessRefusal"),
    },
)
