"""The stream relay's silence timer: counts whole waits from the last frame's arrival, tells the relay
through its queue, at no cost per frame."""

from __future__ import annotations

import asyncio
import math

import pytest

from ingress.relay import SilenceTimer, silence_wait
from ingress.reply_hub import SILENCE, Subscription
from shared import events

WAIT = 0.05


async def test_each_wait_of_silence_is_told_once_until_taken() -> None:
    """With no frame, the relay finds SILENCE after one wait; the count grows while it does not take it,
    but only one SILENCE is queued; taking it gives the whole waits so far."""
    subscription = Subscription("r")
    timer = SilenceTimer(subscription, WAIT)
    try:
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE
        assert timer.take() == WAIT
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE  # the next wait of silence
        await asyncio.sleep(3 * WAIT)  # the relay is busy elsewhere for a few waits
        assert subscription.queue.empty()  # nothing more piled up meanwhile
        assert timer.take() >= 4 * WAIT
    finally:
        timer.cancel()


async def test_a_frame_arriving_starts_the_count_again() -> None:
    """A frame's arrival (the hub sets heard_at) resets the count: the next SILENCE comes one wait after
    that frame and says one wait, however long the relay took to notice."""
    subscription = Subscription("r")
    timer = SilenceTimer(subscription, WAIT)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE
        subscription.heard_at = loop.time()
        timer.take()
        heard = loop.time()
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE
        assert loop.time() - heard >= WAIT - 0.002  # loop time has millisecond resolution under uvloop
        assert timer.take() == WAIT
    finally:
        timer.cancel()


async def test_cancel_stops_the_timer() -> None:
    """After cancel nothing more is queued."""
    subscription = Subscription("r")
    timer = SilenceTimer(subscription, WAIT)
    timer.cancel()
    await asyncio.sleep(3 * WAIT)
    assert subscription.queue.empty()


async def test_a_frame_that_came_while_the_relay_was_busy_resets_what_it_is_told() -> None:
    """The relay, blocked on a slow client while its job was silent, takes a SILENCE queued long ago
    after a frame arrived: it is told no silence, not the count from before that frame."""
    subscription = Subscription("r")
    timer = SilenceTimer(subscription, WAIT)
    try:
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE
        timer.take()
        async with asyncio.timeout(5):
            assert await subscription.queue.get() is SILENCE  # the relay holds it while "busy"...
        subscription.heard_at = asyncio.get_running_loop().time()  # ...and a frame arrives meanwhile
        assert timer.take() == 0
    finally:
        timer.cancel()


def test_one_chunk_over_the_buffer_passes_when_nothing_else_waits() -> None:
    """A single C frame larger than the buffer limit is delivered when no other C bytes wait untaken,
    even with the relay's own SILENCE queued; a second one while the first waits interrupts."""
    subscription = Subscription("r", buffer_limit=10)
    subscription.queue.put_nowait(SILENCE)
    subscription.deliver(events.decode(events.encode(events.CHUNKS, "r", 0, None, b"x" * 20)))
    assert not subscription.too_slow
    subscription.deliver(events.decode(events.encode(events.CHUNKS, "r", 1, None, b"y")))
    assert subscription.too_slow


@pytest.mark.parametrize(
    ("ping_interval", "stall_after"),
    [(15.0, 62.5), (15.0, 120.0), (15.0, 10.0), (0.0, 62.5), (7.0, 7.0), (3.0, 7.2), (0.7, 9.1)],
)
def test_a_stall_is_a_whole_number_of_waits_each_no_longer_than_a_ping_interval(
    ping_interval: float, stall_after: float
) -> None:
    """The relay ends a stalled stream at a whole number of waits: each wait at most the ping interval,
    and the stall timeout a whole number of them (not rounded up to the next ping, up to 15 s late)."""
    wait = silence_wait(ping_interval, stall_after)
    if ping_interval > 0:
        assert wait <= ping_interval
    waits = math.ceil(stall_after / wait - 1e-9)  # the relay's count when it ends the stream
    assert waits * wait >= stall_after - 1e-6  # what the relay compares: it ends then, not a wait later
    assert (waits - 1) * wait < stall_after - 1e-6 and waits >= 1
