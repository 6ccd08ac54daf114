"""Fixtures for tests/shared: ``store`` (and ``connect_store`` for tests needing several clients of one
store) runs a test twice, on the real Redis and on fakeredis (the embedded Redis of ``aiorouter dev``), so
the Lua scripts are known to behave the same on both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest
import redis.asyncio as aredis


@pytest.fixture(params=["redis", "fakeredis"])
async def connect_store(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], aredis.Redis]]:
    """Makes clients of one empty store: the flushed real test database, or one fresh fakeredis server."""
    made: list[aredis.Redis] = []
    if request.param == "redis":
        request.getfixturevalue("clean_redis")  # flushes the test database (or skips without a Redis)
        url = request.getfixturevalue("redis_url")

        def make_client() -> aredis.Redis:
            made.append(aredis.Redis.from_url(url))
            return made[-1]
    else:
        server = fakeredis.FakeServer()

        def make_client() -> aredis.Redis:
            made.append(fakeredis.FakeAsyncRedis(server=server))
            return made[-1]

    yield make_client
    for client in made:
        await client.aclose()


@pytest.fixture
def store(connect_store: Callable[[], aredis.Redis]) -> aredis.Redis:
    """An empty asyncio Redis: the flushed real test database, or a fresh fakeredis server."""
    return connect_store()
