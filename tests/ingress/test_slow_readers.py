"""Slow or stalled stream readers: what waits for a client is bounded, and a client too far behind or
silent too long has its stream closed and its job cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

from ingress.reply_hub import Subscription
from shared import credits, events, keys
from tests.ingress.conftest import MESSAGES, MODEL, Ingress, IngressFactory, asgi_chat

STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}


def chunk(seq: int, size: int) -> events.Frame:
    return events.Frame(events.CHUNKS, "r1", seq, {}, b"x" * size)


async def test_chunks_piling_up_behind_a_blocked_relay_interrupt_it() -> None:
    """Past buffer_limit bytes waiting behind a relay that does not take them, the subscription drops
    them and cancels the relay."""
    subscription = Subscription("r1", buffer_limit=1000)
    subscription.relay_task = relay = asyncio.create_task(asyncio.Event().wait())
    for seq in range(3):
        subscription.deliver(chunk(seq, 400))
    assert subscription.too_slow and subscription.closed and subscription.queue.empty()
    await asyncio.gather(relay, return_exceptions=True)
    assert relay.cancelled()


async def test_one_large_frame_to_a_relay_that_keeps_up_is_no_overflow() -> None:
    """A frame larger than the limit reaching a relay that waits for it (nothing queued) is delivered."""
    subscription = Subscription("r1", buffer_limit=1000)
    subscription.deliver(chunk(0, 5000))
    assert not subscription.too_slow and subscription.queue.qsize() == 1


async def test_a_reader_that_takes_nothing_for_the_stall_timeout_is_interrupted(ingress: Ingress) -> None:
    """check_readers interrupts a stream whose relay took nothing for client_stall_timeout while bytes
    waited, and leaves one that keeps taking alone."""
    hub = ingress.app.state.ingress.hub
    stalled, reading = hub.register("stalled"), hub.register("reading")
    try:
        for subscription in (stalled, reading):
            subscription.relay_task = asyncio.create_task(asyncio.Event().wait())
            subscription.queued_bytes = 100
        timeout = ingress.settings.client_stall_timeout
        for _ in range(3):
            reading.taken_bytes += 10
            hub.check_readers(timeout / 2)
        assert stalled.too_slow and not reading.too_slow
    finally:
        for subscription in (stalled, reading):
            assert subscription.relay_task is not None
            subscription.relay_task.cancel()
            hub.unregister(subscription)


async def test_a_client_that_stops_reading_is_disconnected_and_its_job_cancelled(
    ingress_factory: IngressFactory,
) -> None:
    """A stream whose client stops reading (send blocks) ends once stream_buffer_bytes wait for it:
    the app returns and the job is cancelled, its credit hold left to the worker, which charges what
    the job produced, as when a client leaves mid-stream."""
    async with ingress_factory(stream_buffer_bytes=2000) as ingress:
        call = asgi_chat(ingress, STREAM_BODY)
        reading = asyncio.Event()
        reading.set()

        async def send(message: Any) -> None:
            call.sent.append(message)
            if message["type"] == "http.response.body":
                reading.clear()  # the first chunk fills the client's window: no read after it
                await reading.wait()

        call.send = send  # type: ignore[method-assign]
        running = asyncio.create_task(call.run())
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        for number in range(200):
            await ingress.worker.chunk(taken, f"word {number} " * 20)
            if running.done():
                break
        await asyncio.wait_for(running, 5)
        assert await ingress.redis.exists(keys.cancelled_marker(taken.id))
        assert (await credits.get_balance(ingress.redis, "acct-test")).reserved > 0  # the worker's to settle
