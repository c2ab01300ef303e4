"""Validate, hash and encode records for the staging table: pure CPU, no I/O.

A chunk of records becomes the bytes of one binary ``COPY import_staging FROM STDIN``, so
the process that did the CPU work hands the database a ready payload and the process that
talks to PostgreSQL only forwards bytes. ``stage_copy`` does it in one pass, straight from the
valid-row fast path to COPY bytes; ``stage_chunk`` and ``encode_copy`` are the general path it
falls back to for every other row, and its reference (tests/ingest/test_staged_rows.py).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ledger.core.hashing import leaf_hash
from ledger.core.policy import Policy
from ledger.core.records import asset_record, asset_record_encoder
from ledger.ingest.limits import quarantined_cell_chars_max

__all__ = ["STAGING_COLUMNS", "StagedCopy", "StagedRow", "encode_copy", "stage_chunk", "stage_copy"]

STAGING_COLUMNS = (
    "import_id",
    "row_no",
    "asset_id",
    "grant_code",
    "record",
    "leaf_hash",
    "errors",
    "cells",
)

StagedRow = tuple[
    uuid.UUID, int, str | None, str | None, bytes | None, bytes | None, list[dict[str, str]] | None, list[str]
]


def stage_chunk(import_id: uuid.UUID, lab: str, policy: Policy, binding: Any, chunk: Sequence[Any]) -> list[StagedRow]:
    """Validate, normalise and hash one chunk of records."""
    return [_stage_row(import_id, lab, policy, binding, rec) for rec in chunk]


def _stage_row(import_id: uuid.UUID, lab: str, policy: Policy, binding: Any, rec: Any) -> StagedRow:
    if rec.error is not None:
        errors = [{"field": "row", "rule": rec.error.rule, "message": rec.error.message}]
        return (import_id, rec.row, None, None, None, None, errors, rec.cells)
    valid = binding.fast(rec.cells)
    if valid is None:
        result = binding.validate(rec.cells)
        if result.errors:
            errors = [{"field": v.field, "rule": v.rule, "message": v.message} for v in result.errors]
            cells = [c[:quarantined_cell_chars_max] for c in rec.cells]
            return (import_id, rec.row, None, None, None, None, errors, cells)
        assert result.data is not None and result.key is not None
        valid = (result.data, result.key)
    data, key = valid
    body = asset_record(policy=policy.name, lab=lab, data=data)
    return (import_id, rec.row, key[0], key[1], body, leaf_hash(body), None, rec.cells)


# PostgreSQL's binary COPY framing: signature, flags, header extension length; -1 ends it.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
# Field count, then the two fixed-width fields: the uuid and the int8 row number.
_ROW_HEAD = struct.Struct("!hi16siq").pack
_LEN = struct.Struct("!i").pack
_JSONB_VERSION = b"\x01"
# The same JSON encoder as the connection's jsonb codec (ledger.db.pool), so staged bytes
# equal what copy_records_to_table would have sent.
_json = msgspec.json.Encoder().encode


class StagedCopy(msgspec.Struct, frozen=True, kw_only=True):
    payload: bytes  # binary COPY data for import_staging
    rows: int
    quarantined: int


# A valid row's fields after the row number: asset_id's length comes with the head; the
# leaf hash is always 32 bytes and errors always NULL.
_VALID_HEAD = struct.Struct("!hi16siqi").pack
_HASH_LEN = struct.pack("!i", 32)
_NULL_THEN_LEN = struct.Struct("!ii").pack


def stage_copy(import_id: uuid.UUID, lab: str, policy: Policy, binding: Any, chunk: Sequence[Any]) -> StagedCopy:
    """``encode_copy(stage_chunk(...))`` of a chunk, the same bytes, in one pass: a row the fast
    path accepts goes from its cells to its COPY bytes with no intermediate row; any other row
    (refused, broken, or a string only the general encoder can refuse) takes the general path."""
    parts = [_COPY_HEADER]
    extend = parts.extend
    fast, encode_data = binding.fast, asset_record_encoder(policy=policy.name, lab=lab)
    id_bytes = import_id.bytes
    quarantined = 0
    for rec in chunk:
        if rec.error is None and (valid := fast(rec.cells)) is not None:
            data, key = valid
            body = encode_data(data)
            if body is not None:
                asset_id, grant_code, cells = key[0].encode(), key[1].encode(), _json(rec.cells)
                extend(
                    (
                        _VALID_HEAD(8, 16, id_bytes, 8, rec.row, len(asset_id)),
                        asset_id,
                        _LEN(len(grant_code)),
                        grant_code,
                        _LEN(len(body)),
                        body,
                        _HASH_LEN,
                        leaf_hash(body),
                        _NULL_THEN_LEN(-1, len(cells)),
                        cells,
                    )
                )
                continue
        staged = _stage_row(import_id, lab, policy, binding, rec)
        quarantined += staged[6] is not None
        _encode_rows((staged,), parts.append)
    parts.append(_COPY_TRAILER)
    return StagedCopy(payload=b"".join(parts), rows=len(chunk), quarantined=quarantined)


def encode_copy(rows: Iterable[StagedRow]) -> bytes:
    """The binary COPY payload for ``rows`` in ``STAGING_COLUMNS`` order."""
    parts = [_COPY_HEADER]
    _encode_rows(rows, parts.append)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _encode_rows(rows: Iterable[StagedRow], append: Any) -> None:
    for import_id, row_no, asset_id, grant_code, record, hash_, errors, cells in rows:
        append(_ROW_HEAD(8, 16, import_id.bytes, 8, row_no))
        for text in (asset_id, grant_code):
            if text is None:
                append(_NULL)
            else:
                raw = text.encode()
                append(_LEN(len(raw)))
                append(raw)
        for blob in (record, hash_):
            if blob is None:
                append(_NULL)
            else:
                append(_LEN(len(blob)))
                append(blob)
        if errors is None:
            append(_NULL)
        else:
            raw = _json(errors)
            append(_LEN(len(raw) + 1))
            append(_JSONB_VERSION)
            append(raw)
        # bytea: PostgreSQL parses it into jsonb only for the rows that end quarantined.
        raw = _json(cells)
        append(_LEN(len(raw)))
        append(raw)
