"""Stopping a background task for sure, within a bound.

A cancel can fail to stop a loop that talks to Redis.  On Python 3.11 redis-py loses a cancel that lands
as a command completes (``asyncio.wait_for`` there returns the finished result and drops the cancel: in
a loop of back-to-back commands, about half of all cancels), and a loop that catches ``RedisError`` to
survive outages also survives a cancel surfaced as one.  Either way the loop goes round again, never
sees another cancel, and whoever awaits it waits forever: an ingress that never finishes shutting down.
:func:`stop_task` cancels again each time the task survives a cancel, and gives up (logging) after
``grace`` seconds, so shutdown always ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

log = logging.getLogger(__name__)

STOP_GRACE: Final = 5.0  # seconds a task gets to end before shutdown goes on without it
_RECANCEL_EVERY: Final = 0.05  # a task still running this long after a cancel is cancelled again


async def stop_task(task: asyncio.Task[Any], *, grace: float = STOP_GRACE) -> bool:
    """Cancel ``task`` until it ends, for at most ``grace`` seconds; whether it ended.  An error it
    ended with is logged, not raised: shutdown goes on."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("task %s survived cancellation for %.1fs; shutting down without it", task, grace)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL_EVERY, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed while stopping", task.get_name(), exc_info=task.exception())
    return True
