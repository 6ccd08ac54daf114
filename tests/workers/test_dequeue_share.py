"""How much of a burst one worker takes: never more than ``worker_prefetch`` jobs it has not started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from shared import events, keys
from shared.jobs import CompletionJob, enqueue_commands
from shared.redis_commands import replay
from tests.workers.conftest import REPLY_CHANNEL, Replies, eventually, running_worker, worker_settings
from tests.workers.factories import completion_job

pytestmark = pytest.mark.redis

BURST = 40
PREFETCH = 4


async def enqueue_burst(client: aredis.Redis, jobs: list[CompletionJob], settings: Any) -> None:
    """Every job of the burst in one transaction: they land in the queue at the same moment."""
    async with client.pipeline(transaction=True) as pipe:
        for job in jobs:
            replay(
                pipe,
                enqueue_commands(
                    job,
                    job_timeout=settings.job_timeout,
                    result_ttl=settings.result_ttl,
                    failure_ttl=settings.failure_ttl,
                ),
            )
        await pipe.execute()


async def test_a_worker_that_cannot_start_jobs_holds_at_most_its_prefetch(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A worker with 64 free slots whose jobs cannot start (its loop is stuck, it is about to die) takes
    only PREFETCH jobs of a burst of 40; a second worker runs the other 36, and the first runs its own
    once it can."""
    settings = worker_settings(redis_url, worker_prefetch=PREFETCH)
    jobs = [completion_job(f"job {n}", reply_to=REPLY_CHANNEL) for n in range(BURST)]
    queue_key = keys.rq_queue_key("simulated")
    gate = asyncio.Event()
    async with running_worker(settings, concurrency=64) as stuck:
        start = stuck._start

        async def start_when_released(job_id: str, origin: str, reads: Any = None) -> Any:
            await gate.wait()
            return await start(job_id, origin, reads)

        stuck._start = start_when_released  # type: ignore[method-assign]
        await enqueue_burst(aredis_client, jobs, settings)
        await eventually(lambda: clean_redis.llen(queue_key) == BURST - PREFETCH)
        await asyncio.sleep(0.3)  # it had every chance to take more
        assert clean_redis.llen(queue_key) == BURST - PREFETCH
        async with running_worker(settings, concurrency=64) as other:
            finals = [f for f in replies.frames if f.is_final]
            while len(finals) < BURST - PREFETCH:
                frame = await replies.until(lambda f: f.is_final)
                finals.append(frame)
            gate.set()
            for job in jobs:
                assert (await replies.final(job.request_id)).kind == events.DONE
    workers = {f.request_id: f.meta["worker"] for f in replies.frames if f.kind == events.START}
    assert sorted(workers.values()).count(stuck.name) == PREFETCH
    assert sorted(workers.values()).count(other.name) == BURST - PREFETCH
