"""The frame publisher: immediate first publish, coalescing while busy, order, final frame semantics."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from redis import exceptions as redis_exceptions

from shared import events
from shared.errors import IngressGone, ServiceUnavailable
from tests.waiting import eventually
from workers.publish_batcher import PublishBatcher
from workers.publisher import FramePublisher

CHANNEL = "aior:reply:test"


class GatedRedis(fakeredis.FakeAsyncRedis):
    """fakeredis whose PUBLISH waits for a gate, and which records how many publishes overlap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0

    async def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            return await super().publish(channel, message, **kwargs)
        finally:
            self.in_flight -= 1


class GatedBatcher(PublishBatcher):
    """A shared pipeline whose round trips wait for ``redis.gate`` and count in ``redis.in_flight``, as
    :class:`GatedRedis` does for a publisher without one."""

    def __init__(self, redis: GatedRedis) -> None:
        super().__init__(redis)
        self.gated = redis

    async def _send_batch(self, batch: Any) -> None:
        self.gated.in_flight += 1
        self.gated.most_in_flight = max(self.gated.most_in_flight, self.gated.in_flight)
        try:
            await self.gated.gate.wait()
            await super()._send_batch(batch)
        finally:
            self.gated.in_flight -= 1


@pytest.fixture
async def redis() -> GatedRedis:
    return GatedRedis(server=fakeredis.FakeServer())


@pytest.fixture(params=["own publishes", "shared pipeline"])
def batcher(request: pytest.FixtureRequest, redis: GatedRedis) -> PublishBatcher | None:
    """Each ordering test runs twice: the publisher's own publishes (a task each), and a worker's shared
    pipeline (a submission with a done callback, no task)."""
    return GatedBatcher(redis) if request.param == "shared pipeline" else None


async def next_frame(pubsub: Any) -> events.Frame:
    """The next frame on the channel (subscription confirmations skipped), within a few seconds."""
    async with asyncio.timeout(5):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                return events.decode(message["data"])


async def frames_of(redis: GatedRedis, action: Any, count: int) -> list[events.Frame]:
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    await action()
    frames = [await next_frame(pubsub) for _ in range(count)]
    await pubsub.aclose()
    return frames


async def test_chunks_while_busy_are_joined_into_one_frame(
    redis: GatedRedis, batcher: PublishBatcher | None
) -> None:
    """The first chunk goes out at once; chunks arriving while it is in flight form the next frame."""
    publisher = FramePublisher(redis, CHANNEL, "req-1", batcher)

    async def action() -> None:
        redis.gate.clear()
        publisher.send_chunks(b"a")
        await eventually(lambda: redis.in_flight == 1)  # the publish of "a" is in flight, held at the gate
        publisher.send_chunks(b"b")
        publisher.send_chunks(b"c")
        redis.gate.set()
        await publisher.flush()

    frames = await frames_of(redis, action, 2)
    assert [(f.kind, f.seq, f.payload) for f in frames] == [(b"C", 0, b"a"), (b"C", 1, b"bc")]
    assert redis.most_in_flight == 1


async def test_final_frame_takes_pending_chunks(redis: GatedRedis, batcher: PublishBatcher | None) -> None:
    """Chunks still queued when the job ends ride in the D frame's payload, before its own bytes."""
    publisher = FramePublisher(redis, CHANNEL, "req-2", batcher)

    async def action() -> None:
        publisher.start({"provider": "p", "worker": "w"})
        await publisher.flush()
        redis.gate.clear()
        publisher.send_chunks(b"x")
        await eventually(lambda: redis.in_flight == 1)
        publisher.send_chunks(b"y")
        finishing = asyncio.ensure_future(publisher.finish(events.DONE, {"usage": {}}, events.SSE_DONE))
        await asyncio.sleep(0)  # one loop step: finish() starts and waits behind the publish in flight
        redis.gate.set()
        await finishing

    frames = await frames_of(redis, action, 3)
    assert [(f.kind, f.seq) for f in frames] == [(b"S", 0), (b"C", 1), (b"D", 2)]
    assert frames[0].meta == {"provider": "p", "worker": "w"}
    assert frames[1].payload == b"x"
    assert frames[2].payload == b"y" + events.SSE_DONE
    assert redis.most_in_flight == 1


