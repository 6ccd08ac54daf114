"""Abandoned-job recovery and stock-rq compatibility, with real processes on a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry, clean_registries
from rq.worker import Worker

from shared import events, keys
from shared.serialization import OrjsonSerializer
from tests.waiting import eventually
from tests.workers.conftest import (
    REPLY_CHANNEL,
    Replies,
    enqueue,
    running_worker,
    worker_settings,
)
from tests.workers.factories import completion_job

pytestmark = pytest.mark.redis


def rq_job(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=OrjsonSerializer)


def start_worker_process(name: str, config: Path, redis_url: str) -> subprocess.Popen[bytes]:
    """``aiorouter worker`` in a real child process."""
    command = [sys.executable, "-m", "cli", "worker", "--pool", "simulated", "--concurrency", "2"]
    command += ["--name", name, "--config", str(config)]
    environment = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def config_file(tmp_path: Path, redis_url: str) -> Path:
    path = tmp_path / "aiorouter.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\n'
        "worker_heartbeat_interval = 0.2\n"
        "worker_dead_after = 1.0\n"
        "[providers.simulated]\n"
        'kind = "simulated"\n'
        "tokens_per_second = 5.0\n"
    )
    return path


async def test_killed_worker_job_ends_failed_not_stuck(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str, tmp_path: Path
) -> None:
    """kill -9 mid-job: the job's execution expires and a surviving worker's rq clean-up fails it."""
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    process = start_worker_process(name, config_file(tmp_path, redis_url), redis_url)
    try:
        await eventually(lambda: clean_redis.exists(keys.worker_alive(name)) == 1, within=30)
        settings = worker_settings(redis_url)
        job = completion_job(upstream_model="lorem", max_tokens=500, reply_to=REPLY_CHANNEL)
        await enqueue(aredis_client, job, settings)
        started = await replies.until(lambda f: f.request_id == job.request_id and f.kind == events.CHUNKS)
        assert replies.of(job.request_id)[0].meta["worker"] == name
        assert started.kind == events.CHUNKS
    finally:
        kill_hard(process)

    assert rq_job(clean_redis, job.request_id).get_status() == JobStatus.STARTED
    assert job.request_id in StartedJobRegistry("simulated", connection=clean_redis).get_job_ids(
        cleanup=False
    )
    await eventually(lambda: not clean_redis.exists(keys.worker_alive(name)), within=5)

    async with running_worker(settings, maintenance_interval=0.5):
        await eventually(
            lambda: rq_job(clean_redis, job.request_id).get_status() == JobStatus.FAILED, within=20
        )
    assert job.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    assert not any(f.is_final for f in replies.of(job.request_id))


async def test_live_workers_long_job_is_not_reaped(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job that outlives its execution TTL is kept alive by heartbeats: maintenance leaves it alone."""
    settings = worker_settings(redis_url, tokens_per_second=4)
    job = completion_job(upstream_model="lorem", max_tokens=20, reply_to=REPLY_CHANNEL)
    async with running_worker(settings, maintenance_interval=0.5) as worker:
        await enqueue(aredis_client, job, settings)
        assert worker.execution_ttl < 5  # the job below runs longer than one TTL
        done = await replies.final(job.request_id, within=30)
    assert done.kind == events.DONE
    assert rq_job(clean_redis, job.request_id).get_status() == JobStatus.FINISHED


class CommandlessSimpleWorker(SimpleWorker):
    """rq's SimpleWorker without its command channel (``rq:pubsub:<name>``), which no test here uses.

    rq 3.0 closes that channel by unsubscribing, then calling ``PubSubWorkerThread.stop()``, which in
    redis-py 8 waits for the thread.  When the thread reads the unsubscribe reply before ``stop()`` clears
    its running flag (a loaded box makes that likely), it goes back to waiting for a subscription for rq's
    60-second ``sleep_time``: the burst worker returns a minute late, after the job's 60-second result TTL
    has removed what the test reads.
    """

    def subscribe(self) -> None:
        """No command channel, so nothing to close at the end."""

    def unsubscribe(self) -> None:
        """Nothing was subscribed."""


