"""Export bundles: JSON Lines of batch headers, records, row outcomes and checkpoints, checked
offline in one streaming pass (docs/ledger-format.md §12).

Line order: a ``bundle`` line; ``checkpoint`` lines whose size is the tree size reached so
far; per batch a ``batch`` line, its ``record`` lines in index order and, for a receipt,
its ``outcome`` lines in row order; finally an ``end`` line. A bundle that starts after
batch 0 carries the compact range of the tree before it (``prefix``) and the chain hash it
links to, so it can be checked on its own.

The verifier recomputes every record hash, batch hash, chain link, tree leaf and receipt
account, applies the §6.1 rules for corrections and reviews with the chain verifier's own code
(ledger.core.verify.Corrections), checks every checkpoint it meets (signature and root), and
needs the last one to cover the whole bundle. Memory stays O(batch size + number of batches),
plus 32 bytes per record of the import whose receipt has not been read yet.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import msgspec

from ledger.core.checkpoint import Checkpoint
from ledger.core.errors import LedgerFormatError
from ledger.core.failures import BundleError, Place, SignatureError
from ledger.core.hashing import EMPTY_ROOT, LEAF_PREFIX, leaf_hash, node_hash
from ledger.core.merkle import BlockedRoot
from ledger.core.merkle import root as merkle_root
from ledger.core.note import Verifier
from ledger.core.outcomes import COMMITTED_HASH_AT, COMMITTED_PREFIX, DUPLICATE_PREFIX, QUARANTINED_PREFIX
from ledger.core.proofs import PROOF_VERSION, read_checkpoint
from ledger.core.records import GENESIS_PREV, BatchHeader, chain_hash, encode_header, parse_receipt
from ledger.core.verify import Corrections

__all__ = [
    "BatchLine",
    "BundleReport",
    "BundleStart",
    "BundleVerifier",
    "CheckpointLine",
    "CompactRange",
    "EndLine",
    "Line",
    "OutcomeLine",
    "RecordLine",
    "encode_line",
    "iter_lines",
    "verify_bundle",
    "verify_bundle_file",
]


class BundleStart(msgspec.Struct, frozen=True, tag="bundle", tag_field="type", forbid_unknown_fields=True):
    v: int
    origin: str
    from_size: int = msgspec.field(name="from")
    to_size: int = msgspec.field(name="to")
    prefix: list[str]
    prev_chain_hash: str


class CheckpointLine(msgspec.Struct, frozen=True, tag="checkpoint", tag_field="type", forbid_unknown_fields=True):
    note: str


class BatchLine(msgspec.Struct, frozen=True, tag="batch", tag_field="type", forbid_unknown_fields=True):
    header: BatchHeader
    chain_hash: str


class RecordLine(msgspec.Struct, frozen=True, tag="record", tag_field="type", forbid_unknown_fields=True):
    seq: int
    idx: int
    record: str


class OutcomeLine(msgspec.Struct, frozen=True, tag="outcome", tag_field="type", forbid_unknown_fields=True):
    seq: int
    row: int
    outcome: str


class EndLine(msgspec.Struct, frozen=True, tag="end", tag_field="type", forbid_unknown_fields=True):
    batches: int
    records: int


Line = BundleStart | CheckpointLine | BatchLine | RecordLine | OutcomeLine | EndLine

_sha256 = hashlib.sha256
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Line)


def encode_line(line: Line) -> bytes:
    return _encoder.encode(line) + b"\n"


class CompactRange:
    """The roots of the perfect subtrees covering leaves [0, size), largest first: enough to
    extend the tree and compute its root without the leaves themselves."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != size.bit_count():
            raise BundleError("prefix", f"tree size {size}", f"{size} leaves need {size.bit_count()} prefix hashes")
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        node, size, nodes = leaf, self.size, self.nodes
        while size & 1:
            node = node_hash(nodes.pop(), node)
            size >>= 1
        nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        node = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            node = node_hash(left, node)
        return node


class BundleReport(msgspec.Struct, frozen=True):
    origin: str
    from_size: int
    to_size: int
    batches: int
    records: int
    outcomes: int
    checkpoints: int


# Outcomes that are no committed row: nothing to match against the asset batches.
_OTHER_PREFIXES = (DUPLICATE_PREFIX, QUARANTINED_PREFIX)


class _OutcomeView(msgspec.Struct):
    outcome: str
    record_hash: str | None


_outcome_decoder = msgspec.json.Decoder(_OutcomeView)


