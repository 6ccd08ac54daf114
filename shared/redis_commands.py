"""Redis commands built now and sent later, together with others in one pipeline.

A :data:`Command` is the arguments and options of one ``execute_command`` call: what rq's bookkeeping
queued on a recording pipeline (:mod:`shared.rq_bridge`), a script call as ``EVAL``
(:meth:`shared.lua.ScriptCall.command`), or a usage record's writes.  :func:`replay` queues them on an
asyncio pipeline, so that a job's final frame and every write that must land with it go in one round trip;
:func:`run_commands` runs them so, the cheapest way the client allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared.autopipeline import AutoPipelineRedis

Command = tuple[tuple[Any, ...], dict[str, Any]]


def replay(target: aredis.client.Pipeline, commands: Iterable[Command]) -> None:
    """Queue commands on an asyncio pipeline (the caller executes it)."""
    for args, options in commands:
        target.execute_command(*args, **options)


async def run_commands(
    redis: aredis.Redis,
    commands: Sequence[Command],
    *,
    raise_on_error: bool = True,
    transaction: bool = False,
) -> list[Any]:
    """Run ``commands`` in one round trip; their replies, without redis-py's response callbacks on the
    auto-pipelined connection (hiredis' types: bytes, ints, lists, RESP3 maps as dicts) and redis-py's on
    another client (the same shapes for the commands callers read).  A command Redis refused raises its
    error, or with ``raise_on_error=False`` stands in its place.  With ``transaction`` they run in
    ``MULTI``…``EXEC``: all or none of them (a command Redis refuses to queue raises, and none run)."""
    if isinstance(redis, AutoPipelineRedis):
        replies = await redis.execute_raw(commands, transaction=transaction)
        if raise_on_error:
            error = next((reply for reply in replies if isinstance(reply, RedisError)), None)
            if error is not None:
                raise error
        return replies
    async with redis.pipeline(transaction=transaction) as pipe:
        replay(pipe, commands)
        return list(await pipe.execute(raise_on_error=raise_on_error))
