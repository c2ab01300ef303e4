"""Typed failures of offline verification: which check failed, and where.

VerificationError (a LedgerError)   check + where + human message
├── NoteError          a signed note or checkpoint is malformed
├── SignatureError     no trusted key signed it, or a signature does not verify
├── InclusionError     a record or batch is not in the tree the checkpoint commits to
├── ConsistencyError   a newer tree does not extend an older one
├── ReceiptError       a receipt does not match the manifest in hand
└── BundleError        an export bundle does not verify
"""

from __future__ import annotations

from ledger.core.errors import LedgerError

__all__ = [
    "BundleError",
    "ConsistencyError",
    "InclusionError",
    "NoteError",
    "ReceiptError",
    "SignatureError",
    "VerificationError",
]


class VerificationError(LedgerError):
    """``check`` is a stable identifier, ``where`` says which object (batch 3, entry 7, ...)."""

    def __init__(self, check: str, where: str, message: str) -> None:
        self.check = check
        self.where = where
        self.message = message
        super().__init__(f"{check} failed at {where}: {message}")


class NoteError(VerificationError):
    pass


class SignatureError(VerificationError):
    pass


class InclusionError(VerificationError):
    pass


class ConsistencyError(VerificationError):
    pass


class ReceiptError(VerificationError):
    pass


class BundleError(VerificationError):
    pass