class _Receipt:
    """A receipt batch waiting for its row outcomes."""

    __slots__ = ("acc", "committed", "listed", "partial", "receipt", "seq", "total")

    def __init__(self, seq: int, record: bytes, assets: dict[int, tuple[str, int, bytes]], first_seq: int) -> None:
        try:
            self.receipt = parse_receipt(record)
        except LedgerFormatError as exc:
            raise BundleError("receipt_malformed", Place(batch_seq=seq, entry=0), str(exc)) from exc
        self.seq = seq
        self.total = 0
        self.acc = BlockedRoot()
        # Committed outcomes must list, in row order, exactly the leaves of the receipt's
        # asset batches; compared per batch, its leaves joined (so a difference names its entry).
        self.listed: list[tuple[int, int, bytes]] = []  # (seq, records, leaves joined)
        # An import that began before the bundle cannot be aligned row by row with its batches.
        self.partial = any(b.seq < first_seq for b in self.receipt.batches)
        for b in self.receipt.batches:
            if b.seq < first_seq:
                continue
            known = assets.get(b.seq)
            if known is None or known[0] != b.batch_hash:
                raise BundleError(
                    "receipt_batch_mismatch",
                    Place(batch_seq=seq, entry=0),
                    f"receipt lists batch {b.seq} with hash {b.batch_hash}, the bundle does not",
                )
            self.listed.append((b.seq, known[1], known[2]))
        self.committed: list[bytes] = []


