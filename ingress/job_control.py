"""What the ingress does to a job in Redis: enqueue it, withdraw it from its queue, or cancel it.

Redis errors become :class:`~shared.errors.ServiceUnavailable` here, where they enter our code.
"""

from __future__ import annotations

import logging
from typing import Final

import redis.asyncio as aredis
from redis.exceptions import RedisError
from rq.job import Job

from shared import keys
from shared.errors import ServiceUnavailable
from shared.jobs import CompletionJob, enqueue_commands
from shared.lua import LuaScript
from shared.redis_commands import Command, replay
from shared.settings import Settings

log = logging.getLogger(__name__)


def completion_enqueue_commands(job: CompletionJob, settings: Settings) -> list[Command]:
    """The commands that put ``job`` on its pool's rq queue; the last one, the ``RPUSH``, answers the
    queue's length with it."""
    return enqueue_commands(
        job,
        job_timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
    )


async def enqueue_completion(redis: aredis.Redis, job: CompletionJob, settings: Settings) -> int:
    """Put ``job`` on its pool's rq queue, in one round trip; the queue's length with it (the reply of
    the ``RPUSH``, the last command), which tells whether the queue was already full."""
    commands = completion_enqueue_commands(job, settings)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            replay(pipe, commands)
            replies = await pipe.execute()
    except RedisError as exc:
        raise ServiceUnavailable("The request queue is unreachable; retry shortly.") from exc
    return int(replies[-1])


WITHDRAW: Final = LuaScript.load("job_withdraw")


async def withdraw(redis: aredis.Redis, pool: str, job_id: str) -> bool:
    """Take a job that no worker picked up off its queue and delete its record, in one step; False if a
    worker has it."""
    try:
        removed = await WITHDRAW(redis, [keys.rq_queue_key(pool), Job.key_for(job_id)], [job_id])
    except RedisError as exc:
        raise ServiceUnavailable("The request queue is unreachable; retry shortly.") from exc
    return bool(removed)


async def cancel(redis: aredis.Redis, job_id: str) -> None:
    """Tell the worker running ``job_id`` to stop, and any worker that dequeues it later to drop it."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.cancelled_marker(job_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
            pipe.publish(keys.CANCEL_CHANNEL, job_id)
            await pipe.execute()
    except RedisError as exc:
        raise ServiceUnavailable("The request queue is unreachable.") from exc


async def abandon(redis: aredis.Redis, pool: str, job_id: str, *, started: bool) -> bool:
    """Nobody will read this job's result any more: :func:`withdraw_or_cancel` it; False when Redis could
    not be reached (the job may run to completion unread unless abandoned later)."""
    try:
        await withdraw_or_cancel(redis, pool, job_id, started=started)
    except ServiceUnavailable:
        log.warning("could not abandon job %s", job_id, exc_info=True)
        return False
    return True


async def withdraw_or_cancel(redis: aredis.Redis, pool: str, job_id: str, *, started: bool) -> None:
    """Withdraw the job if it is still queued (its record, body included, deleted), else cancel it.
    Raises :class:`~shared.errors.ServiceUnavailable`."""
    if not started and await withdraw(redis, pool, job_id):
        return
    await cancel(redis, job_id)
