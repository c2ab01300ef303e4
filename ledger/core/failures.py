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
    "CHECKS",
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


# Every check name the code reports, with what its failure means: docs/ledger-format.md §13
# lists exactly these (tests/core/test_failures.py holds the code, this table and the spec
# equal), so a verifier written from the spec knows every answer it can get.
CHECKS: dict[str, str] = {
    # §6 and §6.2: the chain as stored (GET /audit/verify, `ledger verify`), and §12 bundles
    "batch_missing": "the next batch's seq is higher than expected: a batch was removed",
    "batch_out_of_order": "a batch's seq is lower than expected",
    "entry_missing": "an entry index is skipped, or a batch has fewer entries than its header's records",
    "leaf_hash_mismatch": "an entry's bytes do not hash to its stored leaf hash",
    "entry_not_as_recorded": "an entry differs from the record hash its receipt (or the review index) accounts for",
    "record_count_mismatch": "a batch has more entries than its header's records",
    "batch_hash_mismatch": "a batch's entries do not give its header's batch_hash",
    "chain_hash_mismatch": "a header does not link to the stored chain hash",
    "receipt_malformed": "a receipt batch does not hold exactly one valid receipt",
    "receipt_batch_mismatch": "a batch a receipt lists is not in the chain with that hash",
    "outcomes_count_mismatch": "the number of row outcomes differs from the receipt's rows.total",
    "outcomes_root_mismatch": "the row outcomes do not give the receipt's outcomes_root",
    "review_malformed": "an entry of a review batch is not a valid review entry",
    "review_correction_mismatch": "a review entry commits another correction than the next one linked before it",
    "corrections_unaccounted": "corrections are linked without the review batch that decides them",
    "entry_outside_chain": "a stored entry names a batch the chain does not have",
    "checkpoint_mismatch": "a checkpoint the service signed states another root than the batch headers give",
    "tree_state_mismatch": "a stored tree leaf, or a checkpoint's stored root or compact range, is not the headers'",
    # §9: keys, signed notes and checkpoints
    "key_name": "a key name is empty or holds a space or '+'",
    "base64": "a key or signature is not standard base64",
    "public_key": "an Ed25519 public key is not 32 bytes",
    "verifier_key": "a verifier key is not <name>+<key id>+<base64 key>, or its key id is not the key's",
    "signer_key": "a signing key file is not PRIVATE+KEY+<name>+<key id>+<base64 seed>",
    "note_format": "a signed note is not of the signed-note form",
    "signature": "a signature by a trusted key does not verify",
    "untrusted_key": "no signature by a trusted key",
    "checkpoint_format": "a checkpoint body is not origin, size and root lines",
    "checkpoint_origin": "a checkpoint is of another origin than expected",
    # §10, §11: proofs
    "document_format": "a proof document is not of its form, or a hash in it is not 32 bytes of hex",
    "batch_header": "a batch header has no canonical encoding",
    "record_hash": "an entry proof's record does not hash to its leaf_hash",
    "record_in_batch": "a record's path does not lead to its batch's hash",
    "batch_in_checkpoint": "a batch header's path does not lead to the checkpoint's root",
    "receipt_format": "a receipt proof's receipt is not a valid receipt",
    "receipt_task": "a receipt is for another task than its proof",
    "receipt_batch": "a receipt's batch header is not a receipt batch naming its manifest",
    "receipt_batches": "a receipt proof does not carry exactly the asset batches the receipt lists",
    "manifest_sha256": "the manifest in hand is not the one the receipt records",
    "origin": "two checkpoints of a consistency proof are of different logs",
    "proof_sizes": "a consistency proof is for other tree sizes than the checkpoints",
    "consistency": "a newer tree does not extend an older checkpoint's",
    # §12: bundles
    "bundle_format": "a bundle line is not one of the line types, or out of place",
    "prefix": "the bundle line's prefix does not hold one hash per 1-bit of from",
    "outcome_out_of_place": "an outcome line is not the next row of the receipt just read",
    "outcome_malformed": "an outcome line is not a row outcome",
    "checkpoint_position": "a checkpoint's size is not the tree size reached at its line",
    "checkpoint_root": "a checkpoint's root is not the root of the tree read so far",
    "old_checkpoint": "a checkpoint the auditor kept is outside the bundle's range",
    "bundle_truncated": "the bundle ends early, or its end line's counts differ",
    "checkpoint_missing": "no checkpoint signed by a trusted key at the bundle's last size",
}


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
