"""Enqueue, withdraw, cancel, abandon: the job's life in Redis as the ingress drives it, checked with rq."""

from __future__ import annotations

import time

import redis
import redis.asyncio as aredis
from rq.job import Job, JobStatus
from rq.queue import Queue

from ingress import job_control
from shared import keys
from shared.jobs import JOB_FUNC, CompletionJob
from shared.serialization import OrjsonSerializer
from tests.ingress.conftest import MESSAGES, MODEL, make_settings
from tests.ingress.fake_worker import FakeWorker


def completion_job(request_id: str = "job-1") -> CompletionJob:
    return CompletionJob(
        request_id=request_id,
        reply_to=keys.reply_channel("test"),
        model=MODEL,
        provider="simulated",
        upstream_model="echo",
        stream=False,
        include_usage=False,
        body={"model": MODEL, "messages": MESSAGES},
        created=int(time.time()),
    )


async def test_enqueued_job_is_a_genuine_rq_job(
    aredis_client: aredis.Redis, clean_redis: redis.Redis, redis_url: str
) -> None:
    """rq itself sees the job queued on the pool's queue, with our function name and orjson arguments."""
    await job_control.enqueue_completion(aredis_client, completion_job(), make_settings(redis_url))
    queue = Queue("simulated", connection=clean_redis, serializer=OrjsonSerializer)
    assert queue.job_ids == ["job-1"]
    job = Job.fetch("job-1", connection=clean_redis, serializer=OrjsonSerializer)
    assert job.get_status() == JobStatus.QUEUED
    assert job.func_name == JOB_FUNC
    assert CompletionJob.from_wire(job.args[0]) == completion_job()


async def test_withdraw_removes_a_queued_job(aredis_client: aredis.Redis, redis_url: str) -> None:
    """A job still queued is taken off the queue and its record deleted."""
    await job_control.enqueue_completion(aredis_client, completion_job(), make_settings(redis_url))
    assert await job_control.withdraw(aredis_client, "simulated", "job-1") is True
    assert await aredis_client.llen(keys.rq_queue_key("simulated")) == 0
    assert not await aredis_client.exists(Job.key_for("job-1"))


async def test_withdraw_leaves_a_taken_job_alone(
    aredis_client: aredis.Redis, clean_redis: redis.Redis, redis_url: str
) -> None:
    """A job a worker already took is not withdrawn and its record stays."""
    await job_control.enqueue_completion(aredis_client, completion_job(), make_settings(redis_url))
    await FakeWorker(aredis_client, clean_redis).take()
    assert await job_control.withdraw(aredis_client, "simulated", "job-1") is False
    assert await aredis_client.exists(Job.key_for("job-1"))


async def test_cancel_publishes_and_marks(aredis_client: aredis.Redis) -> None:
    """Cancelling publishes the id on the cancel channel and leaves a marker with its TTL."""
    listener = aredis_client.pubsub()
    await listener.subscribe(keys.CANCEL_CHANNEL)
    await listener.get_message(timeout=1)
    try:
        await job_control.cancel(aredis_client, "job-9")
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None and message["data"] == b"job-9"
        assert 0 < await aredis_client.ttl(keys.cancelled_marker("job-9")) <= keys.CANCELLED_MARKER_TTL
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]


async def test_abandon_withdraws_or_cancels(aredis_client: aredis.Redis, redis_url: str) -> None:
    """Abandoning a queued job withdraws it without a cancel; a started one is cancelled."""
    await job_control.enqueue_completion(aredis_client, completion_job("queued"), make_settings(redis_url))
    await job_control.abandon(aredis_client, "simulated", "queued", started=False)
    assert not await aredis_client.exists(Job.key_for("queued"), keys.cancelled_marker("queued"))
    await job_control.abandon(aredis_client, "simulated", "running", started=True)
    assert await aredis_client.exists(keys.cancelled_marker("running"))
