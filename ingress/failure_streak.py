"""Failures in a row of a background loop that retries (the batch driver's rounds, the open-set
refresh): said once, again once per :data:`REPORT_INTERVAL` while they go on, and once when the loop works
again, so an outage is a few log lines, not one per attempt."""

from __future__ import annotations

import logging
import time
from typing import Final

REPORT_INTERVAL: Final = 60.0  # seconds between two log lines while failures go on


class FailureStreak:
    def __init__(self, log: logging.Logger, what: str, *, interval: float = REPORT_INTERVAL) -> None:
        self._log = log
        self._what = what  # what works again, for the recovery line: "batch driver rounds"
        self._interval = interval
        self._reported_at = 0.0
        self.count = 0  # failures in a row

    def failed(self, message: str, *args: object, traceback: bool = False) -> None:
        """One more failure; logged (``message % args``, the count appended) if it is the first of the
        streak or the interval passed since the last line; with ``traceback``, as an error with it."""
        self.count += 1
        now = time.monotonic()
        if self.count > 1 and now - self._reported_at < self._interval:
            return
        self._reported_at = now
        if traceback:
            self._log.exception(message + " (%d in a row)", *args, self.count)
        else:
            self._log.warning(message + " (%d in a row)", *args, self.count)

    def succeeded(self) -> None:
        """The loop worked: a streak that was going on ends, with one line."""
        if self.count:
            self._log.info("%s work again after %d failure(s)", self._what, self.count)
        self.count = 0
