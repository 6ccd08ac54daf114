"""Fixtures shared by every test package.

Real-Redis tests run on a private ``redis-server`` that the session starts on a free port in a temporary
directory (no persistence) and stops at its end, the way ``aiorouter dev`` does (``cli.dev_redis``); set
``AIOROUTER_TEST_REDIS_URL`` to use another Redis database instead, which the tests flush.  With neither a
``redis-server`` on ``PATH`` nor that variable, every real-Redis test fails, saying how to fix it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator

import fakeredis
import pytest
import redis
import redis.asyncio as aredis

from bench.upstream import Upstream, start_upstream
from cli.dev_redis import dev_redis
from shared.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_REDIS = (
    "the real-Redis tests need a Redis: install redis-server (e.g. `apt-get install redis-server`) so the "
    "test session can start a private one, or set AIOROUTER_TEST_REDIS_URL to a Redis database the tests "
    "may flush"
)


def _reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis database reserved for tests: the session's private redis-server, or
    ``AIOROUTER_TEST_REDIS_URL`` when it is set."""
    explicit = os.environ.get("AIOROUTER_TEST_REDIS_URL")
    if explicit:
        if not _reachable(explicit):
            pytest.fail(f"AIOROUTER_TEST_REDIS_URL is set but no Redis answers at {explicit}")
        yield explicit
        return
    path = os.environ.get("PATH", os.defpath)
    if shutil.which("redis-server", path=path) is None:
        pytest.fail(f"no redis-server on PATH and AIOROUTER_TEST_REDIS_URL is not set: {NO_REDIS}")
    with dev_redis(Settings(), {"PATH": path}) as private:
        assert private.source == "redis-server", private.description
        yield private.url


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
        request.getfixturevalue("clean_redis")  # flushes the test database
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
