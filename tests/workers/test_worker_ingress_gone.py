"""Queued jobs of an ingress that is gone: dropped as the worker takes them, before any upstream call."""

from __future__ import annotations

import os
import time

import pytest
import redis
import redis.asyncio as aredis
from rq.job import Job, JobStatus

from bench.upstream import Upstream
from ingress.control import accounts
from shared import credits, events, keys, usage
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.jobs import CompletionJob
from shared.serialization import OrjsonSerializer
from shared.settings import ModelEntry, ProviderSettings, settings_from_mapping
from tests.store_calls import hold_credit
from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job

pytestmark = pytest.mark.redis

GONE_CHANNEL = keys.reply_channel(f"gone-{os.getpid()}")  # an ingress killed with its jobs queued
MODEL = ModelEntry(id="m/priced", deployments=(), input_price_per_m=2.0, output_price_per_m=4.0)
HOLD = 10_000
ENDED = (JobStatus.FINISHED, JobStatus.FAILED)
QUEUED = 6  # more than the worker's slots: some are taken in a batch behind the first


async def billed(client: aredis.Redis, job: CompletionJob) -> CompletionJob:
    """``job`` with a credit hold of its own on account ``acme``, as admission makes it."""
    reservation = await hold_credit(client, settings_from_mapping({}, env={}), "acme", HOLD)
    billing = JobBilling.for_model(reservation, MODEL, admitted_at=time.time())
    return CompletionJob.from_wire(
        {**job.to_wire(), "account_id": "acme", "extra": {EXTRA_KEY: billing.to_wire()}}
    )


def status(client: redis.Redis, job_id: str) -> JobStatus | None:
    return Job.fetch(job_id, connection=client, serializer=OrjsonSerializer).get_status()


async def test_a_queued_job_whose_ingress_is_gone_never_calls_the_upstream(
    clean_redis: redis.Redis,
    aredis_client: aredis.Redis,
    replies: Replies,
    redis_url: str,
    upstream: Upstream,
) -> None:
    """Jobs queued for a reply channel nobody subscribes to (JSON ones, whose answer would be their first
    publish) are failed as taken, no upstream call made, their holds released and nothing charged,
    the channel noted; a job of a listening ingress, queued behind them, runs."""
    provider = ProviderSettings(name="simulated", kind="openai", base_url=upstream.base_url, api_key="sk")
    settings = worker_settings(redis_url, providers={"simulated": provider}, worker_prefetch=4)
    await accounts.create_account(aredis_client, settings, account_id="acme", plan="developer")
    await credits.add_credit(aredis_client, "acme", 1_000_000)
    gone = [
        await billed(
            aredis_client, completion_job(upstream_model="sim?tokens=5", stream=False, reply_to=GONE_CHANNEL)
        )
        for _ in range(QUEUED)
    ]
    heard = await billed(aredis_client, completion_job(upstream_model="sim?tokens=5", reply_to=REPLY_CHANNEL))
    for job in [*gone, heard]:
        await enqueue(aredis_client, job, settings)
    assert (await credits.get_balance(aredis_client, "acme")).reserved == HOLD * (QUEUED + 1)
    async with running_worker(settings, concurrency=4) as worker:
        assert (await replies.final(heard.request_id)).kind == events.DONE
        for job in gone:
            await eventually(lambda job=job: status(clean_redis, job.request_id) in ENDED)
        assert GONE_CHANNEL in worker._unheard_channels
    assert upstream.stats.requests == 1, "a job of the gone ingress called the upstream"
    assert {status(clean_redis, job.request_id) for job in gone} == {JobStatus.FAILED}
    balance = await credits.get_balance(aredis_client, "acme")
    assert balance.reserved == 0  # the heard job's hold was settled by its answer, the others released
    records = {record.request_id: record for record in await usage.recent_usage(aredis_client, "acme")}
    for job in gone:
        record = records[job.request_id]
        assert (record.status, record.cost_micros, record.completion_tokens) == ("ingress_gone", 0, 0)
    assert (
        records[heard.request_id].status == usage.OK
        and balance.spent == records[heard.request_id].cost_micros
    )
