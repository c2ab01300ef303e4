"""Named limits of the pure core. Everything that can grow has a bound."""

from __future__ import annotations

__all__ = ["canonical_depth_max", "integer_max", "integer_min", "merkle_proof_len_max"]

# A proof longer than this would be for a tree of more than 2**64 leaves.
merkle_proof_len_max = 64
# Canonical integers are signed 64-bit, so every verifier can hold them without bignums.
integer_min = -(2**63)
integer_max = 2**63 - 1
# Records are shallow; anything deeper is a bug or an attack.
canonical_depth_max = 16
