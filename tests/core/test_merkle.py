"""The fast Merkle code against a plain recursive transcription of RFC 9162 §2.1
(ledger.testing.merkle_reference)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core.bundle import CompactRange
from ledger.core.errors import ProofError, RootMismatchError
from ledger.core.merkle import (
    BlockedRoot,
    consistency_proof,
    inclusion_proof,
    root,
    verify_consistency,
    verify_inclusion,
)
from ledger.testing.merkle_reference import leaves_of, ref_leaf, ref_mth, ref_path, ref_subproof

SIZES = range(0, 65)


@pytest.mark.parametrize("n", SIZES)
def test_root_and_streaming_roots_match_the_reference(n: int) -> None:
    leaves = leaves_of(n)
    expected = ref_mth(leaves)
    assert root(leaves) == expected
    acc, blocked = CompactRange(), BlockedRoot(4)
    for i, leaf in enumerate(leaves):
        acc.append(leaf)
        blocked.append(leaf)
        assert acc.root() == blocked.root() == ref_mth(leaves[: i + 1])
    assert acc.size == n and acc.root() == expected


@pytest.mark.parametrize("n", range(1, 65))
def test_inclusion_proofs_match_the_reference_and_verify(n: int) -> None:
    leaves = leaves_of(n)
    tree_root = ref_mth(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert proof == ref_path(i, leaves)
        verify_inclusion(i, n, leaves[i], proof, tree_root)


@pytest.mark.parametrize("n", range(2, 65))
def test_consistency_proofs_match_the_reference_and_verify(n: int) -> None:
    leaves = leaves_of(n)
    new_root = ref_mth(leaves)
    for m in range(1, n):
        proof = consistency_proof(leaves, m)
        assert proof == ref_subproof(m, leaves, True)
        verify_consistency(m, n, ref_mth(leaves[:m]), new_root, proof)


def _flip(node: bytes, bit: int = 3) -> bytes:
    return bytes([node[0] ^ (1 << bit)]) + node[1:]


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 31, 64])
def test_broken_inclusion_proofs_are_rejected(n: int) -> None:
    leaves = leaves_of(n)
    tree_root = root(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        broken = [
            (i, n, leaves[i], [_flip(proof[0]), *proof[1:]], tree_root),  # a flipped bit
            (i, n, leaves[i], proof[:-1], tree_root),  # truncated
            (i, n, leaves[i], [*proof, proof[0]], tree_root),  # trailing garbage
            (i, n, _flip(leaves[i]), proof, tree_root),  # wrong leaf
            (i, n, leaves[i], proof, _flip(tree_root)),  # wrong root
            (i, 2 * n, leaves[i], proof, tree_root),  # wrong tree size (a deeper tree)
            (i, n, leaves[i], [proof[0][:31], *proof[1:]], tree_root),  # short node
        ]
        if i + 1 < n:
            broken.append((i + 1, n, leaves[i], proof, tree_root))  # index off by one
        for args in broken:
            with pytest.raises(ProofError):
                verify_inclusion(*args)


def test_index_outside_the_tree_is_rejected() -> None:
    leaves = leaves_of(4)
    with pytest.raises(ProofError):
        verify_inclusion(4, 4, leaves[0], [], root(leaves))
    with pytest.raises(ProofError):
        inclusion_proof(leaves, 4)


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 8), (5, 64), (32, 33), (63, 64)])
def test_broken_consistency_proofs_are_rejected(m: int, n: int) -> None:
    leaves = leaves_of(n)
    old, new = root(leaves[:m]), root(leaves)
    proof = consistency_proof(leaves, m)
    verify_consistency(m, n, old, new, proof)
    cases = [
        (m, n, old, new, [_flip(proof[0]), *proof[1:]]),
        (m, n, old, new, proof[:-1]),
        (m, n, old, new, [*proof, proof[0]]),
        (m, n, _flip(old), new, proof),
        (m, n, old, _flip(new), proof),
        (m, 2 * n, old, new, proof),
        (m, n, old, new, []),
    ]
    for args in cases:
        with pytest.raises(ProofError):
            verify_consistency(*args)


def test_a_rewritten_history_is_not_consistent_with_an_old_root() -> None:
    leaves = leaves_of(20)
    old_root = root(leaves[:10])
    rewritten = [*leaves[:4], ref_leaf(b"forged"), *leaves[5:]]
    with pytest.raises(RootMismatchError):
        verify_consistency(10, 20, old_root, root(rewritten), consistency_proof(rewritten, 10))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=65, max_value=700), st.data())
def test_large_trees_prove_inclusion_and_consistency(n: int, data: st.DataObject) -> None:
    leaves = leaves_of(n)
    tree_root = root(leaves)
    acc = CompactRange()
    for leaf in leaves:
        acc.append(leaf)
    assert acc.root() == tree_root
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    verify_inclusion(i, n, leaves[i], inclusion_proof(leaves, i), tree_root)
    m = data.draw(st.integers(min_value=1, max_value=n))
    verify_consistency(m, n, root(leaves[:m]), tree_root, consistency_proof(leaves, m))
