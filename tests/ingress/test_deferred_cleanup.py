"""Clean-ups a Redis outage held up: a credit hold and an abandon that failed are done once Redis answers."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import pytest
from rq.job import Job

from ingress import deferred_cleanup
from ingress.deferred_cleanup import DeferredCleanup
from shared import credits, keys
from shared.job_billing import JobBilling
from shared.settings import ModelEntry, Settings
from tests.store_calls import hold_credit
from tests.waiting import eventually

SETTINGS = Settings()
MODEL = ModelEntry(id="m", deployments=(), input_price_per_m=1.0, output_price_per_m=1.0)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


async def held_billing(redis: fakeredis.FakeAsyncRedis, amount: int) -> JobBilling:
    await redis.hset(keys.credit_balance("acct"), "balance", 1_000)
    reservation = await hold_credit(redis, SETTINGS, "acct", amount)
    return JobBilling.for_model(reservation, MODEL, admitted_at=time.time())


async def test_a_release_that_failed_is_done_once_redis_answers(server: fakeredis.FakeServer) -> None:
    """A release refused by an unreachable Redis stays pending, and is done by the first flush after
    Redis answers again."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    cleanup = DeferredCleanup(redis)
    cleanup.release_later(await held_billing(redis, 400))
    server.connected = False
    assert await cleanup.flush() == 0 and cleanup.pending == 1
    server.connected = True
    assert await cleanup.flush() == 1 and cleanup.pending == 0
    assert (await credits.get_balance(redis, "acct")).reserved == 0


async def test_the_background_task_releases_and_abandons_within_a_retry(server: fakeredis.FakeServer) -> None:
    """The running task retries every retry interval: a hold and a cancel deferred during an outage are
    done within a retry of Redis coming back, with no request needed to trigger it."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    billing = await held_billing(redis, 300)
    cleanup = DeferredCleanup(redis, retry_every=0.05)
    task = asyncio.create_task(cleanup.run())
    server.connected = False
    cleanup.release_later(billing)
    cleanup.abandon_later("simulated", "job-1", started=True)
    await asyncio.sleep(0.2)
    assert cleanup.pending == 2
    server.connected = True
    await asyncio.wait_for(cleanup.drained.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await credits.get_balance(redis, "acct")).reserved == 0
    assert await redis.exists(keys.cancelled_marker("job-1"))


async def test_a_job_still_queued_when_redis_answers_again_is_withdrawn_not_left_to_run(
    server: fakeredis.FakeServer,
) -> None:
    """A request failed during an outage while its job waited in its queue: once Redis answers, the job
    leaves the queue and its record (the request's body) is deleted, rather than only marked cancelled
    (a marker expires; a queued job has no TTL and would run for nobody)."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    queue, record = keys.rq_queue_key("simulated"), Job.key_for("job-2")
    await redis.rpush(queue, "other", "job-2")
    await redis.hset(record, "data", "x" * 1000)
    cleanup = DeferredCleanup(redis)
    server.connected = False
    cleanup.abandon_later("simulated", "job-2", started=False)
    assert await cleanup.flush() == 0
    server.connected = True
    assert await cleanup.flush() == 1
    assert await redis.lrange(queue, 0, -1) == [b"other"]
    assert not await redis.exists(record)
    assert not await redis.exists(keys.cancelled_marker("job-2"))


async def test_a_hurried_request_waits_for_its_clean_up_at_most_the_hurried_wait(
    server: fakeredis.FakeServer,
) -> None:
    """Before the shutdown ends open requests a clean-up is awaited to its end; after it (Redis may be
    frozen) the request stops waiting after HURRIED_WAIT and the clean-up goes on behind its answer."""
    cleanup = DeferredCleanup(fakeredis.aioredis.FakeRedis(server=server))
    redis_answers = asyncio.Event()
    done: list[str] = []

    async def clean_up(name: str) -> None:
        await redis_answers.wait()
        done.append(name)

    waiting = asyncio.ensure_future(cleanup.bounded(clean_up("before")))
    await asyncio.sleep(deferred_cleanup.HURRIED_WAIT * 1.5)
    assert not waiting.done()  # not hurried: the request waits for its clean-up
    redis_answers.set()
    await waiting
    redis_answers.clear()
    cleanup.hurry()
    started = time.monotonic()
    await cleanup.bounded(clean_up("hurried"))
    assert time.monotonic() - started < deferred_cleanup.HURRIED_WAIT * 3 and done == ["before"]
    redis_answers.set()
    await eventually(lambda: done == ["before", "hurried"])  # it went on behind the answer