class BundleVerifier:
    """Feed lines in order with ``feed``; ``finish`` returns the report or raises."""

    def __init__(self, verifiers: Iterable[Verifier] | None, *, old_checkpoints: Sequence[Checkpoint] = ()) -> None:
        # None: signatures are not checked (the caller says so to the user); roots still are.
        self._verifiers = None if verifiers is None else list(verifiers)
        self._old = sorted(old_checkpoints, key=lambda c: c.size)
        self._start: BundleStart | None = None
        self._tree = CompactRange()
        self._prev = GENESIS_PREV
        self._batch: BatchHeader | None = None
        self._batch_chain = b""
        self._leaves: list[bytes] = []
        self._receipt: _Receipt | None = None
        # seq -> (batch hash, records, leaves joined): an import's until its receipt is read.
        self._assets: dict[int, tuple[str, int, bytes]] = {}
        self._corrections = Corrections()
        self._review_records: list[bytes] = []
        self._batches = 0
        self._records = 0
        self._outcomes = 0
        self._checkpoints = 0
        self._last_checkpoint = -1
        self._ended: EndLine | None = None
        self._pending_receipt: bytes | None = None
        self._line = 0

    @property
    def line(self) -> int:
        return self._line

    def feed(self, raw: bytes) -> None:
        """One line."""
        try:
            line = _decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise BundleError("bundle_format", f"line {self._line + 1}", str(exc)) from exc
        self._dispatch([line])

    def feed_chunk(self, data: bytes) -> None:
        """Whole lines (``data`` ends with a newline): decoded in one call, which is what makes
        a bundle of a million records quick to check."""
        try:
            lines = _decoder.decode_lines(data)
        except msgspec.DecodeError:
            for raw in data.splitlines():  # find and name the bad line
                self.feed(raw)
            raise AssertionError("unreachable: a line failed to decode") from None
        self._dispatch(lines)

    def _dispatch(self, lines: Iterable[Line]) -> None:
        sha, prefix, unhexlify = _sha256, LEAF_PREFIX, binascii.unhexlify
        committed, committed_at = COMMITTED_PREFIX, COMMITTED_HASH_AT
        for line in lines:
            self._line += 1
            if self._ended is not None:
                raise BundleError("bundle_format", f"line {self._line}", "content after the end line")
            kind = type(line)
            if kind is RecordLine:
                header = self._batch
                leaves = self._leaves
                if (
                    header is not None
                    and line.seq == header.seq  # type: ignore[union-attr]
                    and line.idx == len(leaves)  # type: ignore[union-attr]
                    and line.idx < header.records  # type: ignore[union-attr]
                    and header.kind == "assets"
                ):
                    # The common case inline; _record handles (and names) everything else.
                    leaves.append(sha(prefix + line.record.encode()).digest())  # type: ignore[union-attr]
                else:
                    self._record(line)  # type: ignore[arg-type]
            elif kind is OutcomeLine:
                pending = self._receipt
                data = line.outcome.encode()  # type: ignore[union-attr]
                if (
                    self._batch is None
                    and pending is not None
                    and not pending.partial
                    and line.seq == pending.seq  # type: ignore[union-attr]
                    and line.row == pending.total + 1  # type: ignore[union-attr]
                    and data.startswith(committed)
                ):
                    # A committed row, the common case, inline; _outcome does the rest.
                    try:
                        raw = unhexlify(data[committed_at : committed_at + 64])
                    except (binascii.Error, ValueError):
                        raw = b""
                    if len(raw) == 32:
                        acc = pending.acc
                        acc.leaves.append(sha(prefix + data).digest())
                        if len(acc.leaves) == acc.block:
                            acc.blocks.append(merkle_root(acc.leaves))
                            acc.leaves = []
                        pending.total += 1
                        pending.committed.append(raw)
                        if pending.listed and len(pending.committed) == pending.listed[0][1]:
                            self._match_committed(pending, pending.total)
                        continue
                self._outcome(line)  # type: ignore[arg-type]
            elif kind is BatchLine:
                self._settle()
                self._open_batch(line)  # type: ignore[arg-type]
            elif kind is CheckpointLine:
                self._settle()
                self._checkpoint(line)  # type: ignore[arg-type]
            elif kind is BundleStart:
                self._begin(line)  # type: ignore[arg-type]
            else:
                self._settle()
                self._ended = line  # type: ignore[assignment]

    def _settle(self) -> None:
        """Close the open batch and the receipt awaiting outcomes, if any."""
        self._close_batch()
        if self._receipt is not None:
            self._close_receipt()

    def _need_start(self) -> BundleStart:
        if self._start is None:
            raise BundleError("bundle_format", f"line {self._line}", "the bundle does not start with a bundle line")
        return self._start

    def _begin(self, start: BundleStart) -> None:
        if self._start is not None:
            raise BundleError("bundle_format", f"line {self._line}", "a second bundle line")
        if start.v != PROOF_VERSION:
            raise BundleError("bundle_format", "line 1", f"bundle version {start.v} is not {PROOF_VERSION}")
        if not 0 <= start.from_size <= start.to_size:
            raise BundleError("bundle_format", "line 1", f"from {start.from_size} to {start.to_size} does not grow")
        try:
            nodes = [bytes.fromhex(h) for h in start.prefix]
            prev = bytes.fromhex(start.prev_chain_hash)
        except ValueError as exc:
            raise BundleError("bundle_format", "line 1", "prefix or prev_chain_hash is not hex") from exc
        if start.from_size == 0 and prev != GENESIS_PREV:
            raise BundleError("bundle_format", "line 1", "a bundle from the start links to 32 zero bytes")
        self._tree = CompactRange(start.from_size, nodes)
        self._prev = prev
        self._start = start
        # From F > 0 the bundle may start with the review batch of corrections linked before F.
        self._corrections = Corrections(earlier_unknown=start.from_size > 0)
        self._check_old()

    def _open_batch(self, line: BatchLine) -> None:
        self._need_start()
        header = line.header
        expected = self._tree.size + 1
        if header.seq != expected:
            reason = "batch_missing" if header.seq > expected else "batch_out_of_order"
            raise BundleError(reason, Place(batch_seq=expected), f"expected batch {expected}, found batch {header.seq}")
        try:
            self._batch_chain = bytes.fromhex(line.chain_hash)
        except ValueError as exc:
            raise BundleError("bundle_format", Place(batch_seq=header.seq), "chain_hash is not hex") from exc
        self._batch = header
        self._leaves = []
        self._review_records = []

    def _record(self, line: RecordLine) -> None:
        header = self._batch
        if header is None or line.seq != header.seq or line.idx != len(self._leaves):
            where: Place | str = f"line {self._line}"
            if header is not None:
                where = Place(batch_seq=header.seq, entry=len(self._leaves))
            raise BundleError("entry_missing", where, f"found entry {line.idx} of batch {line.seq}")
        if line.idx >= header.records:
            raise BundleError(
                "record_count_mismatch", Place(batch_seq=header.seq, entry=line.idx), f"header says {header.records}"
            )
        data = line.record.encode()
        self._leaves.append(_sha256(LEAF_PREFIX + data).digest())  # leaf_hash, inlined
        if header.kind == "receipt":
            self._pending_receipt = data
        elif header.kind == "review":
            self._review_records.append(data)

    def _close_batch(self) -> None:
        header = self._batch
        if header is None:
            return
        self._batch = None
        seq, leaves = header.seq, self._leaves
        if len(leaves) != header.records:
            raise BundleError(
                "entry_missing", Place(batch_seq=seq, entry=len(leaves)), f"header says {header.records} records"
            )
        computed = merkle_root(leaves).hex()
        if computed != header.batch_hash:
            raise BundleError(
                "batch_hash_mismatch",
                Place(batch_seq=seq),
                f"records give root {computed}, header says {header.batch_hash}",
            )
        try:
            header_bytes = encode_header(header)
        except LedgerFormatError as exc:
            raise BundleError("batch_header", Place(batch_seq=seq), str(exc)) from exc
        link = chain_hash(self._prev, header_bytes)
        if link != self._batch_chain:
            raise BundleError(
                "chain_hash_mismatch",
                Place(batch_seq=seq),
                f"header links to {link.hex()}, bundle says {self._batch_chain.hex()}",
            )
        failure = self._corrections.check(header, leaves, self._review_records)
        if failure is not None:
            raise BundleError(failure.reason, failure.place, failure.detail)
        self._review_records = []
        self._prev = link
        self._tree.append(leaf_hash(header_bytes))
        self._batches += 1
        self._records += len(leaves)
        if header.kind == "assets":
            # Corrections (no manifest) are no import's: no receipt will ask for their leaves.
            joined = b"".join(leaves) if header.manifest_sha256 is not None else b""
            self._assets[seq] = (header.batch_hash, header.records, joined)
        elif header.kind == "receipt":
            if len(leaves) != 1 or self._pending_receipt is None:
                raise BundleError("receipt_malformed", Place(batch_seq=seq), "a receipt batch holds exactly one entry")
            self._receipt = _Receipt(seq, self._pending_receipt, self._assets, self._need_start().from_size + 1)
        self._pending_receipt = None
        self._check_old()

    def _outcome(self, line: OutcomeLine) -> None:
        # Called once per row of every manifest: kept free of calls that are not needed.
        if self._batch is not None:
            self._close_batch()
        pending = self._receipt
        if pending is None or line.seq != pending.seq or line.row != pending.total + 1:
            raise BundleError("outcome_out_of_place", f"line {self._line}", f"row {line.row} of batch {line.seq}")
        data = line.outcome.encode()
        acc = pending.acc
        acc.leaves.append(_sha256(LEAF_PREFIX + data).digest())
        if len(acc.leaves) == acc.block:
            acc.blocks.append(merkle_root(acc.leaves))
            acc.leaves = []
        pending.total += 1
        if pending.partial:
            return
        # Nearly every outcome is recognised by its first bytes; the root over all of them
        # (checked against the receipt) makes any other reading of the same bytes moot.
        if data.startswith(COMMITTED_PREFIX):
            record_hash: str | bytes | None = data[COMMITTED_HASH_AT : COMMITTED_HASH_AT + 64]
        elif data.startswith(_OTHER_PREFIXES):
            return
        else:
            try:
                view = _outcome_decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise BundleError("outcome_malformed", Place(batch_seq=pending.seq, row=line.row), str(exc)) from exc
            if view.outcome != "committed":
                return
            record_hash = view.record_hash
        try:
            raw = binascii.unhexlify(record_hash or b"")
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise BundleError("outcome_malformed", Place(batch_seq=pending.seq, row=line.row), "bad record_hash")
        pending.committed.append(raw)
        if pending.listed and len(pending.committed) == pending.listed[0][1]:
            self._match_committed(pending, line.row)

    def _match_committed(self, pending: _Receipt, row: int) -> None:
        # Compare as soon as a listed batch's worth of committed rows has arrived.
        if not pending.listed:
            return
        seq, _, joined = pending.listed[0]
        committed = b"".join(pending.committed)
        if committed != joined:
            raise _not_as_recorded(seq, joined, committed, pending.seq)
        pending.listed.pop(0)
        pending.committed = []

    def _close_receipt(self) -> None:
        pending = self._receipt
        assert pending is not None
        self._receipt = None
        where = Place(batch_seq=pending.seq, entry=0)
        self._outcomes += pending.total
        rows = pending.receipt.rows
        if pending.total != rows.total:
            raise BundleError(
                "outcomes_count_mismatch", where, f"receipt accounts for {rows.total} rows, bundle has {pending.total}"
            )
        if pending.acc.root().hex() != pending.receipt.outcomes_root:
            raise BundleError(
                "outcomes_root_mismatch", where, "the row outcomes do not give the receipt's outcomes_root"
            )
        if not pending.partial and pending.listed:
            # Fewer committed rows than the receipt's asset batches hold records.
            seq, _, joined = pending.listed[0]
            raise _not_as_recorded(seq, joined, b"".join(pending.committed), pending.seq)
        if not pending.partial and pending.committed:
            raise BundleError("entry_not_as_recorded", where, "more committed rows than the asset batches hold records")

    def _checkpoint(self, line: CheckpointLine) -> None:
        start = self._need_start()
        where = f"checkpoint at line {self._line}"
        trusted = True
        try:
            checkpoint = read_checkpoint(line.note, self._verifiers, where=where)
        except SignatureError as exc:
            # Signed by a key the auditor did not name (an older, rotated key, say): its root
            # is still checked, but it cannot vouch for the bundle.
            if exc.check != "untrusted_key":
                raise
            checkpoint = read_checkpoint(line.note, None, where=where)
            trusted = False
        if checkpoint.origin != start.origin:
            raise BundleError("checkpoint_origin", where, f"origin {checkpoint.origin!r}, bundle is {start.origin!r}")
        if checkpoint.size != self._tree.size:
            raise BundleError(
                "checkpoint_position", where, f"size {checkpoint.size} where the tree has {self._tree.size} batches"
            )
        if checkpoint.root != self._tree.root():
            raise BundleError(
                "checkpoint_root",
                f"checkpoint of size {checkpoint.size}",
                "the bundle's batches give another root than the signed checkpoint",
            )
        if trusted:
            self._checkpoints += 1
            self._last_checkpoint = checkpoint.size

    def _check_old(self) -> None:
        size = self._tree.size
        while self._old and self._old[0].size <= size:
            old = self._old.pop(0)
            if old.size < size:
                raise BundleError(
                    "old_checkpoint",
                    f"checkpoint of size {old.size}",
                    f"the bundle starts after it (at {size}); export from {old.size} or earlier",
                )
            if old.root != self._tree.root():
                raise BundleError(
                    "consistency",
                    f"checkpoint of size {old.size}",
                    "the bundle's tree is not consistent with this earlier checkpoint: history was rewritten",
                )

    def finish(self) -> BundleReport:
        start = self._need_start()
        if self._ended is None:
            raise BundleError("bundle_truncated", f"line {self._line}", "no end line: the bundle is cut short")
        end = self._ended
        if self._tree.size != start.to_size:
            raise BundleError(
                "bundle_truncated", Place(batch_seq=self._tree.size + 1), f"bundle ends before {start.to_size}"
            )
        if (end.batches, end.records) != (self._batches, self._records):
            raise BundleError("bundle_truncated", "end line", "counts differ from the lines read")
        failure = self._corrections.at_end()
        if failure is not None:
            raise BundleError(failure.reason, failure.place, failure.detail)
        if self._last_checkpoint != start.to_size:
            raise BundleError(
                "checkpoint_missing",
                f"tree size {start.to_size}",
                "no checkpoint signed by a trusted key covers the end of the bundle",
            )
        if self._old:
            raise BundleError(
                "old_checkpoint", f"checkpoint of size {self._old[0].size}", "beyond the end of the bundle"
            )
        return BundleReport(
            origin=start.origin,
            from_size=start.from_size,
            to_size=start.to_size,
            batches=self._batches,
            records=self._records,
            outcomes=self._outcomes,
            checkpoints=self._checkpoints,
        )


