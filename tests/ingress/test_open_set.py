"""An ingress' copy of the open breakers: served from memory, kept without Redis, and always stopped
when closed, even when the cancel lands while its refresh talks to Redis."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ingress.open_set import OpenSetCache
from shared.breaker import CircuitBreaker
from shared.settings import BreakerSettings
from tests.store_calls import record_failure
from tests.waiting import eventually


async def test_close_stops_the_refresh_loop_whenever_it_lands(aredis_client: aredis.Redis) -> None:
    """Two hundred start/close cycles with a refresh every millisecond each stop within seconds."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1, open_set_refresh=0.001))
    await record_failure(aredis_client, breaker, "p/m")
    for cycle in range(200):
        cache = OpenSetCache(breaker)
        await cache.start()
        await asyncio.sleep(0.001 * (cycle % 5))
        async with asyncio.timeout(5):
            await cache.aclose()
        assert "p/m" in cache.snapshot()


DEP = "prov-a/model-x"


async def test_open_set_cache_serves_the_last_read_without_io(aredis_client: aredis.Redis) -> None:
    """The ingress cache refreshes in the background and answers from memory."""
    breaker = CircuitBreaker(
        aredis_client, BreakerSettings(failure_threshold=1, cooldown=20.0, open_set_refresh=0.05)
    )
    cache = OpenSetCache(breaker)
    await cache.start()
    try:
        assert cache.snapshot() == {}
        await record_failure(aredis_client, breaker, DEP)

        await eventually(lambda: DEP in cache.snapshot())
        assert 15.0 < cache.snapshot()[DEP] <= 20.0
    finally:
        await cache.aclose()


async def test_cache_starts_and_stops_without_redis(clean_redis: redis.Redis) -> None:
    """With Redis unreachable the cache starts empty and stops cleanly."""
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    cache = OpenSetCache(CircuitBreaker(dead, BreakerSettings()))
    await cache.start()
    assert cache.snapshot() == {}
    await cache.aclose()
    await dead.aclose()


async def test_refreshes_failing_in_a_row_are_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """With Redis away the refresh fails every open_set_refresh seconds: one warning says so (again only
    once a minute), not one per refresh."""
    caplog.set_level(logging.INFO, logger="ingress.open_set")
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    breaker = CircuitBreaker(dead, BreakerSettings(open_set_refresh=0.01))
    cache = OpenSetCache(breaker)
    refreshes = 0
    refresh = cache.refresh

    async def counted() -> None:
        nonlocal refreshes
        refreshes += 1
        await refresh()

    cache.refresh = counted  # type: ignore[method-assign]
    await cache.start()
    try:
        await eventually(lambda: refreshes >= 5)
    finally:
        await cache.aclose()
        await dead.aclose()
    lines = [r for r in caplog.records if r.name == "ingress.open_set"]
    assert len(lines) == 1 and "not refreshed" in lines[0].getMessage()
