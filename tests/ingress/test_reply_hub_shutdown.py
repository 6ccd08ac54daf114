"""The reply hub stops at once on shutdown: its reader is done and its channel's connection closed, and
it does not subscribe again."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from ingress.reply_hub import ReplyHub
from tests.waiting import eventually


async def test_stop_ends_the_reader_and_the_subscription(aredis_client: aredis.Redis) -> None:
    """stop() returns within seconds; the reader is done and the channel has no subscriber left."""
    hub = ReplyHub(aredis_client, "shutdown-test")
    await hub.start()
    assert await aredis_client.pubsub_numsub(hub.channel) == [(hub.channel.encode(), 1)]
    async with asyncio.timeout(10):
        await hub.stop()
    assert hub._reader is not None and hub._reader.done()

    async def unsubscribed() -> bool:
        return await aredis_client.pubsub_numsub(hub.channel) == [(hub.channel.encode(), 0)]

    await eventually(unsubscribed)
