"""Failed authentications per client address, shared by the API's bearer tokens and the web
sign-in form, so that a guess through either counts against the same budget.

A client address that presents too many bad tokens in a minute gets 429
``too_many_failed_logins`` with ``Retry-After`` until the minute is over, whatever it sends
meanwhile (counted per API process, in memory, for a bounded number of addresses).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any

from ledger.errors import ServiceError

__all__ = ["FailedLogins", "TooManyFailedLogins", "failed_logins"]

# Where an app keeps its counter (its state is shared by every route; middleware and
# controllers are not).
_STATE_KEY = "failed_logins"


class TooManyFailedLogins(ServiceError):
    status = 429
    default_code = "too_many_failed_logins"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too_many_failed_logins",
            f"too many failed authentications from this address; try again in {retry_after} s",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class FailedLogins:
    """Failed authentications per client address in fixed one-minute windows. At most
    ``clients_max`` addresses are remembered: past that, ended windows are dropped first, then
    the oldest."""

    WINDOW_SECONDS = 60.0

    def __init__(
        self, per_minute: int, *, clients_max: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.clients_max = clients_max
        self.clock = clock
        # address -> (window start, failures in it), in the order the windows started.
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        window = self._windows.get(client)
        if window is None:
            return None
        start, failures = window
        left = start + self.WINDOW_SECONDS - self.clock()
        if left <= 0 or failures < self.per_minute:
            return None
        return max(1, math.ceil(left))

    def check(self, client: str) -> None:
        """TooManyFailedLogins while ``client`` is throttled. Checked before a lookup: while an
        address is throttled even a right guess is refused, so guessing gains nothing, and a
        flood costs no queries."""
        if (retry_after := self.retry_after(client)) is not None:
            raise TooManyFailedLogins(retry_after)

    def failed(self, client: str) -> None:
        now = self.clock()
        window = self._windows.get(client)
        if window is None or now - window[0] >= self.WINDOW_SECONDS:
            self._windows.pop(client, None)
            self._windows[client] = (now, 1)
            self._evict(now)
        else:
            self._windows[client] = (window[0], window[1] + 1)

    def _evict(self, now: float) -> None:
        # Windows are kept in the order they started: the ended ones are at the front.
        while self._windows:
            start, _ = next(iter(self._windows.values()))
            if now - start < self.WINDOW_SECONDS:
                break
            self._windows.popitem(last=False)
        while len(self._windows) > self.clients_max:
            self._windows.popitem(last=False)


def failed_logins(app_state: MutableMapping[str, Any], per_minute: int) -> FailedLogins:
    """The app's one counter, made on first use in ``app_state`` (Litestar's app.state)."""
    counter = app_state.get(_STATE_KEY)
    if not isinstance(counter, FailedLogins):
        counter = FailedLogins(per_minute)
        app_state[_STATE_KEY] = counter
    return counter
