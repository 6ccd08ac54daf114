"""A stream's first content leaves for Redis before the job reads on: an upstream that sends its whole
answer in one read (every chunk already buffered) must not have the whole burst parsed before the first
chunk is published.  Real Redis, the worker's own auto-pipelined client and shared publish pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis

from shared.autopipeline import AutoPipelineRedis
from shared.jobs import CompletionJob
from shared.redis_client import async_client
from tests.workers.factories import completion_job
from workers.completion import complete
from workers.providers.base import Delta
from workers.publish_batcher import PublishBatcher
from workers.publisher import FramePublisher

BURST = 40


class BurstProvider:
    """Waits for ``answer`` (the upstream's time to first byte: the job's S frame goes out meanwhile),
    then yields ``BURST`` content deltas and a finish without ever waiting, as an adapter does when the
    upstream's whole answer came in one read; records, each time it is asked for the next delta, the
    bytes the Redis connection had written so far."""

    def __init__(self, written: list[bytes], answer: asyncio.Event) -> None:
        self._written = written
        self._answer = answer
        self.seen_before: list[bytes] = []  # before delta i: what was on the wire

    def streams(self, job: CompletionJob) -> bool:
        return True

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        await self._answer.wait()
        for i in range(BURST):
            self.seen_before.append(b"".join(self._written))
            yield Delta(content=f"<w{i}>")
        yield Delta(finish_reason="stop")

    async def aclose(self) -> None:
        return None


class _WriteSpy:
    def __init__(self, transport: asyncio.Transport, written: list[bytes]) -> None:
        self._transport = transport
        self._written = written

    def write(self, data: Any) -> None:
        self._written.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def _set_on_first_frame(pubsub: Any, started: asyncio.Event) -> None:
    """Set ``started`` once the job's S frame reached its listener."""
    async with asyncio.timeout(10):
        while await pubsub.get_message(ignore_subscribe_messages=True, timeout=1) is None:
            pass
    started.set()


async def test_the_first_chunk_of_a_burst_is_written_before_the_next_delta(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """When the burst's second delta is taken, the first content is already on the connection to Redis
    (and the second is not: it was parsed after), not left behind the whole burst."""
    client = async_client(redis_url, max_connections=4, auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    try:
        await client.ping()  # connects the shared link
        link = client._link
        assert link is not None and link._transport is not None
        written: list[bytes] = []
        link._transport = _WriteSpy(link._transport, written)  # type: ignore[assignment]
        job = completion_job("hi", stream=True)
        pubsub = client.pubsub()
        await pubsub.subscribe(job.reply_to)  # a listener, or the job stops as unheard
        started = asyncio.Event()
        listener = asyncio.ensure_future(_set_on_first_frame(pubsub, started))
        provider = BurstProvider(written, started)
        publisher = FramePublisher(client, job.reply_to, job.request_id, PublishBatcher(client))
        ending = await complete(job, provider, publisher, worker_name="w")
        await listener
        await pubsub.aclose()
    finally:
        await client.aclose()
    assert ending.ok
    assert b"<w0>" not in provider.seen_before[0]
    assert b"<w0>" in provider.seen_before[1]  # out before the burst's second delta was taken
    assert b"<w1>" not in provider.seen_before[1]
