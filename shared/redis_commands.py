"""Redis commands built now and sent later, together with others in one pipeline.

A :data:`Command` is the arguments and options of one ``execute_command`` call: what rq's bookkeeping
queued on a recording pipeline (:mod:`shared.rq_bridge`), a script call as ``EVAL``
(:meth:`shared.lua.ScriptCall.command`), or a usage record's writes.  :func:`replay` queues them on an
asyncio pipeline, so that a job's final frame and every write that must land with it go in one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis.asyncio as aredis

Command = tuple[tuple[Any, ...], dict[str, Any]]


def replay(target: aredis.client.Pipeline, commands: Iterable[Command]) -> None:
    """Queue commands on an asyncio pipeline (the caller executes it)."""
    for args, options in commands:
        target.execute_command(*args, **options)
