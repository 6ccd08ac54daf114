"""Run rq's own bookkeeping code without blocking an event loop.

rq's methods take a ``pipeline`` argument and only queue commands on it.  We hand them a
:func:`recording_pipeline` (a sync redis-py pipeline whose client refuses to connect), collect what rq
queued (:func:`recorded`), and replay it on an asyncio pipeline (:func:`shared.redis_commands.replay`):
one round trip, and the keys, fields and TTLs are exactly rq's, so ``rq info``, rq-dashboard and rq's
registry clean-up keep telling the truth.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.client import Pipeline

from shared.redis_commands import Command


class _NoConnectionPool(redis.ConnectionPool):
    """A pool that fails loudly if rq ever tries real I/O through a recording client."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a recording client must not talk to Redis; pass a pipeline to rq instead")


RECORDING_CLIENT = redis.Redis(connection_pool=_NoConnectionPool())
"""A sync client for rq objects that only ever record (it holds no connection and no state)."""


def recording_pipeline() -> Pipeline:
    return RECORDING_CLIENT.pipeline(transaction=False)


def recorded(pipeline: Pipeline) -> list[Command]:
    """The commands rq queued on a recording pipeline."""
    return [(tuple(args), dict(options)) for args, options in pipeline.command_stack]
