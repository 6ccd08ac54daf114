"""Fixtures for tests/shared: ``store`` runs a test twice, on the real Redis and on fakeredis (the embedded
Redis of ``aiorouter dev``), so the Lua scripts are known to behave the same on both."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio as aredis


@pytest.fixture(params=["redis", "fakeredis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[aredis.Redis]:
    """An empty asyncio Redis: the flushed real test database, or a fresh fakeredis server."""
    if request.param == "redis":
        request.getfixturevalue("clean_redis")  # flushes the test database (or skips without a Redis)
        client = aredis.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()
