"""The service's own tree state and signed checkpoints against the batch headers
(docs/ledger-format.md §6.2). Pure: plain data in, a Failure (or None) out.

The service stores each batch's tree leaf, and with each checkpoint it signs the root and the
compact range of the tree at its size, so the next checkpoint costs only the batches since.
Nothing hashes those stored values again unless someone does: a consistent rewrite of the
database (records, leaves, outcomes, receipts, batch and chain hashes, tree state) passes
every §6 check, and the next checkpoint would be signed over it. ``TreeCheck`` is that
someone: fed the headers in order, with the stored leaf of each and the stored checkpoints
at each size, it reports the first disagreement. The full verification (GET /audit/verify)
runs it over the whole chain; signing runs it over the batches since the last checkpoint,
starting from that checkpoint's compact range once ``resume`` has checked it against the
root the checkpoint signed.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ledger.core.bundle import CompactRange
from ledger.core.checkpoint import Checkpoint, parse_body
from ledger.core.errors import LedgerFormatError
from ledger.core.failures import BundleError, Failure, VerificationError
from ledger.core.note import Verifier, open_note
from ledger.core.proofs import tree_leaf
from ledger.core.records import BatchHeader

__all__ = ["StoredCheckpointState", "TreeCheck", "resume"]


class StoredCheckpointState(msgspec.Struct, frozen=True, kw_only=True):
    """One stored checkpoint: the signed note, and the values stored beside it."""

    id: int
    tree_size: int
    note: str
    root_hash: bytes
    tree_state: bytes  # the compact range's nodes, 32 bytes each, largest subtree first


def _signed(cp: StoredCheckpointState, verifiers: Iterable[Verifier]) -> Checkpoint | str:
    """The checkpoint its note states, once a known key's signature checks out; else why not."""
    try:
        return parse_body(open_note(cp.note, verifiers, where=f"checkpoint {cp.id}").body)
    except VerificationError as exc:
        return f"its note does not open with a registered key: {exc}"


def _nodes(state: bytes) -> list[bytes]:
    return [state[i : i + 32] for i in range(0, len(state), 32)]


def resume(cp: StoredCheckpointState, verifiers: Iterable[Verifier]) -> CompactRange | Failure:
    """The tree at ``cp``'s size from its stored compact range, if that range gives the root
    ``cp`` signed (the range is only ever written with a checkpoint whose batches were checked,
    so this is what the next checkpoint may extend)."""
    signed = _signed(cp, verifiers)
    where = cp.tree_size
    if isinstance(signed, str):
        return Failure(where, None, "checkpoint_mismatch", f"checkpoint {cp.id} of size {cp.tree_size}: {signed}")
    if signed.size != cp.tree_size:
        return Failure(
            where,
            None,
            "checkpoint_mismatch",
            f"checkpoint {cp.id} is stored at size {cp.tree_size}, signed {signed.size}",
        )
    try:
        tree = CompactRange(cp.tree_size, _nodes(cp.tree_state)) if len(cp.tree_state) % 32 == 0 else None
    except BundleError:
        tree = None
    if tree is None or tree.root() != signed.root or cp.root_hash != signed.root:
        return Failure(
            where,
            None,
            "tree_state_mismatch",
            f"the tree state stored with checkpoint {cp.id} (size {cp.tree_size}) does not give the root it signed",
        )
    return tree


class TreeCheck:
    """Feed ``batch`` for each header in seq order, and ``checkpoint`` for each stored checkpoint
    once the batches of its size have been fed; each returns the first disagreement, if any."""

    __slots__ = ("_agreed", "_verifiers", "tree")

    def __init__(self, verifiers: Iterable[Verifier], tree: CompactRange | None = None) -> None:
        self._verifiers = list(verifiers)
        self.tree = tree if tree is not None else CompactRange()
        # The largest size at which a signed checkpoint agreed: a disagreement lies after it.
        self._agreed = self.tree.size

    def batch(self, header: BatchHeader, stored_leaf: bytes | None) -> Failure | None:
        """``stored_leaf``: the tree leaf stored for the batch (None: none was, and the next
        checkpoint computes it from the header)."""
        seq = header.seq
        if seq != self.tree.size + 1:
            return Failure(
                self.tree.size + 1,
                None,
                "tree_state_mismatch",
                f"the tree needs batch {self.tree.size + 1}, found {seq}",
            )
        try:
            leaf = tree_leaf(header)
        except LedgerFormatError as exc:
            return Failure(seq, None, "tree_state_mismatch", str(exc))
        if stored_leaf is not None and stored_leaf != leaf:
            return Failure(
                seq,
                None,
                "tree_state_mismatch",
                f"the stored tree leaf {stored_leaf.hex()} is not the header's {leaf.hex()}",
            )
        self.tree.append(leaf)
        return None

    def checkpoint(self, cp: StoredCheckpointState) -> Failure | None:
        size = self.tree.size
        if cp.tree_size != size:
            return Failure(
                cp.tree_size,
                None,
                "checkpoint_mismatch",
                f"checkpoint {cp.id} is of size {cp.tree_size}; the chain's tree is read to size {size}",
            )
        signed = _signed(cp, self._verifiers)
        if isinstance(signed, str):
            return Failure(size, None, "checkpoint_mismatch", f"checkpoint {cp.id} of size {size}: {signed}")
        root = self.tree.root()
        if signed.size != size or signed.root != root:
            return Failure(
                size,
                None,
                "checkpoint_mismatch",
                f"checkpoint {cp.id} signed root {signed.root.hex()} at size {signed.size}; the batch headers give"
                f" {root.hex()}: batches {self._agreed + 1}..{size} are not the ones it signed",
            )
        if cp.root_hash != root or cp.tree_state != b"".join(self.tree.nodes):
            return Failure(
                size,
                None,
                "tree_state_mismatch",
                f"the root or compact range stored with checkpoint {cp.id} is not the tree's",
            )
        self._agreed = size
        return None
