"""An ingress' breaker open-set cache always stops when closed, even when the cancel lands while its
refresh talks to Redis (where it can surface as a Redis error the loop would log and survive)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from shared.breaker import CircuitBreaker, OpenSetCache
from shared.settings import BreakerSettings


async def test_close_stops_the_refresh_loop_whenever_it_lands(aredis_client: aredis.Redis) -> None:
    """Two hundred start/close cycles with a refresh every millisecond each stop within seconds."""
    breaker = CircuitBreaker(aredis_client, BreakerSettings(failure_threshold=1, open_set_refresh=0.001))
    await breaker.record_failure("p/m")
    for cycle in range(200):
        cache = OpenSetCache(breaker)
        await cache.start()
        await asyncio.sleep(0.001 * (cycle % 5))
        async with asyncio.timeout(5):
            await cache.aclose()
        assert "p/m" in cache.snapshot()
