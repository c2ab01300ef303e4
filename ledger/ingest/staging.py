"""Validate, hash and encode records for the staging table: pure CPU, no I/O.

A chunk of records becomes the bytes of one binary ``COPY import_staging FROM STDIN``, so
the process that did the CPU work hands the database a ready payload and the process that
talks to PostgreSQL only forwards bytes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from ledger.core.hashing import leaf_hash
from ledger.core.policy import Policy
from ledger.core.records import asset_record
from ledger.ingest.limits import quarantined_cell_chars_max

__all__ = ["STAGING_COLUMNS", "StagedRow", "encode_copy", "stage_chunk"]

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
    out: list[StagedRow] = []
    name = policy.name
    validate, fast = binding.validate, binding.fast
    for rec in chunk:
        if rec.error is not None:
            out.append(
                (
                    import_id,
                    rec.row,
                    None,
                    None,
                    None,
                    None,
                    [{"field": "row", "rule": rec.error.rule, "message": rec.error.message}],
                    rec.cells,
                )
            )
            continue
        valid = fast(rec.cells)
        if valid is not None:
            data, key = valid
            body = asset_record(policy=name, lab=lab, data=data)
            out.append((import_id, rec.row, key[0], key[1], body, leaf_hash(body), None, rec.cells))
            continue
        result = validate(rec.cells)
        if result.errors:
            out.append(
                (
                    import_id,
                    rec.row,
                    None,
                    None,
                    None,
                    None,
                    [{"field": v.field, "rule": v.rule, "message": v.message} for v in result.errors],
                    [c[:quarantined_cell_chars_max] for c in rec.cells],
                )
            )
            continue
        assert result.data is not None and result.key is not None
        body = asset_record(policy=name, lab=lab, data=result.data)
        out.append(
            (
                import_id,
                rec.row,
                result.key[0],
                result.key[1],
                body,
                leaf_hash(body),
                None,
                rec.cells,
            )
        )
    return out


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


def encode_copy(rows: Iterable[StagedRow]) -> bytes:
    """The binary COPY payload for ``rows`` in ``STAGING_COLUMNS`` order."""
    parts = [_COPY_HEADER]
    append = parts.append
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
    append(_COPY_TRAILER)
    return b"".join(parts)
