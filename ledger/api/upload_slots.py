"""A cap on the uploads one token sends at once.

Each upload holds a connection, a request task and a spool file while its body streams in; a
token that opens many (a runaway script, a stolen token) would hold them all. The cap is counted
per API process, in memory, and checked before any byte of the body is read: the next upload is
answered 429 ``too_many_uploads`` with ``Retry-After`` at once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from ledger.errors import ServiceError

__all__ = ["TooManyUploads", "UploadSlots"]

# An upload usually ends within seconds; a client told to wait this long finds a slot free
# unless its own uploads are big.
RETRY_AFTER_SECONDS = 5


class TooManyUploads(ServiceError):
    status = 429
    default_code = "too_many_uploads"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            "too_many_uploads",
            f"this token already has {limit} uploads in progress, the most it may have at once; "
            f"try again in {retry_after} s",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class UploadSlots:
    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        # token id -> uploads in progress; a token with none has no entry.
        self._active: dict[uuid.UUID, int] = {}

    def active(self, token_id: uuid.UUID) -> int:
        return self._active.get(token_id, 0)

    @contextlib.contextmanager
    def hold(self, token_id: uuid.UUID) -> Iterator[None]:
        """One of ``token_id``'s slots for the duration, or TooManyUploads. The event loop runs
        one request at a time between awaits, so the count needs no lock."""
        held = self._active.get(token_id, 0)
        if held >= self.per_token:
            raise TooManyUploads(self.per_token, RETRY_AFTER_SECONDS)
        self._active[token_id] = held + 1
        try:
            yield
        finally:
            left = self._active[token_id] - 1
            if left:
                self._active[token_id] = left
            else:
                del self._active[token_id]
