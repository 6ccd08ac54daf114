"""What the ingress' readiness probes saw of Redis: since when it has failed them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

REDIS_OUTAGE_GRACE: Final = 30.0
"""Seconds Redis may fail every readiness probe before this ingress reports itself not ready."""


class RedisOutage:
    """Since when Redis has failed this ingress' readiness probes, remembered between probes."""

    def __init__(
        self, grace: float = REDIS_OUTAGE_GRACE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace = grace
        self._clock = clock
        self._since: float | None = None

    def answered(self) -> None:
        self._since = None

    def failed(self) -> float:
        """Record a failed read; how long Redis has been failing, 0 for the first failure."""
        now = self._clock()
        if self._since is None:
            self._since = now
        return now - self._since
