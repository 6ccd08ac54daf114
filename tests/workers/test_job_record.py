"""What a job's rq record keeps once a worker has loaded it: a diagnostic copy, never the request body."""

from __future__ import annotations

import secrets

import pytest
import redis
import redis.asyncio as aredis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from shared import events
from shared.serialization import OrjsonSerializer
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job

pytestmark = pytest.mark.redis

BIG_PROMPT = secrets.token_urlsafe(75_000)  # 100 KB that compress to ~75 KB: what a queued record holds
RECORD_BOUND = 2_304  # bytes of Redis memory a loaded job's hash takes, beyond its prompt excerpt


def stored_call(client: redis.Redis, job_id: str) -> dict[str, object]:
    job = Job.fetch(job_id, connection=client, serializer=OrjsonSerializer)
    (wire,) = job.args
    assert isinstance(wire, dict)
    return wire


def record_bytes(client: redis.Redis, job_id: str) -> int:
    return int(client.memory_usage(Job.key_for(job_id), samples=0) or 0)


async def test_a_failed_jobs_record_keeps_a_diagnostic_copy(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job that fails at the upstream stays in the failed registry with its size, message count and
    first bytes of its prompt, not its 100 KB prompt; its record stays under a fixed bound."""
    settings = worker_settings(redis_url, job_record_prompt_bytes=16)
    job = completion_job(BIG_PROMPT, upstream_model="no-such-model", reply_to=REPLY_CHANNEL)
    await enqueue(aredis_client, job, settings)
    assert record_bytes(clean_redis, job.request_id) > 70_000  # queued: the request is there
    async with running_worker(settings):
        assert (await replies.final(job.request_id)).kind == events.ERROR
    assert job.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    wire = stored_call(clean_redis, job.request_id)
    assert wire["request_id"] == job.request_id and wire["model"] == job.model
    body = wire["body"]
    assert isinstance(body, dict)
    assert body["stripped"] is True and body["messages"] == 1 and body["bytes"] > len(BIG_PROMPT)
    assert body["prompt_head"] == BIG_PROMPT[:16]
    assert record_bytes(clean_redis, job.request_id) < RECORD_BOUND + settings.job_record_prompt_bytes
    assert 0 < clean_redis.ttl(Job.key_for(job.request_id)) <= settings.failure_ttl


async def test_a_running_and_a_finished_jobs_record_hold_no_prompt(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """While a job runs (so also if its worker dies now) and after it finished, its record is the
    diagnostic copy: a worker killed mid-job leaves nothing large for rq to move to the failed registry."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    job = completion_job(BIG_PROMPT, upstream_model="lorem", max_tokens=8, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        await replies.until(lambda f: f.request_id == job.request_id and f.kind == events.CHUNKS)
        running = Job.fetch(job.request_id, connection=clean_redis, serializer=OrjsonSerializer)
        assert running.get_status() == JobStatus.STARTED
        assert record_bytes(clean_redis, job.request_id) < RECORD_BOUND + settings.job_record_prompt_bytes
        assert (await replies.final(job.request_id)).kind == events.DONE
    body = stored_call(clean_redis, job.request_id)["body"]
    assert isinstance(body, dict) and body["prompt_head"] == BIG_PROMPT[: settings.job_record_prompt_bytes]
    assert record_bytes(clean_redis, job.request_id) < RECORD_BOUND + settings.job_record_prompt_bytes