async def test_error_frame_follows_pending_chunks(redis: GatedRedis, batcher: PublishBatcher | None) -> None:
    """Before an E frame, queued chunks go out as one last C frame, in order."""
    publisher = FramePublisher(redis, CHANNEL, "req-3", batcher)

    async def action() -> None:
        redis.gate.clear()
        publisher.send_chunks(b"1")
        await eventually(lambda: redis.in_flight == 1)
        publisher.send_chunks(b"2")
        finishing = asyncio.ensure_future(publisher.finish(events.ERROR, {"status": 503}))
        await asyncio.sleep(0)  # one loop step: finish() starts and waits behind the publish in flight
        redis.gate.set()
        await finishing

    frames = await frames_of(redis, action, 3)
    assert [(f.kind, f.seq, f.payload) for f in frames] == [(b"C", 0, b"1"), (b"C", 1, b"2"), (b"E", 2, b"")]
    assert frames[2].meta == {"status": 503}


async def test_many_chunks_keep_order_and_seq(redis: GatedRedis, batcher: PublishBatcher | None) -> None:
    """Under bursty arrivals every byte arrives once, in order, with consecutive seq numbers."""
    publisher = FramePublisher(redis, CHANNEL, "req-4", batcher)
    pieces = [f"<{i}>".encode() for i in range(200)]
    received: list[events.Frame] = []
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    for i, piece in enumerate(pieces):
        publisher.send_chunks(piece)
        if i % 7 == 0:
            await asyncio.sleep(0)
    await publisher.finish(events.DONE, {}, b"<end>")
    while not received or not received[-1].is_final:
        received.append(await next_frame(pubsub))
    await pubsub.aclose()
    assert [f.seq for f in received] == list(range(len(received)))
    assert b"".join(f.payload for f in received) == b"".join(pieces) + b"<end>"
    assert 1 < len(received) < len(pieces)  # coalesced, yet streamed
    assert redis.most_in_flight == 1


async def test_final_commands_land_before_the_final_frame(redis: GatedRedis) -> None:
    """Commands passed to finish() run in the same round trip, before the PUBLISH of the frame."""
    publisher = FramePublisher(redis, CHANNEL, "req-5")
    seen: list[bytes | None] = []
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    await publisher.finish(events.DONE, {}, b"", [(("SET", "bookkeeping", "done"), {})])
    await next_frame(pubsub)
    seen.append(await redis.get("bookkeeping"))
    await pubsub.aclose()
    assert seen == [b"done"]


async def test_redis_failure_becomes_service_unavailable() -> None:
    """A lost Redis surfaces as ServiceUnavailable, from the next call after a failed background publish."""
    server = fakeredis.FakeServer()
    server.connected = False
    redis = fakeredis.FakeAsyncRedis(server=server)
    publisher = FramePublisher(redis, CHANNEL, "req-6")
    publisher.patience = 0.0  # no retries: the failure is for good at once
    publisher.start({})  # in the background: the failure comes from the next call
    with pytest.raises(ServiceUnavailable):
        await publisher.flush()
    with pytest.raises(ServiceUnavailable):
        publisher.send_chunks(b"b")
    with pytest.raises(ServiceUnavailable):
        await publisher.finish(events.DONE, {})


async def test_abandon_drops_queued_chunks(redis: GatedRedis) -> None:
    """After abandon() (job cancelled), queued chunks are never published; the one in flight lands."""
    publisher = FramePublisher(redis, CHANNEL, "req-7")

    async def action() -> None:
        redis.gate.clear()
        publisher.send_chunks(b"sent")
        await eventually(lambda: redis.in_flight == 1)
        publisher.send_chunks(b"dropped")
        publisher.abandon()
        redis.gate.set()
        await publisher.flush()
        await redis.publish(CHANNEL, events.encode(events.DONE, "marker", 0))

    frames = await frames_of(redis, action, 2)
    assert [(f.request_id, f.payload) for f in frames] == [("req-7", b"sent"), ("marker", b"")]


