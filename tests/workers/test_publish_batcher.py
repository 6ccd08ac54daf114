"""The worker-wide publish batcher: one pipeline for many jobs, per-job order, per-job failures."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import fakeredis
import pytest
import redis
from redis.exceptions import RedisError, ResponseError

from shared import events, keys
from shared.redis_client import async_client
from workers.publish_batcher import PublishBatcher

CHANNEL = "aior:reply:batch"


async def received(pubsub: fakeredis.aioredis.FakeRedis, count: int) -> list[bytes]:
    """The next ``count`` messages on the subscribed channel, within a few seconds."""
    messages: list[bytes] = []
    async with asyncio.timeout(5):
        while len(messages) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                messages.append(message["data"])
    return messages


async def test_jobs_submitting_together_share_one_pipeline_in_order() -> None:
    """Frames of ten jobs submitted in one go reach Redis in one round trip, each job's in order."""
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    batcher = PublishBatcher(redis)
    waits = [
        batcher.submit(
            [(("SET", f"job:{job}", "done"), {})], CHANNEL, [f"{job}:{i}".encode() for i in range(3)]
        )
        for job in range(10)
    ]
    await asyncio.gather(*waits)
    assert batcher.pipelines == 1
    messages = await received(pubsub, 30)
    for job in range(10):
        assert [m for m in messages if m.startswith(f"{job}:".encode())] == [
            f"{job}:{i}".encode() for i in range(3)
        ]
    assert await redis.get("job:9") == b"done"
    await pubsub.aclose()
    await redis.aclose()


async def test_what_comes_while_a_pipeline_is_on_the_wire_goes_in_the_next() -> None:
    """A submission made after the first batch left is sent by a second pipeline, after the first."""
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    batcher = PublishBatcher(redis)
    first = batcher.submit([], CHANNEL, [b"first"])
    await asyncio.sleep(0)  # the sender task takes the first batch
    second = batcher.submit([], CHANNEL, [b"second"])
    await asyncio.gather(first, second)
    assert batcher.pipelines == 2
    assert await received(pubsub, 2) == [b"first", b"second"]
    await pubsub.aclose()
    await redis.aclose()


async def test_a_rejected_command_fails_only_its_own_job() -> None:
    """A command Redis refuses fails that job's submission; the other job's frame still goes out."""
    redis = fakeredis.FakeAsyncRedis()
    await redis.set("text", "not a number")
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    batcher = PublishBatcher(redis)
    bad = batcher.submit([(("INCR", "text"), {})], CHANNEL, [b"bad"])
    good = batcher.submit([], CHANNEL, [b"good"])
    await good
    with pytest.raises(ResponseError):
        await bad
    assert b"good" in await received(pubsub, 2)
    await pubsub.aclose()
    await redis.aclose()


async def test_a_submission_resolves_to_the_subscribers_its_last_frame_reached() -> None:
    """The reply of a submission's last PUBLISH comes back: 0 when nobody subscribes to the channel."""
    redis = fakeredis.FakeAsyncRedis()
    batcher = PublishBatcher(redis)
    assert await batcher.submit([], CHANNEL, [b"unheard"]) == 0
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    assert await batcher.submit([], CHANNEL, [b"a", b"heard"]) == 1
    await pubsub.aclose()


async def test_frames_for_a_bundling_channel_go_out_as_one_message() -> None:
    """On a channel that takes bundles, the frames of every job in a round trip are one PUBLISH: one
    message, with each job's frames in order, after the jobs' commands ran; each job learns how many
    subscribers the bundle reached."""
    channel = keys.reply_channel("bundles-test")
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    batcher = PublishBatcher(redis)
    waits = [
        batcher.submit(
            [(("SET", f"job:{job}", "done"), {})], channel, [f"{job}:{i}".encode() for i in range(3)]
        )
        for job in range(4)
    ]
    assert await asyncio.gather(*waits) == [1, 1, 1, 1]
    assert batcher.pipelines == 1
    (message,) = await received(pubsub, 1)
    assert events.frames_of(message) == [f"{job}:{i}".encode() for job in range(4) for i in range(3)]
    assert await redis.get("job:3") == b"done"
    await pubsub.aclose()
    await redis.aclose()


