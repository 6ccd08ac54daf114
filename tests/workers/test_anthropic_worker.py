"""A real worker of an ``anthropic`` pool on the real Redis, against the simulated Anthropic API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio as aredis

from bench.anthropic_upstream import AnthropicUpstream, start_anthropic_upstream
from shared import events, keys
from shared.errors import error_from_event
from shared.settings import ProviderSettings, Settings
from tests.openai_spec import chunk_violations, completion_violations
from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue
from tests.workers.factories import WEATHER_TOOL, completion_job
from workers.worker import AsyncWorker

pytestmark = pytest.mark.redis
POOL = "claude"


@contextlib.asynccontextmanager
async def claude_worker(redis_url: str, upstream: AnthropicUpstream) -> AsyncIterator[Settings]:
    """An AsyncWorker of the `claude` pool (kind anthropic) on this event loop, stopped on exit."""
    provider = ProviderSettings(
        name=POOL, kind="anthropic", base_url=upstream.base_url, api_key="sk-ant-test"
    )
    settings = Settings(
        redis_url=redis_url, providers={POOL: provider}, worker_heartbeat_interval=0.2, worker_dead_after=1.0
    )
    connection = redis.Redis.from_url(redis_url)
    worker = AsyncWorker(settings, pool=POOL, concurrency=4, connection=connection)
    task = asyncio.get_running_loop().create_task(worker.run())
    try:
        await eventually(lambda: bool(connection.exists(worker.key)))
        yield settings
    finally:
        worker.request_stop()
        async with asyncio.timeout(30):
            await task
        connection.close()


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicUpstream]:
    """A simulated Anthropic API, slow enough (20 ms per event) to be cancelled mid-stream."""
    server = await start_anthropic_upstream(token_delay=0.02)
    yield server
    await server.close()


def sse_chunks(frames: list[events.Frame]) -> list[dict[str, object]]:
    payload = b"".join(f.payload for f in frames if f.kind in (events.CHUNKS, events.DONE))
    lines = [line[6:] for line in payload.split(b"\n\n") if line]
    assert lines[-1] == b"[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


async def test_stream_tool_call_through_the_worker(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, upstream: AnthropicUpstream
) -> None:
    """A streamed tool-using answer arrives as OpenAI-exact chunks ending with [DONE]."""
    job = completion_job(
        "Weather?",
        reply_to=REPLY_CHANNEL,
        provider=POOL,
        upstream_model="claude-tool",
        include_usage=True,
        tools=[WEATHER_TOOL],
    )
    async with claude_worker(redis_url, upstream) as settings:
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id)
    assert done.kind == events.DONE
    chunks = sse_chunks(replies.of(job.request_id))
    assert all(chunk_violations(c) == [] for c in chunks)
    assert done.meta["finish_reason"] == "tool_calls"
    arguments = "".join(
        call["function"]["arguments"]  # type: ignore[index]
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls", [])  # type: ignore[index]
    )
    assert arguments == '{"location":"Montreal"}'


async def test_json_answer_through_the_worker(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, upstream: AnthropicUpstream
) -> None:
    """A non-stream job's D frame carries an OpenAI-exact chat.completion built from Claude's answer."""
    job = completion_job(
        "Bonjour", reply_to=REPLY_CHANNEL, provider=POOL, upstream_model="claude-sim", stream=False
    )
    async with claude_worker(redis_url, upstream) as settings:
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id)
    body = orjson.loads(done.payload)
    assert completion_violations(body) == []
    assert body["choices"][0]["message"]["content"] == "Hello from Claude. You said: Bonjour"
    assert body["usage"]["prompt_tokens"] == 1


async def test_upstream_overload_is_a_503_error_frame(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, upstream: AnthropicUpstream
) -> None:
    """Anthropic's 529 reaches the ingress as a 503 service_unavailable error frame."""
    job = completion_job("x", reply_to=REPLY_CHANNEL, provider=POOL, upstream_model="claude-overloaded")
    async with claude_worker(redis_url, upstream) as settings:
        await enqueue(aredis_client, job, settings)
        final = await replies.final(job.request_id)
    assert final.kind == events.ERROR
    error = error_from_event(final.meta)
    assert (error.status, error.type) == (503, "service_unavailable")


async def test_cancel_closes_the_anthropic_connection(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, upstream: AnthropicUpstream
) -> None:
    """A cancelled job (the client left) closes its upstream connection within a second."""
    job = completion_job("x", reply_to=REPLY_CHANNEL, provider=POOL, upstream_model="claude-hang")
    async with claude_worker(redis_url, upstream) as settings:
        await enqueue(aredis_client, job, settings)
        await replies.until(lambda f: f.request_id == job.request_id and f.kind == events.START)
        await eventually(lambda: upstream.stats.requests > 0)
        await aredis_client.set(keys.cancelled_marker(job.request_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
        await aredis_client.publish(keys.CANCEL_CHANNEL, job.request_id)
        await eventually(lambda: upstream.stats.client_closed > 0, within=1.5)
    assert upstream.stats.client_closed == 1
