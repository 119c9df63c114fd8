"""A witness: an independent party that cosigns a log's checkpoints after checking that each
new one is consistent with the last it cosigned.

It keeps, durably, the last checkpoint it cosigned per log origin. It refuses loudly:

- a **rollback**: a checkpoint smaller than the last one cosigned;
- a **split view**: a checkpoint of the same size with a different root, or a larger one that
  is not consistent with the last one (the log showed different histories to different
  parties);
- a checkpoint not signed by the log's key.

It computes the consistency proof itself from the log's public hash tiles, so it trusts
nothing the log says beyond signed checkpoints and hashes it can check.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from custos.errors import CustosError, IntegrityError
from custos.ledger import tree
from custos.ledger.keys import read_key, write_new_key
from custos.ledger.notes import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    open_checkpoint,
)
from custos.ledger.tiles import TileClient

KEY_FILE = "witness.key"
STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


class WitnessRefusal(IntegrityError):
    """The witness will not cosign: rollback, split view, or a bad signature."""

    code = "witness_refusal"
    exit_code = 7


@dataclass(frozen=True)
class CosignResult:
    checkpoint: Checkpoint
    note: str  # the checkpoint with the witness's cosignature added
    previous_size: int | None


class Witness:
    """A witness's key and state, kept in its own folder (``--state``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def create(cls, folder: Path, name: str) -> Witness:
        """Create the folder and key (idempotent). Raises :class:`CustosError`."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new_key(folder / KEY_FILE, name)
        return cls(folder)

    @property
    def signer(self) -> NoteSigner:
        return read_key(self.folder / KEY_FILE, ALG_COSIGNATURE_V1)

    def state(self) -> dict[str, dict[str, object]]:
        path = self.folder / STATE_FILE
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise IntegrityError(
                f"{path}: witness state is unreadable; refusing to continue"
            ) from None
        if not isinstance(data, dict):
            raise IntegrityError(f"{path}: witness state is malformed")
        return data

    def _save(self, state: dict[str, dict[str, object]]) -> None:
        # Write to a temporary file, fsync, rename, fsync the folder: the state survives a
        # crash whole, old or new, never half-written.
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".state-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / STATE_FILE)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def check(
        self, log_url: str, log_key: str, *, now: int | None = None, token: str | None = None
    ) -> CosignResult:
        """Fetch the log's checkpoint, check it against the last cosigned one, cosign it.

        Raises :class:`WitnessRefusal` on rollback, split view or a bad signature.
        """
        verifier = NoteVerifier.parse(log_key)
        client = TileClient(log_url, 0, token=token)
        try:
            note = client.fetch("checkpoint").decode("utf-8")
        except UnicodeDecodeError:
            raise WitnessRefusal("refusing: the log's checkpoint is not UTF-8 text") from None
        try:
            checkpoint, signed = open_checkpoint(note, verifier)
        except CustosError as exc:
            raise WitnessRefusal(f"refusing: {exc.message}") from None
        if checkpoint.origin != verifier.name:
            # The state is kept per origin: a key that may speak for any origin could
            # overwrite another log's record and lock the real one out for good.
            raise WitnessRefusal(
                f"refusing: the checkpoint claims origin {checkpoint.origin!r}, but the log's "
                f"key is named {verifier.name!r}"
            )
        # One check at a time per witness (cron runs overlap): the state is read, checked
        # against and saved under one lock, so a slow run cannot save an older size last.
        with (self.folder / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._check_locked(client, checkpoint, signed, now)

    def _check_locked(
        self, client: TileClient, checkpoint: Checkpoint, signed: SignedNote, now: int | None
    ) -> CosignResult:
        state = self.state()
        last = state.get(checkpoint.origin)
        previous_size: int | None = None
        if last is not None:
            previous_size = int(str(last["size"]))
            old_root = bytes.fromhex(str(last["root"]))
            if checkpoint.size < previous_size:
                raise WitnessRefusal(
                    f"ROLLBACK: {checkpoint.origin} now shows size {checkpoint.size}, but size "
                    f"{previous_size} was already cosigned; refusing to cosign"
                )
            if checkpoint.size == previous_size and checkpoint.root != old_root:
                raise WitnessRefusal(
                    f"SPLIT VIEW: {checkpoint.origin} shows two different trees of size "
                    f"{checkpoint.size}; refusing to cosign"
                )
            if checkpoint.size > previous_size:
                client.size = checkpoint.size
                try:
                    proof = tree.consistency_proof(previous_size, checkpoint.size, client.nodes)
                except IntegrityError as exc:
                    raise WitnessRefusal(f"refusing: {exc.message}") from None
                if not tree.verify_consistency(
                    previous_size, checkpoint.size, proof, old_root, checkpoint.root
                ):
                    raise WitnessRefusal(
                        f"SPLIT VIEW: {checkpoint.origin} at size {checkpoint.size} is not "
                        f"consistent with the cosigned size {previous_size}; refusing to cosign"
                    )
        timestamp = int(time.time()) if now is None else now
        line = self.signer.cosign_line(signed.text, timestamp)
        cosigned = SignedNote.parse(signed.render() + line)
        state[checkpoint.origin] = {
            "size": checkpoint.size,
            "root": checkpoint.root.hex(),
            "cosigned_at": timestamp,
        }
        self._save(state)
        return CosignResult(checkpoint, cosigned.render(), previous_size)
