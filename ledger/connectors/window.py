"""The incremental cursor: where the next sync starts, saved only when a sync's import commits.

The upstream is asked for records changed at or after the saved value (inclusive): a strict
"after" would lose records that share the boundary's timestamp but reached the upstream after
the last sync read it. Inclusive alone would fetch the boundary's records again, so the state
also keeps the upstream keys of the records at exactly that value, and those are skipped.
Records that share a timestamp across a page boundary, or across two syncs, are so neither
lost nor doubled.

Values compare as instants when both read as RFC 3339 times (``Z`` or an offset), as numbers
when both are numbers, and as text otherwise.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

__all__ = ["CursorState", "Window", "compare"]


class CursorState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    value: str | None = None
    keys: list[str] = []  # upstream keys of the records whose value is exactly ``value``


def _instant(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


# A value as it compares: its instant, its number, its text. A sync compares every record's value
# with the last one's and the highest one's: each is parsed once, not at every comparison.
_Key = tuple[datetime | None, Decimal | None, str]


def _key(text: str) -> _Key:
    instant = _instant(text)
    # An instant with an offset is never also a number (a Decimal has no ":", "T", "Z" or inner
    # "-"), so its number need not be looked for.
    return instant, (_number(text) if instant is None else None), text


def _compare_keys(a: _Key, b: _Key) -> int:
    if a[0] is not None and b[0] is not None:
        return (a[0] > b[0]) - (a[0] < b[0])
    if a[1] is not None and b[1] is not None:
        return (a[1] > b[1]) - (a[1] < b[1])
    return (a[2] > b[2]) - (a[2] < b[2])


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is before, at or after ``b``."""
    return _compare_keys(_key(a), _key(b))


def as_value(raw: Any) -> str | None:
    """An upstream field's value as the cursor keeps it (text), or None if it cannot be one."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, str | int | float):
        return str(raw)
    # The fetcher decodes JSON fractions as Decimal (their digits kept): an epoch time with a
    # fraction, or such a key, is a value like any other number.
    if isinstance(raw, Decimal) and raw.is_finite():
        return str(raw)
    return None


class Window:
    """One sync's view of the cursor: what to ask for, what to skip, and where it ends."""

    def __init__(self, saved: CursorState | None, start: str | None) -> None:
        self.saved = saved if saved is not None and saved.value is not None else None
        self.since = self.saved.value if self.saved is not None else start
        self._boundary = set(self.saved.keys) if self.saved is not None else set()
        self.high: str | None = self.since
        self.high_keys: set[str] = set(self._boundary)
        # Whether the records came in the order of their value, as an incremental feed should:
        # only then is the highest value of a partial sync's first pages a point up to which
        # the data is complete.
        self.ordered = True
        self._last: _Key | None = None
        self._high: _Key | None = None if self.high is None else _key(self.high)

    def already_committed(self, key: str, value: str | None) -> bool:
        """A record at exactly the saved value whose key the last sync committed."""
        return (
            self.saved is not None
            and value is not None
            and key in self._boundary
            and compare(value, self.saved.value or "") == 0
        )

    def observe(self, key: str, value: str | None) -> None:
        """A record of the complete part of the sync (the pages before any that failed)."""
        if value is None:
            return
        parsed = _key(value)
        if self._last is not None and _compare_keys(parsed, self._last) < 0:
            self.ordered = False
        self._last = parsed
        if self._high is None or (order := _compare_keys(parsed, self._high)) > 0:
            self.high, self._high, self.high_keys = value, parsed, {key}
        elif order == 0:
            self.high_keys.add(key)

    def end(self, *, complete: bool = True) -> CursorState | None:
        """Where the next sync starts; None leaves the saved cursor as it is. A sync that did not
        read every page moves it only if its records came in order: otherwise a record it never
        saw may sort before the highest value it did see."""
        if self.high is None or (not complete and not self.ordered):
            return None
        return CursorState(self.high, sorted(self.high_keys))
