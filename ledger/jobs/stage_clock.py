"""Wall seconds per stage of one import run, for ``imports.stage_seconds`` (GET /metrics).

A run is always in at most one stage: ``switch`` charges the time since the last switch to the
stage that was current, so interleaved stages (staging alternates reading and validating a chunk
with COPYing it) add up to the run's wall time without counting any moment twice, and an import
that fails mid-stage still reports what that stage had cost when ``seconds`` is read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["StageClock"]

# The final transaction's steps (ledger.db.ledger_store.FinalizeResult.timings) that are not
# the decide step before it nor the cleanup after its commit.
_NOT_FINALIZE = frozenset({"decide", "cleanup"})


class StageClock:
    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._current: str | None = None
        self._since = time.perf_counter()

    def switch(self, stage: str | None) -> None:
        """From now on the run is in ``stage`` (None: in none that is measured)."""
        now = time.perf_counter()
        if self._current is not None:
            self.add(self._current, now - self._since)
        self._current, self._since = stage, now

    def add(self, stage: str, seconds: float) -> None:
        self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def add_finalize(self, timings: Mapping[str, float]) -> None:
        """The decide step and the final transaction, from the steps finalize_import timed."""
        if "decide" in timings:
            self.add("decide", timings["decide"])
        steps = [seconds for step, seconds in timings.items() if step not in _NOT_FINALIZE]
        if steps:
            self.add("finalize", sum(steps))

    def seconds(self) -> dict[str, float]:
        """Each stage's seconds so far, the current one up to now."""
        self.switch(self._current)
        return dict(self._seconds)
