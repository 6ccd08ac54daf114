"""How busy a worker's event loop is, and the admission rule that keeps it able to feed its jobs.

Every job of a worker process shares one asyncio loop; a waiting stream costs it almost nothing, a
relayed chunk costs it CPU.  :class:`LoopLag` measures what that sharing costs the jobs: a timer due
every :data:`TICK` seconds notes how late the loop ran it (the time a ready callback waited for the loop),
as a mean smoothed over a few ticks (:attr:`LoopLag.lag`, what the loop sustains) and as a peak that
fades by :data:`PEAK_FADE` a tick (:attr:`LoopLag.peak`, what the slowest callbacks of the last 0.1 s
or so met).  The measure is one timer callback per tick, nothing per job.

:class:`LoopGuard` turns the lag into a yes or no for taking more jobs, with hysteresis: the worker stops
dequeuing once the lag reaches ``saturated_lag`` and resumes when it has fallen below half of it, so a
worker takes as many jobs as its loop keeps up with, up to its ``concurrency``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TICK = 0.025  # seconds between two lag samples
SMOOTHING = 0.3  # weight of a new sample in the smoothed lag
PEAK_FADE = 0.8  # the peak keeps this share of itself from one tick to the next
RECOVERY = 0.5  # a saturated loop admits again below this share of the threshold


class LoopLag:
    """The lateness of a periodic timer on the running loop, in seconds: smoothed, and its recent peak."""

    def __init__(self, tick: float = TICK, smoothing: float = SMOOTHING) -> None:
        self.tick = tick
        self._smoothing = smoothing
        self.lag = 0.0
        self.peak = 0.0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def record(self, late: float) -> float:
        """Fold one sample (how late the timer ran, in seconds) into :attr:`lag` and :attr:`peak`; returns
        :attr:`lag`."""
        late = max(0.0, late)
        self.lag += self._smoothing * (late - self.lag)
        self.peak = max(late, self.peak * PEAK_FADE)
        return self.lag

    def start(self) -> None:
        """Start sampling on the running loop (until :meth:`stop`)."""
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.tick
        self._timer = loop.call_at(self._due, self._sample, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.record(now - self._due)
        self._due = now + self.tick
        self._timer = loop.call_at(self._due, self._sample, loop)


@dataclass(slots=True)
class LoopGuard:
    """Whether a worker takes more jobs: not from the moment its loop lag reaches ``saturated_lag`` until
    it falls below ``RECOVERY`` times that (``saturated_lag`` 0: always)."""

    saturated_lag: float
    saturated: bool = False

    def admits(self, lag: float) -> bool:
        if self.saturated_lag <= 0:
            return True
        if self.saturated:
            self.saturated = lag >= self.saturated_lag * RECOVERY
        else:
            self.saturated = lag >= self.saturated_lag
        return not self.saturated
