"""The hashed structures of ledger format v1 (docs/ledger-format.md): asset records, receipts,
batch headers and the chain, built only here. Row outcomes have their own module
(ledger.core.outcomes), as do review entries (ledger.core.review)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger.core.canonical import encode, encode_asset_shape, encode_trusted
from ledger.core.errors import LedgerFormatError
from ledger.core.hashing import sha256

__all__ = [
    "BATCH_KINDS",
    "FORMAT_VERSION",
    "GENESIS_PREV",
    "BatchHeader",
    "Receipt",
    "asset_record",
    "asset_record_encoder",
    "chain_hash",
    "check_source",
    "encode_header",
    "format_time",
    "parse_receipt",
    "receipt_record",
]

FORMAT_VERSION = 1
BATCH_KINDS = frozenset({"assets", "receipt", "review"})
GENESIS_PREV = bytes(32)


def _asset_envelope(policy: str, lab: str) -> dict[str, str | int]:
    """Every field of an asset record but its data (docs/ledger-format.md): the one definition
    both encoders below use."""
    return {"v": FORMAT_VERSION, "type": "asset", "policy": policy, "lab": lab}


def asset_record(*, policy: str, lab: str, data: Mapping[str, str | int]) -> bytes:
    """One committed asset revision. No revision number, time or import id inside: identical
    content gives an identical record hash whenever it is submitted."""
    return encode_asset_shape(_asset_envelope(policy, lab), dict(data))


def asset_record_encoder(*, policy: str, lab: str) -> Callable[[dict[str, str | int]], bytes | None]:
    """``asset_record`` for the data the valid-row fast path returns (ledger.core.policy.fastpath:
    field-name keys, stripped strings, integers of at most 18 digits), without re-checking what
    that path guarantees: the same bytes, or None for a string with a lone surrogate, which only
    ``asset_record`` can refuse with a reason. tests/core/test_records_fast.py holds the two equal."""
    envelope = _asset_envelope(policy, lab)

    def encode_data(data: dict[str, str | int]) -> bytes | None:
        try:
            return encode_trusted({**envelope, "data": data})
        except UnicodeEncodeError:
            return None

    return encode_data


def receipt_record(
    *,
    task_id: str,
    lab: str,
    manifest_sha256: str,
    policy_name: str,
    policy_version: str,
    policy_sha256: str,
    rows_total: int,
    rows_committed: int,
    rows_duplicate: int,
    rows_quarantined: int,
    outcomes_root: str,
    batches: Sequence[tuple[int, str]],
    source: Mapping[str, Any] | None = None,
) -> bytes:
    """A manifest's account on the ledger: what was submitted, under which policy, and the
    root over the outcome of every row; for a connector's sync, also where the manifest came
    from, page by page (``source``, revision 5: absent from every other receipt)."""
    if rows_total != rows_committed + rows_duplicate + rows_quarantined:
        raise LedgerFormatError(
            f"rows do not add up: {rows_committed} + {rows_duplicate} + {rows_quarantined} != {rows_total}"
        )
    extra: dict[str, Any] = {}
    if source is not None:
        extra["source"] = msgspec.to_builtins(msgspec.convert(source, ReceiptSource))
    return encode(
        {
            **extra,
            "v": FORMAT_VERSION,
            "type": "receipt",
            "task_id": task_id,
            "lab": lab,
            "manifest_sha256": manifest_sha256,
            "policy": {"name": policy_name, "version": policy_version, "sha256": policy_sha256},
            "rows": {
                "total": rows_total,
                "committed": rows_committed,
                "duplicate": rows_duplicate,
                "quarantined": rows_quarantined,
            },
            "outcomes_root": outcomes_root,
            "batches": [{"seq": seq, "batch_hash": h} for seq, h in batches],
        }
    )


class ReceiptPolicy(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str


class ReceiptRows(msgspec.Struct, frozen=True):
    total: int
    committed: int
    duplicate: int
    quarantined: int


class ReceiptBatch(msgspec.Struct, frozen=True):
    seq: int
    batch_hash: str


class ReceiptPage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One page a connector's sync read (or failed to): docs/ledger-format.md §4.3."""

    url: str
    cursor: str | None
    next: str | None
    sha256: str | None
    records: int
    error: str | None


class ReceiptSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    connector: str
    sync_id: str
    cursor_from: str | None
    cursor_to: str | None
    pages: list[ReceiptPage]


class Receipt(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    type: str
    task_id: str
    lab: str
    manifest_sha256: str
    policy: ReceiptPolicy
    rows: ReceiptRows
    outcomes_root: str
    batches: list[ReceiptBatch]
    source: ReceiptSource | None = None


_receipt_decoder = msgspec.json.Decoder(Receipt)


def parse_receipt(data: bytes) -> Receipt:
    try:
        receipt = _receipt_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise LedgerFormatError(f"not a receipt: {exc}") from exc
    if receipt.type != "receipt" or receipt.v != FORMAT_VERSION:
        raise LedgerFormatError(f"not a v{FORMAT_VERSION} receipt (type {receipt.type!r}, v {receipt.v})")
    if receipt.source is not None:
        check_source(receipt.source)
    return receipt


def check_source(source: ReceiptSource) -> None:
    """§4.3's rules for a connector sync's ``source`` beyond its members' types."""
    if not source.connector or not source.sync_id:
        raise LedgerFormatError("not a receipt: source.connector and source.sync_id must be non-empty")
    if not source.pages:
        raise LedgerFormatError("not a receipt: source.pages must list at least one page")
    for i, page in enumerate(source.pages):
        where = f"source.pages[{i}]"
        if page.records < 0:
            raise LedgerFormatError(f"not a receipt: {where}.records is negative")
        if page.error is None:
            if page.sha256 is None or not _is_hex64(page.sha256):
                raise LedgerFormatError(f"not a receipt: {where}.sha256 must be 64 lowercase hex digits")
        elif page.sha256 is not None or page.records != 0 or page.next is not None or not page.error:
            raise LedgerFormatError(f"not a receipt: {where} failed ({page.error!r}): sha256 and next null, records 0")


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class BatchHeader(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    kind: str
    batch_hash: str
    records: int
    manifest_sha256: str | None
    policy_sha256: str | None
    committed_at: str


def encode_header(header: BatchHeader) -> bytes:
    if header.kind not in BATCH_KINDS:
        raise LedgerFormatError(f"unknown batch kind {header.kind!r}")
    return encode(
        {
            "v": FORMAT_VERSION,
            "seq": header.seq,
            "kind": header.kind,
            "batch_hash": header.batch_hash,
            "records": header.records,
            "manifest_sha256": header.manifest_sha256,
            "policy_sha256": header.policy_sha256,
            "committed_at": header.committed_at,
        }
    )


def chain_hash(prev: bytes, header_bytes: bytes) -> bytes:
    """SHA-256(previous chain hash ‖ canonical header); the first batch links to 32 zero bytes."""
    if len(prev) != 32:
        raise LedgerFormatError(f"previous chain hash must be 32 bytes, got {len(prev)}")
    return sha256(prev + header_bytes)


def format_time(moment: datetime) -> str:
    """UTC, microseconds always written: ``2026-11-23T04:00:00.000000Z``."""
    if moment.tzinfo is None:
        raise LedgerFormatError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
