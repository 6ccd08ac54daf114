"""The ingress' copy of the set of open circuit breakers, so routing skips them without a round trip."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from ingress.background import stop_task
from ingress.failure_streak import FailureStreak
from shared.breaker import CircuitBreaker
from shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class OpenSetCache:
    """An ingress' copy of :meth:`CircuitBreaker.open_deployments`, refreshed every
    ``open_set_refresh`` seconds by a background task, so routing reads it without I/O.

    When Redis cannot be read the last copy stays (its deadlines still run out), and the loop retries.
    """

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._deadlines: Mapping[str, float] = {}  # deployment id -> time.monotonic() it admits again
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def snapshot(self) -> dict[str, float]:
        """Deployment id -> seconds it stays skipped, for every deployment routing must skip now."""
        now = time.monotonic()
        return {dep: until - now for dep, until in self._deadlines.items() if until > now}

    async def refresh(self) -> None:
        """Read the open set once (the background loop calls this; tests and start-up may too)."""
        fetched_at = time.monotonic()
        open_now = await self._breaker.open_deployments()
        self._deadlines = {dep: fetched_at + wait for dep, wait in open_now.items()}

    async def start(self) -> None:
        """Read once (so the first request sees real state), then keep refreshing in the background."""
        with contextlib.suppress(ServiceUnavailable):
            await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="breaker-open-set")

    async def aclose(self) -> None:
        self._stopping = True  # the loop also checks it: a cancel can surface as a Redis error it logs
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _loop(self) -> None:
        interval = self._breaker.settings.open_set_refresh
        failures = FailureStreak(log, "breaker open set refreshes")
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except ServiceUnavailable as exc:
                failures.failed("breaker open set not refreshed: %s", exc.__cause__ or exc)
                continue
            failures.succeeded()
