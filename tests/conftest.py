"""Fixtures shared by every test package.

Real-Redis tests use ``AIOROUTER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``), a database
they flush before each test; without a reachable Redis they skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import fakeredis
import pytest
import redis
import redis.asyncio as aredis

from bench.upstream import Upstream, start_upstream

TEST_REDIS_URL = os.environ.get("AIOROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real, reachable Redis database reserved for tests."""
    if not _reachable(TEST_REDIS_URL):
        message = f"no Redis reachable at {TEST_REDIS_URL}"
        if IN_CI:
            pytest.fail(message + " (CI=true: real-Redis tests must run)")
        pytest.skip(message)
    return TEST_REDIS_URL


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client on the flushed test database."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def aredis_client(clean_redis: redis.Redis, redis_url: str) -> AsyncIterator[aredis.Redis]:
    """An asyncio client on the flushed test database."""
    client = aredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """The simulated OpenAI-compatible upstream (``bench.upstream``) on a free port, in this event loop;
    a test module may define its own ``upstream`` (another protocol, a thread) instead."""
    server = await start_upstream()
    yield server
    await server.close()


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
