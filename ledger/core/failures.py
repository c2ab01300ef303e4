"""The one vocabulary of verification failures: which check failed, and where.

Every failure is a stable check name (docs/ledger-format.md §6 for the chain, §9-§12 for
checkpoints, proofs and bundles) and a ``Place``: a batch, and an entry or a row in it, or,
for what is not in a batch (a bundle line, a checkpoint, a file), its description. Chain
verification (ledger.core.verify) returns a ``Failure`` in its report, whose JSON members
(``batch_seq``, ``entry``, ``reason``, ``detail``) are what ``GET /audit/verify`` and
``ledger verify`` print; the offline checks raise a ``VerificationError``. Both render as
``<check> failed at <place>: <detail>``.

VerificationError (a LedgerError)   check + place + human message
├── NoteError          a signed note or checkpoint is malformed
├── SignatureError     no trusted key signed it, or a signature does not verify
├── InclusionError     a record or batch is not in the tree the checkpoint commits to
├── ConsistencyError   a newer tree does not extend an older one
├── ReceiptError       a receipt does not match the manifest in hand
└── BundleError        an export bundle does not verify
"""

from __future__ import annotations

import msgspec

from ledger.core.errors import LedgerError

__all__ = [
    "BundleError",
    "ConsistencyError",
    "Failure",
    "InclusionError",
    "NoteError",
    "Place",
    "ReceiptError",
    "SignatureError",
    "VerificationError",
]


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """Where a check failed. ``label``, when given, is how the place is written (it may name a
    batch too: "receipt batch 4"); otherwise it is "batch N", ", entry M" or ", row R"."""

    batch_seq: int | None = None
    entry: int | None = None
    row: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.label is not None:
            return self.label
        text = f"batch {self.batch_seq}"
        if self.entry is not None:
            return f"{text}, entry {self.entry}"
        if self.row is not None:
            return f"{text}, row {self.row}"
        return text


class Failure(msgspec.Struct, frozen=True):
    """A chain verification failure: always in a batch, at an entry when it can be localised.
    ``reason`` is the check; the member names are the report's JSON."""

    batch_seq: int
    entry: int | None
    reason: str
    detail: str

    @property
    def check(self) -> str:
        return self.reason

    @property
    def place(self) -> Place:
        return Place(batch_seq=self.batch_seq, entry=self.entry)

    def __str__(self) -> str:
        return f"{self.reason} failed at {self.place}: {self.detail}"


class VerificationError(LedgerError):
    """``check`` is a stable identifier, ``where`` the place as written (batch 3, entry 7, ...)."""

    def __init__(self, check: str, where: Place | str, message: str) -> None:
        self.check = check
        self.place = where if isinstance(where, Place) else Place(label=where)
        self.where = str(self.place)
        self.message = message
        super().__init__(f"{check} failed at {self.where}: {message}")


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
