"""Chain verification from stored bytes (ledger format v1). Pure: plain data in, a report out.

The verifier is fed batches in sequence order and stops at the first failure
(ledger.core.failures.Failure), which names the batch, the entry (index within its batch)
where it can be localised, and a stable check, its ``reason``; docs/ledger-format.md §6
lists them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Sequence

import msgspec

from ledger.core.errors import LedgerFormatError
from ledger.core.failures import Failure
from ledger.core.hashing import LEAF_PREFIX, leaf_hash
from ledger.core.merkle import root
from ledger.core.records import GENESIS_PREV, BatchHeader, chain_hash, encode_header, parse_receipt
from ledger.core.review import Review, parse_review

_sha256 = hashlib.sha256

__all__ = ["ChainVerifier", "Corrections", "StoredBatch", "StoredEntry", "VerifyReport", "verify_batches"]


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


class VerifyReport(msgspec.Struct, frozen=True):
    ok: bool
    batches_checked: int
    records_checked: int
    first_failure: Failure | None


class ChainVerifier:
    def __init__(self, *, first_seq: int = 1, prev: bytes = GENESIS_PREV) -> None:
        """``first_seq``/``prev``: verify a range of the chain that starts after the batch whose
        stored chain hash is ``prev`` (parallel verification splits after receipt batches)."""
        self._expected_seq = first_seq
        self._prev = prev
        self._asset_batches: dict[int, str] = {}
        self._corrections = Corrections()
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
        failure = self._failure or self._corrections.at_end()
        return VerifyReport(
            ok=failure is None,
            batches_checked=self._batches,
            records_checked=self._records,
            first_failure=failure,
        )

    def _check(self, batch: StoredBatch) -> Failure | None:
        header = batch.header
        seq = self._expected_seq
        if header.seq != seq:
            reason = "batch_missing" if header.seq > seq else "batch_out_of_order"
            return Failure(seq, None, reason, f"expected batch {seq}, found batch {header.seq}")
        leaves = self._leaves(seq, batch)
        if isinstance(leaves, Failure):
            return leaves
        failure = _check_root(seq, header, leaves)
        if failure is not None:
            return failure
        link = chain_hash(self._prev, encode_header(header))
        if link != batch.chain_hash:
            return Failure(
                seq, None, "chain_hash_mismatch", f"header links to {link.hex()}, stored {batch.chain_hash.hex()}"
            )
        failure = self._corrections.check(header, leaves, (e.record for e in batch.entries))
        if failure is not None:
            return failure
        if header.kind == "receipt":
            failure = self._check_receipt(batch)
            if failure is not None:
                return failure
        elif header.kind == "assets":
            self._asset_batches[seq] = header.batch_hash
        self._prev = link
        self._expected_seq += 1
        return None

    def _leaves(self, seq: int, batch: StoredBatch) -> list[bytes] | Failure:
        """The batch's leaf hashes, each entry's checked against its stored one and, for an asset
        batch, against the record hash its import's receipt accounts for; or the first failure."""
        expected = batch.expected_leaves
        entries = batch.entries
        # Fast path, whole-list comparisons in C; on any difference _leaves_one_by_one finds
        # and names the first failing entry.
        sha, prefix = _sha256, LEAF_PREFIX  # leaf_hash inlined: one call per record adds up
        fast = [sha(prefix + e.record).digest() for e in entries]
        if (
            [e.idx for e in entries] == list(range(len(entries)))
            and fast == [e.leaf_hash for e in entries]
            and (expected is None or fast == list(expected[: len(fast)]))
        ):
            self._records += len(fast)
            return fast
        return self._leaves_one_by_one(seq, entries, expected)

    def _leaves_one_by_one(
        self, seq: int, entries: Sequence[StoredEntry], expected: Sequence[bytes] | None
    ) -> list[bytes] | Failure:
        """The slow path of ``_leaves``: entry by entry, up to the first failing one."""
        leaves: list[bytes] = []
        for position, entry in enumerate(entries):
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
        return leaves

    def _check_receipt(self, batch: StoredBatch) -> Failure | None:
        seq = batch.header.seq
        if len(batch.entries) != 1:
            return Failure(seq, None, "receipt_malformed", "a receipt batch holds exactly one entry")
        try:
            receipt = parse_receipt(batch.entries[0].record)
        except LedgerFormatError as exc:
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
        sha, prefix = _sha256, LEAF_PREFIX
        if root([sha(prefix + o).digest() for o in outcomes]).hex() != receipt.outcomes_root:
            return Failure(
                seq, 0, "outcomes_root_mismatch", "the stored row outcomes do not give the receipt's outcomes_root"
            )
        return None


