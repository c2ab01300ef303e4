"""Chain verification from stored bytes (ledger format v1). Pure: plain data in, a report out.

The verifier is fed batches in sequence order and stops at the first failure, which names
the batch, the entry (index within its batch) where it can be localised, and a stable reason
code. Reason codes are listed in docs/ledger-format.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from ledger.core.errors import RecordError
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import MerkleAccumulator, root
from ledger.core.records import GENESIS_PREV, BatchHeader, chain_hash, encode_header, parse_receipt

__all__ = ["ChainVerifier", "Failure", "StoredBatch", "StoredEntry", "VerifyReport", "verify_batches"]


class StoredEntry(msgspec.Struct, frozen=True):
    idx: int
    record: bytes
    leaf_hash: bytes


class StoredBatch(msgspec.Struct, frozen=True, kw_only=True):
    header: BatchHeader
    chain_hash: bytes
    entries: Sequence[StoredEntry]
    # For an asset batch: the record hashes its import's receipt says were committed, in
    # order; they localise a swapped or consistently rewritten entry.
    expected_leaves: Sequence[bytes] | None = None
    # For a receipt batch: the canonical row_outcome bytes of its import, in row order.
    outcomes: Sequence[bytes] | None = None


class Failure(msgspec.Struct, frozen=True):
    batch_seq: int
    entry: int | None
    reason: str
    detail: str


class VerifyReport(msgspec.Struct, frozen=True):
    ok: bool
    batches_checked: int
    records_checked: int
    first_failure: Failure | None


class ChainVerifier:
    def __init__(self) -> None:
        self._expected_seq = 1
        self._prev = GENESIS_PREV
        self._asset_batches: dict[int, str] = {}
        self._batches = 0
        self._records = 0
        self._failure: Failure | None = None

    def feed(self, batch: StoredBatch) -> Failure | None:
        if self._failure is None:
            self._failure = self._check(batch)
            if self._failure is None:
                self._batches += 1
        return self._failure

    def report(self) -> VerifyReport:
        return VerifyReport(
            ok=self._failure is None,
            batches_checked=self._batches,
            records_checked=self._records,
            first_failure=self._failure,
        )

    def _check(self, batch: StoredBatch) -> Failure | None:
        header = batch.header
        seq = self._expected_seq
        if header.seq != seq:
            reason = "batch_missing" if header.seq > seq else "batch_out_of_order"
            return Failure(seq, None, reason, f"expected batch {seq}, found batch {header.seq}")
        leaves: list[bytes] = []
        expected = batch.expected_leaves
        for position, entry in enumerate(batch.entries):
            if entry.idx != position:
                return Failure(
                    seq, position, "entry_missing", f"entry {position} is missing (next stored is {entry.idx})"
                )
            leaf = leaf_hash(entry.record)
            self._records += 1
            if leaf != entry.leaf_hash:
                return Failure(
                    seq,
                    position,
                    "leaf_hash_mismatch",
                    f"record bytes hash to {leaf.hex()}, stored leaf hash is {entry.leaf_hash.hex()}",
                )
            if expected is not None and (position >= len(expected) or leaf != expected[position]):
                return Failure(
                    seq,
                    position,
                    "entry_not_as_recorded",
                    "the entry differs from the record its import's receipt accounts for at this position",
                )
            leaves.append(leaf)
        if len(leaves) != header.records:
            if len(leaves) < header.records:
                return Failure(
                    seq, len(leaves), "entry_missing", f"header says {header.records} records, found {len(leaves)}"
                )
            return Failure(
                seq,
                header.records,
                "record_count_mismatch",
                f"header says {header.records} records, found {len(leaves)}",
            )
        computed = root(leaves).hex()
        if computed != header.batch_hash:
            return Failure(
                seq, None, "batch_hash_mismatch", f"entries give root {computed}, header says {header.batch_hash}"
            )
        link = chain_hash(self._prev, encode_header(header))
        if link != batch.chain_hash:
            return Failure(
                seq, None, "chain_hash_mismatch", f"header links to {link.hex()}, stored {batch.chain_hash.hex()}"
            )
        if header.kind == "receipt":
            failure = self._check_receipt(batch)
            if failure is not None:
                return failure
        elif header.kind == "assets":
            self._asset_batches[seq] = header.batch_hash
        self._prev = link
        self._expected_seq += 1
        return None

    def _check_receipt(self, batch: StoredBatch) -> Failure | None:
        seq = batch.header.seq
        if len(batch.entries) != 1:
            return Failure(seq, None, "receipt_malformed", "a receipt batch holds exactly one entry")
        try:
            receipt = parse_receipt(batch.entries[0].record)
        except RecordError as exc:
            return Failure(seq, 0, "receipt_malformed", str(exc))
        for listed in receipt.batches:
            if self._asset_batches.get(listed.seq) != listed.batch_hash:
                return Failure(
                    seq,
                    0,
                    "receipt_batch_mismatch",
                    f"receipt lists batch {listed.seq} with hash {listed.batch_hash}, the chain does not",
                )
        outcomes = batch.outcomes
        if outcomes is None:
            return None
        if len(outcomes) != receipt.rows.total:
            return Failure(
                seq,
                0,
                "outcomes_count_mismatch",
                f"receipt accounts for {receipt.rows.total} rows, {len(outcomes)} row outcomes stored",
            )
        acc = MerkleAccumulator()
        for outcome in outcomes:
            acc.append(leaf_hash(outcome))
        if acc.root().hex() != receipt.outcomes_root:
            return Failure(
                seq, 0, "outcomes_root_mismatch", "the stored row outcomes do not give the receipt's outcomes_root"
            )
        return None


def verify_batches(batches: Iterable[StoredBatch]) -> VerifyReport:
    verifier = ChainVerifier()
    for batch in batches:
        if verifier.feed(batch) is not None:
            break
    return verifier.report()