async def test_attached_commands_ride_with_the_start_frame(redis: GatedRedis) -> None:
    """Commands attached before start() are written in the S frame's round trip, once, before its PUBLISH."""
    publisher = FramePublisher(redis, CHANNEL, "req-1")
    publisher.attach([(("SET", "rider", "1"), {})])
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    publisher.start({"provider": "p"})
    assert (await next_frame(pubsub)).kind == events.START
    assert await redis.get("rider") == b"1"
    await redis.delete("rider")
    await publisher.finish(events.DONE, {}, b"")
    assert (await next_frame(pubsub)).kind == events.DONE
    assert await redis.get("rider") is None
    await pubsub.aclose()


async def test_riders_attached_later_are_built_when_the_start_frame_goes_out(redis: GatedRedis) -> None:
    """attach_later's commands are built when the S frame is sent, from its own task (not in start(), so
    the job's next step runs first), and land before its PUBLISH."""
    built: list[str] = []

    def rider() -> list[Any]:
        built.append("rider")
        return [(("SET", "rider", "later"), {})]

    publisher = FramePublisher(redis, CHANNEL, "req-1")
    publisher.attach_later(rider)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    publisher.start({"provider": "p"})
    assert built == []
    assert (await next_frame(pubsub)).kind == events.START
    assert built == ["rider"] and await redis.get("rider") == b"later"
    await pubsub.aclose()