class Corrections:
    """§6.1, the one implementation for the chain (ChainVerifier) and for bundles
    (ledger.core.bundle): corrections (assets batches without a manifest) wait, in order, for
    the review batch that accounts for them, and every review entry must be valid.

    ``earlier_unknown``: checking starts after batch 0 where corrections linked before the
    start may still be pending (a bundle from F > 0 can start with the review batch of a
    correction batch it does not hold). Until the first batch that is no correction batch, a
    review batch then matches only its last committed entries, one per pending correction
    it can see; the earlier ones were linked before the start.
    """

    __slots__ = ("_earlier_unknown", "_from", "_pending")

    def __init__(self, *, earlier_unknown: bool = False) -> None:
        self._pending: list[bytes] = []
        self._from = 0  # seq of the first batch holding a pending correction
        self._earlier_unknown = earlier_unknown

    def check(self, header: BatchHeader, leaves: Sequence[bytes], records: Iterable[bytes]) -> Failure | None:
        """One batch, after its chain link checked out: ``leaves`` its entries' record hashes,
        ``records`` their bytes (read for a review batch only)."""
        seq = header.seq
        if header.kind == "assets" and header.manifest_sha256 is None:
            if not self._pending:
                self._from = seq
            self._pending.extend(leaves)
            return None
        earlier_unknown, self._earlier_unknown = self._earlier_unknown, False
        if header.kind != "review":
            return self.at_end()
        pending, self._pending = deque(self._pending), []
        reviews: list[tuple[int, Review]] = []
        for position, record in enumerate(records):
            try:
                reviews.append((position, parse_review(record)))
            except LedgerFormatError as exc:
                return Failure(seq, position, "review_malformed", str(exc))
            if not earlier_unknown:
                failure = self._match(seq, pending, reviews)
                if failure is not None:
                    return failure
        if earlier_unknown:
            committed = [(p, r) for p, r in reviews if _commits(r)]
            # The first ones account for corrections linked before the start: not in view.
            del committed[: max(0, len(committed) - len(pending))]
            failure = self._match(seq, pending, committed)
            if failure is not None:
                return failure
        if pending:
            return Failure(
                seq,
                None,
                "corrections_unaccounted",
                f"{len(pending)} correction(s) linked before this review batch are not accounted for",
            )
        return None

    @staticmethod
    def _match(seq: int, pending: deque[bytes], reviews: list[tuple[int, Review]]) -> Failure | None:
        """Each committing entry of ``reviews`` takes the next pending correction (popped)."""
        for position, review in reviews:
            if not _commits(review):
                continue
            correction = review.correction
            assert correction is not None
            if not pending or pending[0].hex() != correction.record_hash:
                return Failure(
                    seq,
                    position,
                    "review_correction_mismatch",
                    f"the entry commits correction {correction.record_hash}, which is not the next "
                    "correction linked before this batch",
                )
            pending.popleft()
        reviews.clear()
        return None

    def at_end(self) -> Failure | None:
        """Any batch but a correction or review batch, or the end: nothing may be pending."""
        if not self._pending:
            return None
        return Failure(
            self._from,
            None,
            "corrections_unaccounted",
            f"corrections in batch {self._from} are not followed by the review batch that decided them",
        )


def _commits(review: Review) -> bool:
    correction = review.correction
    return correction is not None and correction.outcome == "committed"


def _check_root(seq: int, header: BatchHeader, leaves: list[bytes]) -> Failure | None:
    """The header's record count and batch hash against the batch's leaves."""
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
    return None


def verify_batches(batches: Iterable[StoredBatch]) -> VerifyReport:
    verifier = ChainVerifier()
    for batch in batches:
        if verifier.feed(batch) is not None:
            break
    return verifier.report()
