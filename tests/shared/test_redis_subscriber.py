"""The raw pub/sub subscriber the ingress' reply hub reads its channel with, against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from shared.redis_subscriber import subscribe
from tests.waiting import eventually


async def test_messages_arrive_in_order_once_subscribed(aredis_client: aredis.Redis) -> None:
    """subscribe() returns with the subscription in place (a publish right after is heard) and each
    message's data reaches the callback in publish order, other channels' not at all."""
    received: list[bytes] = []
    subscriber = await subscribe(aredis_client, "sub-test", received.append)
    try:
        assert await aredis_client.publish("sub-test", b"first") == 1
        await aredis_client.publish("elsewhere", b"not mine")
        for n in range(100):
            await aredis_client.publish("sub-test", b"m%d" % n)
        await eventually(lambda: len(received) == 101)
        assert received == [b"first", *(b"m%d" % n for n in range(100))]
    finally:
        subscriber.close()


async def test_a_failing_handler_does_not_end_the_subscription(aredis_client: aredis.Redis) -> None:
    """A handler that raises on one message still gets the next ones."""
    received: list[bytes] = []

    def handle(data: bytes) -> None:
        received.append(data)
        if data == b"boom":
            raise RuntimeError("a bug in the consumer")

    subscriber = await subscribe(aredis_client, "sub-test", handle)
    try:
        await aredis_client.publish("sub-test", b"boom")
        await aredis_client.publish("sub-test", b"after")
        await eventually(lambda: received == [b"boom", b"after"])
        assert not subscriber.closed.done()
    finally:
        subscriber.close()


async def test_a_connection_killed_by_redis_resolves_closed(aredis_client: aredis.Redis) -> None:
    """CLIENT KILL of the subscriber's connection (as a Redis restart or a Sentinel failover does)
    resolves ``closed``: its owner knows to subscribe again."""
    subscriber = await subscribe(aredis_client, "sub-test", lambda data: None)
    killed = 0
    for client in await aredis_client.client_list(_type="pubsub"):
        killed += await aredis_client.client_kill_filter(_id=client["id"])
    assert killed == 1
    await asyncio.wait_for(subscriber.closed, 10)


async def test_a_refused_handshake_raises_and_leaves_nothing(redis_url: str) -> None:
    """A handshake Redis refuses (here a database that does not exist) raises redis-py's ResponseError
    and leaves no subscriber behind."""
    client = aredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/99999")
    try:
        with pytest.raises(ResponseError):
            await subscribe(client, "sub-test", lambda data: None)
        plain = aredis.Redis.from_url(redis_url)
        try:
            assert await plain.pubsub_numsub("sub-test") == [(b"sub-test", 0)]
        finally:
            await plain.aclose()
    finally:
        await client.aclose()