class FlakyRedis(fakeredis.FakeAsyncRedis):
    """fakeredis whose first ``failures`` PUBLISH commands fail as a lost connection (after landing, when
    ``lands``: a reply lost on the way back)."""

    def __init__(self, *args: Any, failures: int, lands: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.lands = lands

    async def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            if self.lands:
                await super().publish(channel, message, **kwargs)
            raise redis_exceptions.ConnectionError("lost")
        return await super().publish(channel, message, **kwargs)


@pytest.mark.parametrize("lands", [False, True])
async def test_a_failed_publish_is_retried_until_redis_answers(lands: bool) -> None:
    """Publishes that fail (their frame lost, or landed with its reply lost) are retried, the same frames
    again, so the job's frames all arrive, in order, instead of the job failing."""
    redis = FlakyRedis(server=fakeredis.FakeServer(), failures=3, lands=lands)
    publisher = FramePublisher(redis, CHANNEL, "req-8")

    async def action() -> None:
        publisher.start({})
        await publisher.flush()
        publisher.send_chunks(b"a")
        await publisher.flush()
        await publisher.finish(events.DONE, {}, b"z")

    frames = await frames_of(redis, action, 3 + (3 if lands else 0))  # the S frame landed 4 times
    seqs = [f.seq for f in frames]
    assert sorted(set(seqs)) == [0, 1, 2] and seqs == sorted(seqs)
    assert frames[-1].kind == events.DONE


async def test_a_failed_chunk_publish_through_the_shared_pipeline_is_retried() -> None:
    """A chunk submitted to the shared pipeline while Redis is unreachable goes out when it answers again
    (retried from a task), and the chunks queued meanwhile follow it, in order."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeAsyncRedis(server=server)
    batcher = PublishBatcher(redis)
    publisher = FramePublisher(redis, CHANNEL, "req-12", batcher)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    server.connected = False
    publisher.send_chunks(b"a")
    await eventually(lambda: batcher.pipelines == 1)  # the first attempt failed
    publisher.send_chunks(b"b")
    server.connected = True
    await publisher.flush()
    publisher.send_chunks(b"c")
    await publisher.finish(events.DONE, {}, b"z")
    frames = [await next_frame(pubsub) for _ in range(4)]
    await pubsub.aclose()
    assert [(f.kind, f.seq, f.payload) for f in frames] == [
        (b"C", 0, b"a"),
        (b"C", 1, b"b"),
        (b"C", 2, b"c"),
        (b"D", 3, b"z"),
    ]
    assert publisher.published == 4


async def test_the_final_frame_comes_even_after_a_chunk_publish_failed_for_good() -> None:
    """A chunk publish that failed past its patience does not swallow the final frame: the E frame that
    tells the client how the job ended is still published once Redis answers."""
    redis = FlakyRedis(server=fakeredis.FakeServer(), failures=2, lands=False)
    publisher = FramePublisher(redis, CHANNEL, "req-9")
    publisher.patience = 0.0

    async def action() -> None:
        publisher.send_chunks(b"a")
        with pytest.raises(ServiceUnavailable):
            await publisher.flush()
        publisher.patience = 5.0
        await publisher.finish(events.ERROR, {"message": "lost"}, b"", [], [])

    (frame,) = await frames_of(redis, action, 1)
    assert frame.kind == events.ERROR and frame.seq == 1


@pytest.mark.parametrize("batched", [False, True])
async def test_a_publish_nobody_receives_stops_the_job(batched: bool) -> None:
    """A frame that reached no subscriber (the ingress is gone) makes the job's next call raise
    IngressGone, with no extra round trip; the final frame still goes out."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    publisher = FramePublisher(redis, CHANNEL, "req-10", PublishBatcher(redis) if batched else None)
    publisher.start({})
    with pytest.raises(IngressGone):
        await publisher.flush()
    assert publisher.unheard
    with pytest.raises(IngressGone):
        publisher.send_chunks(b"a")
    with pytest.raises(IngressGone):
        publisher.check()
    await publisher.finish(events.ERROR, IngressGone().to_event())
    assert publisher.published == 2


async def test_a_channel_nobody_is_meant_to_hear_does_not_stop_the_job() -> None:
    """A batch line's publisher (listened=False) keeps going when its frames reach no subscriber: its
    results go to the batch, so an empty channel says nothing about who waits for it."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    publisher = FramePublisher(redis, CHANNEL, "req-11", listened=False)
    publisher.start({})
    await publisher.flush()
    publisher.send_chunks(b"a")
    await publisher.flush()
    publisher.check()
    await publisher.finish(events.DONE, {})
    assert not publisher.unheard and publisher.published == 3


async def test_a_held_start_goes_out_with_the_first_chunk(redis: GatedRedis) -> None:
    """A start held for content (``hold``) and the first chunk that comes meanwhile share one round trip,
    S before C."""
    batcher = PublishBatcher(redis)
    publisher = FramePublisher(redis, CHANNEL, "req-1", batcher)

    async def action() -> None:
        publisher.start({"provider": "p"}, hold=30)
        await asyncio.sleep(0)
        assert batcher.pipelines == 0
        publisher.send_chunks(b"a")
        await publisher.flush()

    frames = await frames_of(redis, action, 2)
    assert [(f.kind, f.seq, f.payload) for f in frames] == [(b"S", 0, b""), (b"C", 1, b"a")]
    assert batcher.pipelines == 1


async def test_a_held_start_goes_out_alone_when_no_content_comes(redis: GatedRedis) -> None:
    """Without content within the hold, the start goes out on its own (a slow upstream's start is still
    reported), and the chunks that come later in a publish of their own."""
    batcher = PublishBatcher(redis)
    publisher = FramePublisher(redis, CHANNEL, "req-1", batcher)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    publisher.start({"provider": "p"}, hold=0.01)
    assert (await next_frame(pubsub)).kind == events.START
    assert batcher.pipelines == 1
    publisher.send_chunks(b"a")
    assert (await next_frame(pubsub)).payload == b"a"
    assert batcher.pipelines == 2
    await pubsub.aclose()


async def test_a_final_frame_within_the_hold_carries_the_start_and_its_riders(redis: GatedRedis) -> None:
    """A job that ends within the hold publishes S and D in one round trip, the start's riders (built
    then) before the final frame's commands."""
    batcher = PublishBatcher(redis)
    publisher = FramePublisher(redis, CHANNEL, "req-1", batcher)
    publisher.attach_later(lambda: [(("RPUSH", "order", "start"), {})])

    async def action() -> None:
        publisher.start({"provider": "p"}, hold=30)
        await publisher.finish(events.DONE, {}, b"done", [(("RPUSH", "order", "final"), {})])

    frames = await frames_of(redis, action, 2)
    assert [(f.kind, f.seq) for f in frames] == [(b"S", 0), (b"D", 1)]
    assert batcher.pipelines == 1
    assert await redis.lrange("order", 0, -1) == [b"start", b"final"]


