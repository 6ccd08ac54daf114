"""The reply hub stops on shutdown even when redis-py turns the cancel of its reader into a connection
error (which the reader otherwise treats as an outage: it reconnects and listens again, forever)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError

from ingress.reply_hub import ReplyHub


def read_until_cancelled_then_fail(entered: asyncio.Event) -> Callable[..., Awaitable[Any]]:
    """A pub/sub read that sets ``entered``, blocks until cancelled, then raises a Redis error instead of
    the cancel."""

    async def read(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    return read


async def test_stop_ends_when_the_cancel_surfaces_as_a_redis_error(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() returns within seconds and the reader is done, though its cancel became a RedisError."""
    hub = ReplyHub(aredis_client, "shutdown-test")
    await hub.start()
    pubsub = hub._pubsub  # the read redis-py makes is what this test replaces
    in_patched_read = asyncio.Event()
    monkeypatch.setattr(pubsub, "parse_response", read_until_cancelled_then_fail(in_patched_read))
    await aredis_client.publish(hub.channel, b"wake the reader so it reads again")
    await asyncio.wait_for(in_patched_read.wait(), 10)
    async with asyncio.timeout(10):
        await hub.stop()
    assert hub._reader is not None and hub._reader.done()
