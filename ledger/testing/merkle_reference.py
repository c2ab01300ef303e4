"""The reference the fast Merkle code (ledger.core.merkle, ledger.core.bundle) is tested
against: a plain recursive transcription of RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, word for
word, too slow for anything but tests.
"""

from __future__ import annotations

import hashlib

__all__ = ["leaves_of", "ref_k", "ref_leaf", "ref_mth", "ref_node", "ref_path", "ref_subproof"]


def ref_leaf(data: bytes) -> bytes:
    """The leaf hash of ``data``: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    """The interior node over ``left`` and ``right``: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def ref_k(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where the tree of n leaves splits."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]): the root of the tree of leaf hashes ``leaves``."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = ref_k(n)
    return ref_node(ref_mth(leaves[:k]), ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the inclusion proof of leaf ``m`` in the tree of ``leaves``."""
    n = len(leaves)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b): with ``b`` true, the consistency proof of the first ``m`` leaves
    with the tree of ``leaves``."""
    n = len(leaves)
    if m == n:
        return [] if b else [ref_mth(leaves)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, leaves[:k], b), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def leaves_of(n: int) -> list[bytes]:
    """``n`` distinct leaf hashes: those of 0, 1, ... n - 1 as 4-byte big-endian integers."""
    return [ref_leaf(i.to_bytes(4, "big")) for i in range(n)]