@pytest.mark.parametrize("batched", [False, True])
async def test_writes_after_the_answer_are_built_and_run_once_the_final_frame_landed(batched: bool) -> None:
    """finish(after=...) keeps rq's bookkeeping off the answer's path: the final frame's round trip
    carries only its own commands; the held start's riders and what ``after()`` builds are built once
    that frame landed and run then, in that order."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    batcher = PublishBatcher(redis) if batched else None
    publisher = FramePublisher(redis, CHANNEL, "req-13", batcher)
    built: list[tuple[str, int]] = []  # (what, frames published when it was built)

    def rider() -> list[Any]:
        built.append(("start", publisher.published))
        return [(("RPUSH", "order", "start"), {})]

    def after() -> list[Any]:
        built.append(("after", publisher.published))
        return [(("RPUSH", "order", "bookkeeping"), {})]

    publisher.attach_later(rider)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    publisher.start({"provider": "p"}, hold=30)
    await publisher.finish(events.DONE, {}, b"done", [(("RPUSH", "order", "final"), {})], after=after)
    frames = [await next_frame(pubsub), await next_frame(pubsub)]
    await pubsub.aclose()
    assert [(f.kind, f.seq) for f in frames] == [(b"S", 0), (b"D", 1)]
    assert built == [("start", 2), ("after", 2)]  # both frames were out before either was built
    assert await redis.lrange("order", 0, -1) == [b"final", b"start", b"bookkeeping"]
    if batcher is not None:
        assert batcher.pipelines == 2


async def test_a_write_after_the_answer_that_redis_refuses_is_not_retried() -> None:
    """A command of the writes after the answer that Redis refuses ends them at once (logged): the
    answer is out, nothing is raised, and they are not repeated for the publisher's patience."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    publisher = FramePublisher(redis, CHANNEL, "req-14")
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    calls = 0

    def after() -> list[Any]:
        nonlocal calls
        calls += 1
        return [(("INCR", "after-runs"), {}), (("HSET", "only-a-key"), {})]  # HSET without a field: refused

    await asyncio.wait_for(publisher.finish(events.DONE, {}, b"done", after=after), 5)
    assert (await next_frame(pubsub)).kind == events.DONE
    await pubsub.aclose()
    assert calls == 1 and await redis.get("after-runs") == b"1"


async def test_a_rider_that_fails_to_build_fails_the_job_instead_of_losing_its_frames() -> None:
    """A bug in building a rider stops the publish that carries it: the job's next call raises
    ServiceUnavailable (the frames after it would leave a gap at the ingress)."""
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    publisher = FramePublisher(redis, CHANNEL, "req-15")

    def broken() -> list[Any]:
        raise RuntimeError("a bug")

    publisher.attach_later(broken)
    publisher.start({})
    with pytest.raises(ServiceUnavailable):
        await publisher.flush()
    with pytest.raises(ServiceUnavailable):
        publisher.send_chunks(b"a")


async def test_an_abandoned_job_drops_its_held_start(redis: GatedRedis) -> None:
    """A job stopped during the hold publishes nothing: its timer is cancelled (the worker records the
    start with the job's failure instead)."""
    publisher = FramePublisher(redis, CHANNEL, "req-1")
    publisher.start({"provider": "p"}, hold=30)
    timer = publisher._hold_timer
    assert timer is not None
    publisher.abandon()
    assert timer.cancelled()
    await publisher.flush()
    assert publisher.published == 0
