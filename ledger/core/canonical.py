"""Canonical encoding (ledger format v1): the only way bytes that get hashed are produced.

JSON without whitespace, object keys sorted by code point, UTF-8, integers only (no floats),
strings escaped exactly as docs/ledger-format.md says (msgspec's escaping, pinned by vectors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ledger.core.errors import CanonicalError
from ledger.core.limits import canonical_depth_max, integer_max, integer_min

__all__ = ["decode", "encode", "encode_asset_shape", "encode_trusted"]

_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()


def _check(value: Any, depth: int) -> None:
    # Exact type checks: bool is an int subclass and must stay a JSON literal, and
    # subclasses could carry their own encodings.
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"string with a lone surrogate: {value[:40]!r}") from exc
        return
    if kind is int:
        if not integer_min <= value <= integer_max:
            raise CanonicalError(f"integer {value} is outside the signed 64-bit range")
        return
    if value is None or kind is bool:
        return
    if depth >= canonical_depth_max:
        raise CanonicalError(f"nesting deeper than {canonical_depth_max}")
    if kind is list or kind is tuple:
        for item in value:
            _check(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise CanonicalError(f"object key {key!r} is not an ASCII string")
            _check(item, depth + 1)
        return
    raise CanonicalError(f"{kind.__name__} has no canonical encoding (use str for decimals and dates)")


def encode(value: Mapping[str, Any] | list[Any] | str | int | bool | None) -> bytes:
    """The canonical bytes of ``value``; raises CanonicalError for anything outside the format."""
    _check(value, 0)
    return _encoder.encode(value)


def _scalars_ok(value: dict[Any, Any]) -> bool:
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str or not key.isascii():
            return False
        if kind is str:
            continue
        if kind is not int or not integer_min <= item <= integer_max:
            return False
    return True


def encode_asset_shape(envelope: dict[str, Any], data: dict[str, Any]) -> bytes:
    """``encode(envelope | {"data": data})`` for the shape of an asset record: the same bytes,
    for a fraction of the cost, when every value of both is a string or an in-range integer.

    Millions of records take this path on import. Anything else (and a string with a lone
    surrogate, which the encoder refuses) goes through ``encode``, which names the problem.
    """
    if "data" not in envelope and _scalars_ok(envelope) and _scalars_ok(data):
        try:
            return _encoder.encode({**envelope, "data": data})
        except UnicodeEncodeError:
            pass
    return encode({**envelope, "data": data})


def encode_trusted(value: dict[str, Any]) -> bytes:
    """``encode(value)`` without the checks, for a value whose producer guarantees what they
    check (ASCII string keys; strings, in-range integers and such objects as values): the
    valid-row fast path, a million times an import. A string with a lone surrogate still raises
    UnicodeEncodeError; only ``encode`` names that problem in the format's terms."""
    return _encoder.encode(value)


def decode(data: bytes) -> Any:
    return _decoder.decode(data)
