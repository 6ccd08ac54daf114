"""Clean-ups a Redis outage held up: a credit hold and a cancel that failed are done once Redis answers."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import pytest

from ingress.deferred_cleanup import DeferredCleanup
from shared import credits, keys
from shared.job_billing import JobBilling
from shared.settings import ModelEntry, Settings
from tests.store_calls import hold_credit

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


async def test_the_background_task_releases_and_cancels_within_a_retry(server: fakeredis.FakeServer) -> None:
    """The running task retries every retry interval: a hold and a cancel deferred during an outage are
    done within a retry of Redis coming back, with no request needed to trigger it."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    billing = await held_billing(redis, 300)
    cleanup = DeferredCleanup(redis, retry_every=0.05)
    task = asyncio.create_task(cleanup.run())
    server.connected = False
    cleanup.release_later(billing)
    cleanup.cancel_later("job-1")
    await asyncio.sleep(0.2)
    assert cleanup.pending == 2
    server.connected = True
    await asyncio.wait_for(cleanup.drained.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await credits.get_balance(redis, "acct")).reserved == 0
    assert await redis.exists(keys.cancelled_marker("job-1"))