def test_stock_rq_worker_runs_the_job_function(
    clean_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job function named by shared.jobs.JOB_FUNC runs under a stock rq worker and publishes S…D."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("AIOROUTER_CONFIG", raising=False)
    job = completion_job("stock rq", include_usage=True, reply_to=f"{REPLY_CHANNEL}-stock")
    pubsub = clean_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(job.reply_to)
    asyncio.run(enqueue_once(redis_url, job))
    queue = Queue("simulated", connection=clean_redis, serializer=OrjsonSerializer)
    CommandlessSimpleWorker([queue], connection=clean_redis, serializer=OrjsonSerializer).work(burst=True)
    frames = []
    deadline = time.monotonic() + 10  # the frames were published before work() returned
    while not frames or not frames[-1].is_final:
        assert time.monotonic() < deadline, f"no final frame among {frames}"
        message = pubsub.get_message(timeout=1)  # None for the subscribe confirmation
        if message is not None:
            frames.append(events.decode(message["data"]))
    pubsub.close()
    assert frames[0].kind == events.START and frames[-1].kind == events.DONE
    assert frames[-1].payload.endswith(events.SSE_DONE)
    assert job.request_id in FinishedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    assert rq_job(clean_redis, job.request_id).return_value()["finish_reason"] == "stop"
    assert Worker.all(connection=clean_redis) == []


async def enqueue_once(redis_url: str, job: object) -> None:
    client = aredis.Redis.from_url(redis_url)
    try:
        await enqueue(client, job, worker_settings(redis_url))  # type: ignore[arg-type]
    finally:
        await client.aclose()


async def test_sigterm_finishes_the_job_then_registers_death(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str, tmp_path: Path
) -> None:
    """SIGTERM to a worker process: the running job still completes, then the worker deregisters and exits."""
    name = f"polite-{uuid.uuid4().hex[:8]}"
    process = start_worker_process(name, config_file(tmp_path, redis_url), redis_url)
    try:
        await eventually(lambda: clean_redis.exists(keys.worker_alive(name)) == 1, within=30)
        job = completion_job(upstream_model="lorem", max_tokens=8, reply_to=REPLY_CHANNEL)
        await enqueue(aredis_client, job, worker_settings(redis_url))
        await replies.until(lambda f: f.request_id == job.request_id and f.kind == events.START)
        process.send_signal(signal.SIGTERM)
        assert (await replies.final(job.request_id)).kind == events.DONE
        await eventually(lambda: process.poll() is not None, within=15)
    finally:
        if process.poll() is None:
            kill_hard(process)
    assert process.returncode == 0
    assert rq_job(clean_redis, job.request_id).get_status() == JobStatus.FINISHED
    assert Worker.all(connection=clean_redis) == []
    assert not clean_redis.exists(keys.worker_alive(name))


async def test_a_maintenance_run_that_fails_midway_does_not_lock_the_clean_up_out(
    clean_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rq's clean-up of a queue that fails after taking the queue's maintenance lock (Redis lost
    midway) leaves that lock for 15 minutes; the worker deletes it, so the next run cleans the queue."""
    cleaned: list[str] = []

    def fails_once(queue: Queue, exception_handlers: list[Any] | None = None) -> None:
        cleaned.append(queue.name)
        if cleaned.count(queue.name) == 1 and queue.name == "simulated":
            raise redis.ConnectionError("lost midway")
        clean_registries(queue, exception_handlers)

    monkeypatch.setattr("rq.worker.base.clean_registries", fails_once)  # what Worker.clean_registries calls
    settings = worker_settings(redis_url)
    async with running_worker(settings, maintenance_interval=0.2):
        await eventually(lambda: cleaned.count("simulated") >= 2)
    assert not clean_redis.exists(Queue("simulated", connection=clean_redis).registry_cleaning_key)
