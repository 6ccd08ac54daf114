"""Requests to stop a job, or the whole worker, as they reach a worker process.

Two sources share one pub/sub connection: the ingress' cancel broadcast (:data:`shared.keys.CANCEL_CHANNEL`,
payload = the job id, sent when the client went away) and rq's own worker channel (``rq:pubsub:<name>``,
JSON commands: ``stop-job``/``stop-execution`` with a ``job_id``, and ``shutdown``), so that
``rq.command.send_stop_job_command`` and ``send_shutdown_command`` work on an AsyncWorker too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared import keys

log = logging.getLogger(__name__)

_RESUBSCRIBE_PAUSE = 1.0


@dataclass(frozen=True, slots=True)
class StopRequest:
    job_id: str | None  # None: stop the worker (warm shutdown)


def parse(channel: bytes | str, data: bytes | str) -> StopRequest | None:
    """The request a pub/sub message carries, or None if it is not one."""
    channel = channel.decode() if isinstance(channel, bytes) else channel
    text = data.decode() if isinstance(data, bytes) else data
    if channel == keys.CANCEL_CHANNEL:
        return StopRequest(text) if text else None
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(command, dict):
        return None
    if command.get("command") == "shutdown":
        return StopRequest(None)
    if command.get("command") in ("stop-job", "stop-execution") and command.get("job_id"):
        return StopRequest(str(command["job_id"]))
    return None


async def listen(
    redis: aredis.Redis,
    worker_channel: str,
    on_request: Callable[[StopRequest], None],
    on_resubscribed: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Deliver every stop request until cancelled, resubscribing after a lost connection.  A cancel
    published while the subscription was down is lost to it: ``on_resubscribed`` runs once it is back
    (the worker reads its running jobs' cancel markers then, which the ingress sets with each cancel)."""
    lost = False
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.CANCEL_CHANNEL, worker_channel)
            if lost and on_resubscribed is not None:
                lost = False
                await on_resubscribed()
            async for message in pubsub.listen():
                request = parse(message["channel"], message["data"])
                if request is not None:
                    on_request(request)
        except (RedisError, OSError):
            lost = True
            log.warning("stop-request subscription lost; resubscribing", exc_info=True)
            await asyncio.sleep(_RESUBSCRIBE_PAUSE)
        finally:
            await pubsub.aclose()
