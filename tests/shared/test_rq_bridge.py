"""Recording rq's commands on a connection-less pipeline and replaying them on asyncio Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from shared.redis_commands import replay
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from tests.store_calls import command_names


def test_recording_client_refuses_io() -> None:
    """A recording client never talks to Redis: a direct command fails loudly."""
    with pytest.raises(RuntimeError, match="recording client"):
        RECORDING_CLIENT.get("anything")


def test_recorded_commands_keep_order_and_arguments() -> None:
    """What was queued on a recording pipeline comes back in order with its arguments and options."""
    pipe = recording_pipeline()
    pipe.hset("h", mapping={"a": "1"})
    pipe.expire("h", 30)
    pipe.rpush("l", "x")
    commands = recorded(pipe)
    assert command_names(commands) == ["HSET", "EXPIRE", "RPUSH"]
    assert commands[2][0] == ("RPUSH", "l", "x")


async def test_replay_runs_the_commands(aredis_client: aredis.Redis) -> None:
    """Replayed on an asyncio pipeline, recorded commands take effect with their TTLs, in one round trip."""
    pipe = recording_pipeline()
    pipe.hset("h", mapping={"a": "1"})
    pipe.expire("h", 30)
    pipe.rpush("l", "x", "y")
    async with aredis_client.pipeline(transaction=True) as target:
        replay(target, recorded(pipe))
        await target.execute()
    assert await aredis_client.hgetall("h") == {b"a": b"1"}
    assert 0 < await aredis_client.ttl("h") <= 30
    assert await aredis_client.lrange("l", 0, -1) == [b"x", b"y"]