async def test_a_channel_without_bundles_and_a_lone_frame_get_plain_frames() -> None:
    """A channel named for an ingress that predates bundles gets one PUBLISH per frame; a bundling
    channel with one frame in the round trip gets the frame itself."""
    bundling = keys.reply_channel("bundles-test")
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL, bundling)
    batcher = PublishBatcher(redis)
    await asyncio.gather(
        batcher.submit([], CHANNEL, [b"Sa\n0\n\n", b"Ca\n1\n\n"]),
        batcher.submit([], bundling, [b"Sb\n0\n\n"]),
    )
    assert sorted(await received(pubsub, 3)) == [b"Ca\n1\n\n", b"Sa\n0\n\n", b"Sb\n0\n\n"]
    await pubsub.aclose()
    await redis.aclose()


async def test_a_rejected_command_fails_only_its_own_job_in_a_bundle() -> None:
    """A job whose command Redis refuses fails alone; the bundle, its frames included, still goes out."""
    channel = keys.reply_channel("bundles-test")
    redis = fakeredis.FakeAsyncRedis()
    await redis.set("text", "not a number")
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    batcher = PublishBatcher(redis)
    bad = batcher.submit([(("INCR", "text"), {})], channel, [b"bad"])
    good = batcher.submit([], channel, [b"good"])
    assert await good == 1
    with pytest.raises(ResponseError):
        await bad
    (message,) = await received(pubsub, 1)
    assert events.frames_of(message) == [b"bad", b"good"]
    await pubsub.aclose()
    await redis.aclose()


class CutBeforePublish:
    """A TCP proxy to Redis that forwards what the client writes up to its first ``PUBLISH`` command, then
    closes both connections: a worker killed (or cut off) in the middle of writing a batch."""

    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._server: asyncio.Server | None = None
        self.cut = asyncio.Event()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection(*self._target)

        async def answers() -> None:
            while data := await redis_reader.read(65536):
                client_writer.write(data)

        back = asyncio.create_task(answers())
        try:
            while data := await client_reader.read(65536):
                at = data.find(b"$7\r\nPUBLISH\r\n")
                if at < 0:
                    redis_writer.write(data)
                    continue
                redis_writer.write(data[: data.rfind(b"*", 0, at)])  # up to the PUBLISH, not it
                await redis_writer.drain()
                self.cut.set()
                break
        finally:
            back.cancel()
            redis_writer.close()
            client_writer.close()


@pytest.mark.redis
async def test_a_batch_cut_before_its_publish_runs_none_of_its_commands(redis_url: str) -> None:
    """A batch with a settlement (any command besides PUBLISH) runs as one transaction: when the write
    is cut before its PUBLISH reached Redis, the settlement does not run either, so no request is
    charged while its answer never went out."""
    direct = redis.Redis.from_url(redis_url)
    direct.delete("settled")
    proxy = CutBeforePublish(redis_url)
    client = async_client(await proxy.start(), max_connections=2, auto_pipeline=True)
    try:
        batcher = PublishBatcher(client)
        frame = events.encode(events.DONE, "req-1", 0, {}, b"")
        done = batcher.submit([(("SET", "settled", "1"), {})], keys.reply_channel("i"), [frame])
        with pytest.raises((RedisError, OSError)):
            await asyncio.wait_for(done, 10)
        assert proxy.cut.is_set()
        assert direct.get("settled") is None
    finally:
        await client.aclose()
        await proxy.close()
        direct.close()


@pytest.mark.redis
async def test_a_command_redis_refuses_to_queue_fails_only_its_own_submission(redis_url: str) -> None:
    """A command Redis refuses to queue (wrong arity) aborts the batch's transaction: the batch's
    submissions are then sent one by one, so only that one fails and the others land."""
    direct = redis.Redis.from_url(redis_url)
    direct.delete("fine")
    client = async_client(redis_url, max_connections=2, auto_pipeline=True)
    try:
        batcher = PublishBatcher(client)
        frame = events.encode(events.DONE, "req-1", 0, {}, b"")
        bad = batcher.submit([(("SET", "only-a-key"), {})], keys.reply_channel("i"), [frame])
        good = batcher.submit([(("SET", "fine", "1"), {})], keys.reply_channel("i"), [frame])
        assert await asyncio.wait_for(good, 10) == 0  # nobody subscribes: it landed all the same
        with pytest.raises(ResponseError):
            await bad
        assert direct.get("fine") == b"1"
        assert batcher.pipelines == 3  # the aborted transaction, then each submission on its own
    finally:
        await client.aclose()
        direct.close()
