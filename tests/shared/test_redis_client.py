"""The hot path's asyncio Redis client: hiredis packing and the blocking pool."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio.connection import Connection
from rq.job import JobStatus

from shared.redis_client import HiredisPackingConnection, async_client

COMMANDS = [
    ("HSET", "rq:job:x", "status", JobStatus.FINISHED, "n", 5, "f", 1.25, "b", b"\x00\xff", "u", "é"),
    ("CLIENT SETNAME", "worker-1"),
    ("PUBLISH", "channel", memoryview(b"frame")),
    ("ZADD", "k", 1795438923.1512442, "member"),
    ("EVAL", "return 1", 0),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: str(args[0]))
def test_hiredis_packs_what_redis_py_packs(args: tuple[object, ...]) -> None:
    """Every kind of argument the code sends is packed byte for byte as redis-py packs it."""
    ours = b"".join(bytes(part) for part in HiredisPackingConnection().pack_command(*args))
    theirs = b"".join(bytes(part) for part in Connection().pack_command(*args))
    assert ours == theirs


def test_arguments_hiredis_refuses_get_redis_py_errors() -> None:
    """A bool is refused as redis-py refuses it, not sent as something else."""
    with pytest.raises(redis.DataError):
        HiredisPackingConnection().pack_command("SET", "k", True)


async def test_commands_pipelines_and_pubsub_work(clean_redis: redis.Redis, redis_url: str) -> None:
    """Plain commands, a pipeline and a pub/sub round trip go through the packing connection."""
    client = async_client(redis_url, max_connections=4)
    try:
        connection = await client.connection_pool.get_connection()
        assert isinstance(connection, HiredisPackingConnection)
        await client.connection_pool.release(connection)
        await client.hset("h", mapping={"status": JobStatus.QUEUED, "n": 3})
        async with client.pipeline(transaction=False) as pipe:
            pipe.hgetall("h")
            pipe.incrbyfloat("f", 0.5)
            assert await pipe.execute() == [{b"status": b"queued", b"n": b"3"}, 0.5]
        pubsub = client.pubsub()
        await pubsub.subscribe("ch")
        await client.publish("ch", b"hello")
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
        assert message is not None and message["data"] == b"hello"
        await pubsub.aclose()
    finally:
        await client.aclose()


async def test_pool_makes_callers_wait_instead_of_failing(clean_redis: redis.Redis, redis_url: str) -> None:
    """More concurrent commands than connections all succeed: callers wait for a free connection."""
    client = async_client(redis_url, max_connections=2, timeout=5)
    try:
        replies = await asyncio.gather(*(client.incr("counter") for _ in range(50)))
        assert sorted(replies) == list(range(1, 51))
    finally:
        await client.aclose()
