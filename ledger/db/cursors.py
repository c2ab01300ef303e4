"""Keyset cursors: the sort key of a page's last row, handed to the caller as an opaque string.

A list query returns the rows after a key in its own order (``after=``); the caller gets that
key back as ``next`` and sends it as ``cursor``. The string is URL-safe base64 of the key as a
JSON array; a bare row number (the rows of one import) is sent as itself.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

from ledger.errors import InvalidRequest

__all__ = ["decode_cursor", "decode_row_cursor", "encode_cursor", "invalid_cursor"]

T = TypeVar("T")


def invalid_cursor() -> InvalidRequest:
    return InvalidRequest("invalid_cursor", "cursor is not one this service issued")


def encode_cursor(key: Sequence[Any], *, padded: bool = False) -> str:
    """The cursor of ``key`` (JSON-encodable values); ``padded`` keeps base64's trailing '=',
    as /assets has always issued them."""
    text = base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode()
    return text if padded else text.rstrip("=")


def decode_cursor(cursor: str, key_type: type[T]) -> T:
    """The key ``encode_cursor`` made, as ``key_type`` (e.g. ``tuple[str, str]``), padded or not."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=key_type)
    except (ValueError, msgspec.DecodeError):
        raise invalid_cursor() from None


def decode_row_cursor(cursor: str) -> int:
    """A row-number cursor, as ``str(row)`` issued it."""
    try:
        return int(cursor)
    except ValueError:
        raise invalid_cursor() from None
