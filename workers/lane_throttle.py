"""How many batch lines a worker's batch lane may hold while interactive jobs share its loop.

A batch line's upstream call and frames run on the same event loop as the interactive jobs, and every
callback of one delays the others.  While interactive jobs run, or ran within ``interactive_grace``
seconds, the lane's limit follows the loop's recent peak lag (:attr:`workers.loop_load.LoopLag.peak`:
the tail of interactive latency is what a batch must not touch) the way TCP's window follows loss
(additive increase, multiplicative decrease): once per ``STEP`` seconds it halves when the lag passed
``yield_lag`` and grows by one line when it did not, never below ``floor``.  With no
interactive traffic about (or ``yield_lag`` 0), the lane has its full limit at once, so a batch alone
drains at full speed.
"""

from __future__ import annotations

STEP = 0.1  # seconds between two adjustments: long enough for the lines started or ended to show in the lag


class LaneThrottle:
    def __init__(self, full: int, *, yield_lag: float, floor: int, interactive_grace: float) -> None:
        self.full = full
        self.yield_lag = yield_lag
        self.floor = min(floor, full)
        self.interactive_grace = interactive_grace
        self._limit = float(full)
        self._interactive_at: float | None = None
        self._next_step = 0.0
        self._yielding = False

    @property
    def limit(self) -> int:
        """Batch lines the lane may hold now."""
        return int(self._limit)

    @property
    def yielding(self) -> bool:
        """Whether the last :meth:`update` found interactive jobs about (the lane yields to them)."""
        return self._yielding

    def update(self, now: float, *, lag: float, interactive: bool) -> int:
        """Adjust the limit at loop time ``now``, given the loop's lag and whether interactive jobs are
        running; returns :attr:`limit`."""
        if interactive:
            self._interactive_at = now
        calm = self._interactive_at is None or now - self._interactive_at > self.interactive_grace
        self._yielding = not calm and self.yield_lag > 0
        if not self._yielding:
            self._limit = float(self.full)
            return self.full
        if now < self._next_step:
            return self.limit
        self._next_step = now + STEP
        if lag > self.yield_lag:
            self._limit = max(float(self.floor), self._limit / 2)
        else:
            self._limit = min(float(self.full), self._limit + 1)
        return self.limit
