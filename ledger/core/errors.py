"""Errors of the pure core.

LedgerError
├── CanonicalError        a value has no canonical encoding (float, bad key, ...)
├── LedgerFormatError     a record does not follow the ledger format
├── ProofError            a Merkle proof does not verify
│   └── RootMismatchError the proof leads to another root
└── PolicyError           (ledger.core.policy) a policy file is malformed
"""

from __future__ import annotations

__all__ = ["CanonicalError", "LedgerError", "LedgerFormatError", "ProofError", "RootMismatchError"]


class LedgerError(Exception):
    """Base of every error raised by ledger.core."""


class CanonicalError(LedgerError, ValueError):
    """The value cannot be canonically encoded."""


class LedgerFormatError(LedgerError, ValueError):
    """A record or header breaks the ledger format (docs/ledger-format.md)."""


class ProofError(LedgerError):
    """A Merkle proof is malformed or does not verify."""


class RootMismatchError(ProofError):
    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(f"proof leads to root {computed.hex()}, expected {expected.hex()}")
        self.expected = expected
        self.computed = computed