def _not_as_recorded(seq: int, joined: bytes, committed: bytes, receipt_seq: int) -> BundleError:
    """The first entry of asset batch ``seq`` (leaves ``joined``) whose record hash is not the
    committed row's at its position (``committed``, the record hashes of those rows)."""
    entry = next((i for i in range(0, len(joined), 32) if joined[i : i + 32] != committed[i : i + 32]), len(committed))
    return BundleError(
        "entry_not_as_recorded",
        Place(batch_seq=seq, entry=entry // 32),
        f"the entry differs from the committed row the receipt of batch {receipt_seq} accounts for at this position",
    )


def verify_bundle(
    lines: Iterable[bytes], verifiers: Iterable[Verifier] | None, *, old_checkpoints: Sequence[Checkpoint] = ()
) -> BundleReport:
    verifier = BundleVerifier(verifiers, old_checkpoints=old_checkpoints)
    for raw in lines:
        if raw.strip():
            verifier.feed(raw)
    return verifier.finish()


def verify_bundle_file(
    f: BinaryIO,
    verifiers: Iterable[Verifier] | None,
    *,
    old_checkpoints: Sequence[Checkpoint] = (),
    block: int = 1 << 22,
) -> BundleReport:
    """The same checks on a file read in large blocks of whole lines."""
    verifier = BundleVerifier(verifiers, old_checkpoints=old_checkpoints)
    rest = b""
    while chunk := f.read(block):
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            verifier.feed_chunk(data[:cut])
        rest = data[cut:]
    if rest.strip():
        verifier.feed(rest)
    return verifier.finish()


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines from arbitrary chunks (an HTTP stream, a file read in blocks)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest
