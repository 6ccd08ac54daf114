"""Jobs whose client left mid-run, on a real Redis: the worker charges what the upstream produced until
the cancel, gives back the counted tokens it did not use and records the usage once."""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio as aredis
from rq.job import Job, JobStatus

from ingress.control import accounts
from shared import credits, events, keys, usage
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.jobs import CompletionJob
from shared.serialization import OrjsonSerializer
from shared.settings import ModelEntry, Settings
from tests.store_calls import hold_credit
from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job

pytestmark = pytest.mark.redis

MODEL = ModelEntry(id="m/priced", deployments=(), input_price_per_m=2.0, output_price_per_m=4.0)
HOLD = 10_000
COUNTED = 1_000  # tokens the account's token limit counted at admission, of 1 ms each
MAX_TOKENS = 200


async def billed(
    client: aredis.Redis, settings: Settings, job: CompletionJob
) -> tuple[CompletionJob, JobBilling]:
    """``job`` with a credit hold of its own on a funded account ``acme``, as admission makes it."""
    await accounts.create_account(client, settings, account_id="acme", plan="developer")
    await credits.add_credit(client, "acme", 1_000_000)
    reservation = await hold_credit(client, settings, "acme", HOLD)
    billing = JobBilling.for_model(
        reservation, MODEL, admitted_at=time.time(), counted_tokens=COUNTED, token_interval_us=1_000
    )
    wire = {**job.to_wire(), "account_id": "acme", "extra": {EXTRA_KEY: billing.to_wire()}}
    return CompletionJob.from_wire(wire), billing


async def counted_ahead(client: aredis.Redis) -> int:
    """Set the account's token limit 10 s ahead of Redis' clock; that theoretical arrival time in µs."""
    seconds, _ = await client.time()
    start = (seconds + 10) * 1_000_000
    await client.set(keys.rate_limit("acme", "tokens"), str(start))
    return start


def status(client: redis.Redis, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=client, serializer=OrjsonSerializer).get_status()


async def test_a_job_whose_client_left_is_charged_the_tokens_it_produced(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A stream cancelled by its ingress (the client left after its start) is charged its prompt and the
    completion tokens produced until the cancel, at the quoted prices: more than the chunks seen, less
    than the whole answer; its hold is settled, the unused counted tokens given back, one usage record
    says client_closed, and rq records the job stopped."""
    settings = worker_settings(redis_url, tokens_per_second=40)
    job, billing = await billed(
        aredis_client,
        settings,
        completion_job(upstream_model="lorem", max_tokens=MAX_TOKENS, reply_to=REPLY_CHANNEL),
    )
    start = await counted_ahead(aredis_client)
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        for _ in range(3):
            await replies.until(lambda f: f.request_id == job.request_id and f.kind == events.CHUNKS)
        await aredis_client.set(keys.cancelled_marker(job.request_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
        await aredis_client.publish(keys.CANCEL_CHANNEL, job.request_id)
        [record] = await eventually(lambda: usage.recent_usage(aredis_client, "acme"))
        await eventually(lambda: status(clean_redis, job.request_id) == JobStatus.STOPPED)
    assert not any(f.is_final for f in replies.of(job.request_id))
    assert record.status == usage.CLIENT_CLOSED
    assert 3 <= record.completion_tokens < MAX_TOKENS
    assert record.prompt_tokens > 0
    cost = billing.cost(record.prompt_tokens, record.completion_tokens)
    balance = await credits.get_balance(aredis_client, "acme")
    assert (record.cost_micros, balance.spent, balance.reserved) == (cost, cost, 0)
    used = record.prompt_tokens + record.completion_tokens
    given_back = (start - int(await aredis_client.get(keys.rate_limit("acme", "tokens")) or 0)) // 1_000
    assert given_back == COUNTED - used


async def test_a_silent_job_whose_ingress_is_gone_is_released_not_charged(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, redis_url: str
) -> None:
    """A job whose ingress stops listening while its upstream is silent is stopped by the heartbeat and
    its hold released: nothing is charged, every counted token is given back, and its one usage record
    says ingress_gone."""
    settings = worker_settings(redis_url, tokens_per_second=1)  # a token a second: beats come between
    channel = keys.reply_channel(f"leaving-{time.monotonic_ns()}")
    job, _ = await billed(
        aredis_client,
        settings,
        completion_job(upstream_model="lorem", max_tokens=MAX_TOKENS, reply_to=channel),
    )
    start = await counted_ahead(aredis_client)
    listener = aredis_client.pubsub()
    await listener.subscribe(channel)
    try:
        async with running_worker(settings):
            await enqueue(aredis_client, job, settings)
            await eventually(lambda: status(clean_redis, job.request_id) == JobStatus.STARTED)
            await listener.unsubscribe(channel)
            [record] = await eventually(lambda: usage.recent_usage(aredis_client, "acme"))
    finally:
        await listener.aclose()
    assert (record.status, record.cost_micros) == ("ingress_gone", 0)
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved) == (0, 0)
    given_back = (start - int(await aredis_client.get(keys.rate_limit("acme", "tokens")) or 0)) // 1_000
    assert given_back == COUNTED
