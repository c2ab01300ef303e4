"""Dotted paths into decoded JSON: ``data.items``, ``grant.code``, ``items.0.id``.

A segment of digits indexes a list; every other segment names an object member. The empty
path is the value itself (an upstream whose body is the list of records)."""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "get_path", "parse_path"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def parse_path(path: str) -> tuple[str, ...]:
    if path == "":
        return ()
    segments = tuple(path.split("."))
    if any(s == "" for s in segments):
        raise ValueError(f"not a dotted path: {path!r} (an empty segment)")
    return segments


def get_path(value: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``, or MISSING where a member or index is absent (never an error: what
    is missing is for the caller to judge)."""
    for segment in path:
        if isinstance(value, dict):
            if segment not in value:
                return MISSING
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit():
            index = int(segment)
            if index >= len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value
