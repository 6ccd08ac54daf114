"""A worker on a real Redis gives way when its event loop is busy: its batch lane holds fewer lines while
interactive jobs run, and its dequeue loop stops taking jobs while the loop is saturated."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
import redis.asyncio as aredis

from shared import events, keys
from shared.jobs import enqueue_commands
from shared.redis_commands import replay
from shared.settings import Settings
from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job
from workers.batch_lane import BatchLane

pytestmark = pytest.mark.redis

LANE = keys.batch_lane("simulated")


class LoopHog:
    """Blocks the running loop for ``block`` seconds every ``every`` seconds, as heavy jobs would."""

    def __init__(self, block: float, every: float) -> None:
        self._block, self._every = block, every
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._every, self._hog)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _hog(self) -> None:
        time.sleep(self._block)
        self._timer = asyncio.get_running_loop().call_later(self._every, self._hog)


async def _enqueue_lines(client: aredis.Redis, settings: Settings, count: int) -> None:
    for _ in range(count):
        job = completion_job(upstream_model="lorem", max_tokens=100, reply_to=REPLY_CHANNEL)
        commands = enqueue_commands(job, job_timeout=60, result_ttl=60, failure_ttl=60, queue=LANE)
        async with client.pipeline(transaction=True) as pipe:
            replay(pipe, commands)
            await pipe.execute()


@pytest.mark.parametrize("interactive", [True, False])
async def test_a_lagging_worker_holds_fewer_batch_lines_while_interactive_jobs_run(
    redis_url: str, aredis_client: aredis.Redis, replies: Replies, interactive: bool
) -> None:
    """With its loop lagging, a worker running an interactive job holds its lane's floor of one batch
    line; without interactive jobs the same worker takes every line it has room for."""
    base = worker_settings(redis_url, tokens_per_second=5, worker_saturated_lag=0)
    settings = replace(
        base, batches=replace(base.batches, yield_lag=0.001, yield_floor=1, interactive_grace=60)
    )
    hog = LoopHog(block=0.02, every=0.01)
    async with running_worker(settings, concurrency=16, shutdown_grace=0.5) as worker:
        hog.start()
        try:
            lane = await eventually(lambda: worker.batch_lane)  # set a few awaits after the worker registers
            assert isinstance(lane, BatchLane)
            if interactive:
                chat = completion_job(upstream_model="lorem", max_tokens=100, reply_to=REPLY_CHANNEL)
                await enqueue(aredis_client, chat, settings)
                await replies.until(lambda frame: frame.request_id == chat.request_id)
                await eventually(lambda: lane.throttle.limit == 1)
            await _enqueue_lines(aredis_client, settings, 10)
            if interactive:
                await eventually(lambda: lane.in_flight == 1)
                await asyncio.sleep(0.5)  # several rounds of the lane: it must take nothing more
                assert lane.in_flight == 1
                assert await aredis_client.llen(keys.rq_queue_key(LANE)) == 9
            else:
                await eventually(lambda: lane.in_flight == 10)
        finally:
            hog.stop()


async def test_a_saturated_worker_stops_dequeuing_and_resumes_when_its_loop_recovers(
    redis_url: str, aredis_client: aredis.Redis, replies: Replies
) -> None:
    """While a callback hogs the loop past worker_saturated_lag, a queued job stays queued; once the hog
    stops, the worker takes and answers it."""
    settings = worker_settings(redis_url, worker_saturated_lag=0.04)
    hog = LoopHog(block=0.1, every=0.05)
    async with running_worker(settings, concurrency=8) as worker:
        hog.start()
        try:
            await eventually(lambda: worker.loop_guard.saturated)
            job = completion_job(reply_to=REPLY_CHANNEL)
            await enqueue(aredis_client, job, settings)
            await asyncio.sleep(0.5)  # several rounds of the dequeue loop: it must not take the job
            assert await aredis_client.llen(keys.rq_queue_key("simulated")) == 1
        finally:
            hog.stop()
        final = await replies.final(job.request_id)
        assert final.kind == events.DONE
        assert not worker.loop_guard.saturated
