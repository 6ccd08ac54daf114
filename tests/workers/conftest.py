"""Fixtures for worker tests on a real Redis: settings, an in-process worker, enqueueing, reply frames."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from shared import events
from shared.jobs import CompletionJob, enqueue_commands
from shared.redis_commands import replay
from shared.settings import ProviderSettings, Settings
from tests.waiting import eventually
from tests.workers.raw_server import RawServer
from workers.providers.http_clients import UpstreamHttp
from workers.worker import AsyncWorker

REPLY_CHANNEL = f"aior:reply:workers-test-{os.getpid()}"
"""Unique per test process (pub/sub is server-wide and other suites run at the same time), and the same
whether this module is imported as ``conftest`` by pytest or as ``tests.workers.conftest`` by a test."""


def worker_settings(redis_url: str, *, tokens_per_second: float = 0.0, **overrides: Any) -> Settings:
    provider = ProviderSettings(name="simulated", tokens_per_second=tokens_per_second)
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "providers": {"simulated": provider},
        "worker_heartbeat_interval": 0.2,
        "worker_dead_after": 1.0,
        **overrides,
    }
    return Settings(**values)


async def enqueue(client: aredis.Redis, job: CompletionJob, settings: Settings) -> None:
    commands = enqueue_commands(
        job,
        job_timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
    )
    async with client.pipeline(transaction=True) as pipe:
        replay(pipe, commands)
        await pipe.execute()


class Replies:
    """The frames published on the test ingress' reply channel, grouped by request id."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub
        self.frames: list[events.Frame] = []

    async def next(self, within: float = 10) -> events.Frame:
        async with asyncio.timeout(within):
            while True:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    frame = events.decode(message["data"])
                    self.frames.append(frame)
                    return frame

    async def until(self, predicate: Callable[[events.Frame], bool], within: float = 15) -> events.Frame:
        """The next frame (not yet seen) that satisfies ``predicate``."""
        async with asyncio.timeout(within):
            while True:
                frame = await self.next(within)
                if predicate(frame):
                    return frame

    async def final(self, request_id: str, within: float = 15) -> events.Frame:
        """The final frame of ``request_id``, whether it already arrived or not."""
        for frame in self.frames:
            if frame.request_id == request_id and frame.is_final:
                return frame
        return await self.until(lambda f: f.request_id == request_id and f.is_final, within)

    def of(self, request_id: str) -> list[events.Frame]:
        return [f for f in self.frames if f.request_id == request_id]


@pytest.fixture
async def replies(aredis_client: aredis.Redis) -> AsyncIterator[Replies]:
    pubsub = aredis_client.pubsub()
    await pubsub.subscribe(REPLY_CHANNEL)
    yield Replies(pubsub)
    await pubsub.aclose()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, *, concurrency: int = 4, **options: Any
) -> AsyncIterator[AsyncWorker]:
    """An AsyncWorker running on this event loop; stopped (warmly) and awaited on exit."""
    connection = redis.Redis.from_url(settings.redis_url)
    worker = AsyncWorker(
        settings, pool="simulated", concurrency=concurrency, connection=connection, **options
    )
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        await eventually(lambda: bool(connection.exists(worker.key)))
        # It registers before it subscribes to stop requests; one sent in between would go unheard.
        await eventually(lambda: connection.pubsub_numsub(worker.pubsub_channel_name)[0][1] == 1)
        yield worker
    finally:
        worker.request_stop()
        async with asyncio.timeout(30):
            await task
        connection.close()


@pytest.fixture
async def servers() -> AsyncIterator[list[RawServer]]:
    """Raw servers (``tests.workers.raw_server``) started by a test, closed after it."""
    started: list[RawServer] = []
    yield started
    for server in started:
        await server.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[UpstreamHttp]]:
    """Upstream HTTP clients made by a test, closed after it."""
    made: list[UpstreamHttp] = []
    yield made
    for client in made:
        await client.aclose()
