"""Clean-ups a Redis outage held up: a credit hold and an abandon that failed are done once Redis answers;
once the ingress' shutdown hurries, a request waits for its clean-up a bounded time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import cast

import fakeredis
import pytest
import redis.asyncio as aredis
from redis.exceptions import RedisError
from rq.job import Job

from ingress import deferred_cleanup
from ingress import relay as relay_module
from ingress.admission import Admitted
from ingress.context import IngressContext
from ingress.deferred_cleanup import DeferredCleanup
from ingress.relay import CompletionRelay
from ingress.reply_hub import Subscription
from shared import credits, keys
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.ratelimit import RateLimitDecision
from shared.settings import ModelEntry, Settings
from tests.ingress.test_job_control import completion_job
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


async def test_a_clean_up_waiting_before_the_hurry_holds_its_request_at_most_the_hurried_wait_after_it(
    server: fakeredis.FakeServer,
) -> None:
    """A clean-up that began before the hurry and waits on a Redis that never answers is cut short
    HURRIED_WAIT after the hurry (cancelled where it waits), and the request goes on to its answer."""
    cleanup = DeferredCleanup(fakeredis.aioredis.FakeRedis(server=server))
    waiting_on_redis = asyncio.Event()
    cut_short = asyncio.Event()

    async def clean_up() -> None:
        waiting_on_redis.set()
        try:
            await asyncio.Event().wait()  # Redis frozen: no reply ever comes
        except asyncio.CancelledError:
            cut_short.set()
            raise

    request = asyncio.ensure_future(cleanup.bounded(clean_up()))
    await waiting_on_redis.wait()
    cleanup.hurry()
    hurried = time.monotonic()
    await asyncio.wait_for(request, deferred_cleanup.HURRIED_WAIT * 3)
    assert cut_short.is_set() and not request.cancelled()
    assert time.monotonic() - hurried >= deferred_cleanup.HURRIED_WAIT * 0.9  # as a clean-up begun then


async def test_a_cancel_other_than_the_hurry_still_cancels_a_request_waiting_for_its_clean_up(
    server: fakeredis.FakeServer,
) -> None:
    """Only the hurry's cancel is taken back: a request cancelled by anything else (uvicorn, at its own
    shutdown timeout) while it waits for its clean-up is cancelled."""
    cleanup = DeferredCleanup(fakeredis.aioredis.FakeRedis(server=server))
    waiting_on_redis = asyncio.Event()

    async def clean_up() -> None:
        waiting_on_redis.set()
        await asyncio.Event().wait()

    request = asyncio.ensure_future(cleanup.bounded(clean_up()))
    await waiting_on_redis.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


@dataclass
class FrozenRedis:
    """A server that accepts connections and never answers, as a SIGSTOPped Redis does."""

    url: str = ""
    heard: int = 0  # connections it has read a command from
    ended: int = 0  # connections their client closed


@pytest.fixture
async def frozen_redis() -> AsyncIterator[FrozenRedis]:
    frozen = FrozenRedis()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await reader.read(65536):
            frozen.heard += 1
            while await reader.read(65536):
                pass
        writer.close()
        frozen.ended += 1

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    frozen.url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    try:
        yield frozen
    finally:
        server.close()
        await eventually(lambda: frozen.ended == frozen.heard)  # each client closed its connection
        await server.wait_closed()


async def test_a_release_and_an_abandon_the_hurry_cut_short_wait_in_the_backlog(
    server: fakeredis.FakeServer, frozen_redis: FrozenRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Two requests, one abandoning its started job and one releasing its credit hold, both waiting on a
    frozen Redis when the shutdown hurries: both go on to their answers HURRIED_WAIT later, and the cancel
    and the release they had not done wait in the backlog for Redis to answer again."""
    billing = await held_billing(fakeredis.FakeAsyncRedis(server=server), 400)
    redis = aredis.Redis.from_url(frozen_redis.url)
    cleanup = DeferredCleanup(redis)
    relay = CompletionRelay(
        redis, SETTINGS, Subscription("job-1"), completion_job("job-1"), decision="d", cleanup=cleanup
    )
    relay.enqueued_ahead(1)
    relay.started = True
    decision = RateLimitDecision(allowed=True, plan="p", limit=1, remaining=0, reset_seconds=60)
    context = cast(IngressContext, SimpleNamespace(redis=redis, cleanup=cleanup))
    try:
        requests = [
            asyncio.ensure_future(cleanup.bounded(relay.abandon_if_unfinished())),
            asyncio.ensure_future(cleanup.bounded(Admitted(decision, billing).close(context))),
        ]
        await eventually(lambda: frozen_redis.heard == 2)  # each waits for its first reply
        cleanup.hurry()
        with caplog.at_level(logging.WARNING, logger=deferred_cleanup.__name__):
            await asyncio.wait_for(asyncio.gather(*requests), deferred_cleanup.HURRIED_WAIT * 3)
        assert cleanup.pending == 2
        assert "could not abandon job job-1" in caplog.text
        assert f"could not release credit hold {billing.reservation.id}" in caplog.text
    finally:
        await redis.aclose()


async def test_a_release_that_waits_for_redis_holds_back_the_job_s_stop_behind_it(
    server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that ends for a reason of ours while its release fails stops its job only after the
    release: a worker told first would take the hold as left to it and charge a client that left."""
    redis = fakeredis.FakeAsyncRedis(server=server)
    billing = await held_billing(redis, 400)
    cleanup = DeferredCleanup(redis)
    job = replace(completion_job("job-1"), extra={EXTRA_KEY: billing.to_wire()})
    relay = CompletionRelay(redis, SETTINGS, Subscription("job-1"), job, decision="d", cleanup=cleanup)
    relay.enqueued_ahead(1)
    relay.started = True
    real_release = relay_module.release_hold

    async def refused(*args: object) -> None:
        raise RedisError("connection lost")

    monkeypatch.setattr(relay_module, "release_hold", refused)
    await relay.abandon_if_unfinished()
    assert relay.hold_settled and cleanup.pending == 2  # the release, and the cancel behind it
    assert not await redis.exists(keys.cancelled_marker("job-1"))
    monkeypatch.setattr(relay_module, "release_hold", real_release)
    assert await cleanup.flush() == 2
    assert (await credits.get_balance(redis, "acct")).reserved == 0
    assert await redis.exists(keys.cancelled_marker("job-1"))
