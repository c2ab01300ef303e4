"""RFC 9162 Merkle trees over already-hashed leaves: roots, inclusion and consistency proofs.

Fast iterative code; tests/core/test_merkle.py checks it against the RFC's recursive
definitions on every small tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger.core.errors import ProofError, RootMismatchError
from ledger.core.hashing import EMPTY_ROOT, NODE_PREFIX, node_hash
from ledger.core.limits import merkle_proof_len_max

__all__ = [
    "BlockedRoot",
    "consistency_proof",
    "inclusion_proof",
    "root",
    "verify_consistency",
    "verify_inclusion",
]


_sha256 = hashlib.sha256


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves. Pairing level by level and carrying an odd last node up unchanged
    builds the same tree as the RFC's largest-power-of-two split."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    sha, prefix = _sha256, NODE_PREFIX  # node_hash inlined: this loop is the hot path of verification
    while len(level) > 1:
        paired = [sha(prefix + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


class BlockedRoot:
    """The RFC 9162 root of a stream of leaves in O(n / block) memory: every ``block`` leaves
    (a power of two) are folded into the root of their perfect subtree, and the tree over
    those roots and the last partial block's has the root of the tree over the leaves (its
    splits fall on block boundaries). Faster than a CompactRange for long streams."""

    __slots__ = ("block", "blocks", "leaves")

    def __init__(self, block: int = 4096) -> None:
        if block < 1 or block & (block - 1):
            raise ValueError("block must be a power of two")
        self.block = block
        self.blocks: list[bytes] = []
        self.leaves: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)
        if len(self.leaves) == self.block:
            self.blocks.append(root(self.leaves))
            self.leaves = []

    def root(self) -> bytes:
        return root([*self.blocks, root(self.leaves)] if self.leaves else self.blocks)


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 9162 §2.1.3.1."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ProofError(f"leaf index {index} is outside a tree of size {n}")
    proof: list[bytes] = []
    lo, hi = 0, n
    # Walk down from the root, collecting siblings, then reverse (the proof is leaf-first).
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            proof.append(root(leaf_hashes[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root(leaf_hashes[lo : lo + k]))
            lo = lo + k
    proof.reverse()
    return proof


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root_hash: bytes) -> None:
    """RFC 9162 §2.1.3.2. Raises ProofError (RootMismatchError when it leads elsewhere)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(proof) > merkle_proof_len_max:
        raise ProofError(f"proof has {len(proof)} nodes, more than {merkle_proof_len_max}")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if len(p) != 32:
            raise ProofError(f"proof node of {len(p)} bytes, expected 32")
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    if r != root_hash:
        raise RootMismatchError(root_hash, r)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1, for the tree of all ``leaf_hashes``."""
    n = len(leaf_hashes)
    if not 0 <= old_size <= n:
        raise ProofError(f"old size {old_size} is outside 0..{n}")
    if old_size in (0, n):
        return []

    def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        if m == hi - lo:
            return [] if complete else [root(leaf_hashes[lo:hi])]
        k = _split(hi - lo)
        if m <= k:
            return [*sub(m, lo, lo + k, complete), root(leaf_hashes[lo + k : hi])]
        return [*sub(m - k, lo + k, hi, False), root(leaf_hashes[lo : lo + k])]

    return sub(old_size, 0, n, True)


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: the tree of ``new_size`` leaves extends the one of ``old_size``."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"sizes {old_size} -> {new_size} do not grow")
    if len(proof) > merkle_proof_len_max:
        raise ProofError(f"proof has {len(proof)} nodes, more than {merkle_proof_len_max}")
    if old_size == new_size:
        if proof:
            raise ProofError("trees of equal size need an empty proof")
        if old_root != new_root:
            raise RootMismatchError(old_root, new_root)
        return
    if old_size == 0:
        if proof:
            raise ProofError("the empty tree needs an empty proof")
        return
    if not proof:
        raise ProofError("empty consistency proof for growing trees")
    if any(len(p) != 32 for p in proof):
        raise ProofError("proof nodes must be 32 bytes")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than needed")
    if fr != old_root:
        raise RootMismatchError(old_root, fr)
    if sr != new_root:
        raise RootMismatchError(new_root, sr)
