"""AsyncWorker on a real Redis: frames, rq's registries and statuses, concurrency, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis
from rq import Queue
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker

import workers.completion
from shared import events, keys, pool_stats
from shared.errors import ServiceUnavailable
from shared.jobs import JOB_FUNC
from shared.serialization import OrjsonSerializer
from tests.openai_spec import chunk_violations, completion_violations
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


async def pool_minute_counts(client: aredis.Redis, pool: str = "simulated") -> pool_stats.MinuteCounts:
    """The pool's counts of this minute and the one before, added up (a test may straddle two)."""
    minute = pool_stats.minute_of(time.time())
    parts = [
        pool_stats.MinuteCounts.parse(m, await client.hgetall(keys.pool_minute(pool, str(m))))
        for m in (minute - 1, minute)
    ]
    return pool_stats.MinuteCounts(
        minute,
        tuple(sum(b) for b in zip(*(p.buckets for p in parts), strict=True)),
        ok=sum(p.ok for p in parts),
        errors=sum(p.errors for p in parts),
        gone=sum(p.gone for p in parts),
    )


def sse_objects(payload: bytes) -> list[object]:
    lines = [line for line in payload.split(b"\n\n") if line]
    assert all(line.startswith(b"data: ") for line in lines)
    return [line[6:].decode() if line == b"data: [DONE]" else orjson.loads(line[6:]) for line in lines]


async def test_stream_job_publishes_start_chunks_done(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A stream job publishes S, C…, D in seq order; rq records it started then finished, right after
    the D frame (rq's bookkeeping follows the answer, off its path)."""
    settings = worker_settings(redis_url)
    job = completion_job("one two three", include_usage=True, reply_to=REPLY_CHANNEL)
    async with running_worker(settings) as worker:
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id)
        frames = replies.of(job.request_id)
        workers = await eventually(
            lambda: [w for w in Worker.all(connection=clean_redis) if w.successful_job_count == 1]
        )
        assert [w.name for w in workers] == [worker.name]
        assert workers[0].queue_names() == ["simulated", "simulated:batch"]  # the pool and its batch lane
    assert done.kind == events.DONE
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert frames[0].kind == events.START
    prep_ms = frames[0].meta.pop("prep_ms")  # the worker's time from taking the job to calling the upstream
    held_ms = frames[0].meta.pop("held_ms")  # then how long the S frame waited for the first content
    assert frames[0].meta == {"provider": "simulated", "worker": worker.name, "upstream_model": "echo"}
    assert isinstance(prep_ms, float) and prep_ms >= 0
    assert isinstance(held_ms, int | float) and held_ms >= 0
    assert {f.kind for f in frames[1:-1]} <= {events.CHUNKS}
    objects = sse_objects(b"".join(f.payload for f in frames[1:]))
    assert objects[-1] == "[DONE]"
    chunks = objects[:-1]
    assert all(chunk_violations(c) == [] for c in chunks)
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "one two three"
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert done.meta == {
        "usage": chunks[-1]["usage"],
        "finish_reason": "stop",
        "timing": {
            "ttfb_ms": done.meta["timing"]["ttfb_ms"],
            "upstream_ms": done.meta["timing"]["upstream_ms"],
        },
    }

    record = rq_job(clean_redis, job.request_id)
    assert record.get_status() == JobStatus.FINISHED
    assert record.worker_name == worker.name
    assert record.started_at is not None and record.ended_at is not None
    assert record.return_value() == {"finish_reason": "stop", "usage": done.meta["usage"]}
    assert job.request_id in FinishedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    assert clean_redis.llen(f"{keys.rq_queue_key('simulated')}:intermediate") == 0


async def test_json_job_publishes_one_completion_body(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A non-stream job publishes S then a D whose payload is the whole chat.completion body."""
    settings = worker_settings(redis_url)
    job = completion_job("hi you", stream=False, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id)
    assert [f.kind for f in replies.of(job.request_id)] == [events.START, events.DONE]
    body = orjson.loads(done.payload)
    assert completion_violations(body) == []
    assert body["model"] == "aiorouter/test-model"
    assert body["choices"][0]["message"]["content"] == "hi you"


async def test_upstream_error_publishes_error_and_fails_the_job(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """An adapter error becomes an E frame with the error's status; rq records the job failed."""
    settings = worker_settings(redis_url)
    job = completion_job(upstream_model="no-such-model", reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        error = await replies.final(job.request_id)
        workers = await eventually(
            lambda: [w for w in Worker.all(connection=clean_redis) if w.failed_job_count == 1]
        )
    assert error.kind == events.ERROR
    assert error.meta["status"] == 400 and error.meta["code"] == "upstream_bad_request"
    assert rq_job(clean_redis, job.request_id).get_status() == JobStatus.FAILED
    assert job.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    assert workers[0].failed_job_count == 1


async def test_jobs_run_concurrently(aredis_client: aredis.Redis, replies: Replies, redis_url: str) -> None:
    """N slow jobs on an N-slot worker all start before any of them finishes."""
    settings = worker_settings(redis_url, tokens_per_second=10)
    jobs = [completion_job(upstream_model="lorem", max_tokens=8, reply_to=REPLY_CHANNEL) for _ in range(4)]
    async with running_worker(settings, concurrency=4):
        for job in jobs:
            await enqueue(aredis_client, job, settings)
        first_final = await replies.until(lambda f: f.is_final)
        starts_before = {f.request_id for f in replies.frames if f.kind == events.START}
        for job in jobs:
            if job.request_id != first_final.request_id:
                await replies.final(job.request_id)
    assert starts_before == {job.request_id for job in jobs}
    assert all(replies.of(job.request_id)[-1].kind == events.DONE for job in jobs)


async def test_never_holds_more_jobs_than_slots(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """With 2 slots busy, the other jobs stay on rq's queue (none prefetched into the intermediate list)."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    jobs = [completion_job(upstream_model="lorem", max_tokens=30, reply_to=REPLY_CHANNEL) for _ in range(5)]
    queue_key = keys.rq_queue_key("simulated")
    async with running_worker(settings, concurrency=2):
        for job in jobs:
            await enqueue(aredis_client, job, settings)
        await replies.until(lambda f: f.kind == events.START)
        await replies.until(lambda f: f.kind == events.START)
        await asyncio.sleep(0.3)  # a pause in which a worker that prefetched would take more
        assert clean_redis.llen(queue_key) == 3
        assert clean_redis.llen(f"{queue_key}:intermediate") == 0
        assert len(StartedJobRegistry("simulated", connection=clean_redis).get_job_ids()) == 2
        for job in jobs:
            await replies.final(job.request_id)
    assert clean_redis.llen(queue_key) == 0


async def test_a_backlog_is_taken_in_queue_order_up_to_the_free_slots(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A backlog taken by the batched dequeue (BLMOVE, then pipelined LMOVEs) goes oldest first and never
    past the worker's slots: 8 of 20 start, 12 stay queued, and all of them finish."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    jobs = [completion_job(upstream_model="lorem", max_tokens=10, reply_to=REPLY_CHANNEL) for _ in range(20)]
    queue_key = keys.rq_queue_key("simulated")
    for job in jobs:
        await enqueue(aredis_client, job, settings)
    async with running_worker(settings, concurrency=8):
        for _ in range(8):
            await replies.until(lambda f: f.kind == events.START)
        await asyncio.sleep(0.2)  # a pause in which a worker that took too many would start a ninth
        started = [f.request_id for f in replies.frames if f.kind == events.START]
        assert started[:8] and set(started) == {job.request_id for job in jobs[:8]}
        assert clean_redis.llen(queue_key) == 12
        assert clean_redis.llen(f"{queue_key}:intermediate") == 0
        for job in jobs:
            await replies.final(job.request_id)
    assert clean_redis.llen(queue_key) == 0
    assert all(replies.of(job.request_id)[-1].kind == events.DONE for job in jobs)


async def test_cancel_on_channel_stops_the_job(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job id published on the cancel channel stops that job: no D frame, rq status stopped; it counts
    in its pool's minute as gone, not as an error."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    slow = completion_job(upstream_model="lorem", max_tokens=200, reply_to=REPLY_CHANNEL)
    after = completion_job("still serving", reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, slow, settings)
        await replies.until(lambda f: f.request_id == slow.request_id and f.kind == events.CHUNKS)
        await aredis_client.set(keys.cancelled_marker(slow.request_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
        await aredis_client.publish(keys.CANCEL_CHANNEL, slow.request_id)
        await eventually(lambda: rq_job(clean_redis, slow.request_id).get_status() == JobStatus.STOPPED)
        await enqueue(aredis_client, after, settings)
        assert (await replies.final(after.request_id)).kind == events.DONE
    assert not any(f.is_final for f in replies.of(slow.request_id))
    assert slow.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    counts = await pool_minute_counts(aredis_client)
    assert counts.gone == 1 and counts.errors == 0 and counts.jobs == 2


async def test_a_job_cancelled_while_its_start_is_held_still_records_its_start(
    clean_redis: redis.Redis,
    aredis_client: aredis.Redis,
    replies: Replies,  # its ingress listens: a job of a gone one is dropped before its start
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job cancelled while its S frame waits for content (START_HOLD, widened here) has its start
    built for that frame and never published: the start is written with its failure, so the job leaves
    rq's intermediate list and ends stopped, not stuck for rq's clean-up to fail again."""
    monkeypatch.setattr(workers.completion, "START_HOLD", 30.0)
    settings = worker_settings(redis_url, tokens_per_second=0.1)
    slow = completion_job(upstream_model="lorem", max_tokens=50, reply_to=REPLY_CHANNEL)
    async with running_worker(settings) as worker:
        await enqueue(aredis_client, slow, settings)
        # the start is built (for the held S frame) once the upstream request is on its way
        await eventually(lambda: (run := worker._runs.get(slow.request_id)) is not None and run.started)
        await aredis_client.set(keys.cancelled_marker(slow.request_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
        await aredis_client.publish(keys.CANCEL_CHANNEL, slow.request_id)
        await eventually(lambda: rq_job(clean_redis, slow.request_id).get_status() == JobStatus.STOPPED)
        await eventually(lambda: not worker._runs)
    intermediate = f"{keys.rq_queue_key('simulated')}:intermediate"
    assert slow.request_id.encode() not in clean_redis.lrange(intermediate, 0, -1)
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    assert slow.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()


async def test_a_cancel_sent_while_the_stop_subscription_was_down_stops_the_job_once_it_is_back(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A cancel published while the worker's stop-request subscription is down (Redis restarting) is
    not heard; its marker stays, and the worker reads its running jobs' markers once it resubscribed."""
    settings = worker_settings(redis_url, tokens_per_second=5)
    slow = completion_job(upstream_model="lorem", max_tokens=200, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, slow, settings)
        await eventually(lambda: rq_job(clean_redis, slow.request_id).get_status() == JobStatus.STARTED)
        # the cancel's broadcast is lost with the subscription: only its marker is left
        await aredis_client.set(keys.cancelled_marker(slow.request_id), b"1", ex=keys.CANCELLED_MARKER_TTL)
        # the worker's stop-request connection: the one subscribed to two channels (cancels, its own)
        stop_listeners = [c["id"] for c in clean_redis.client_list(_type="pubsub") if c["sub"] == "2"]
        assert len(stop_listeners) == 1
        clean_redis.client_kill_filter(_id=stop_listeners[0])
        await eventually(lambda: rq_job(clean_redis, slow.request_id).get_status() == JobStatus.STOPPED)
    assert slow.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()


async def test_cancelled_marker_skips_job_at_pickup(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job whose cancel marker is set before pickup is never run: no S frame, rq status stopped."""
    settings = worker_settings(redis_url)
    dropped = completion_job("never", reply_to=REPLY_CHANNEL)
    served = completion_job("served", reply_to=REPLY_CHANNEL)
    await aredis_client.set(keys.cancelled_marker(dropped.request_id), b"1")
    await enqueue(aredis_client, dropped, settings)
    async with running_worker(settings, concurrency=1):
        await enqueue(aredis_client, served, settings)
        await replies.final(served.request_id)
    assert replies.of(dropped.request_id) == []
    assert rq_job(clean_redis, dropped.request_id).get_status() == JobStatus.STOPPED
    assert dropped.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()


async def test_a_cancel_heard_before_the_job_is_taken_stops_it_at_pickup(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A cancel that reaches the worker before the job it names is launched there (its move's reads,
    marker included, may have been made just before the cancel) stops the job at pickup: no S frame, rq
    status stopped.  Here the marker is never set, so only the cancel heard early can stop it."""
    settings = worker_settings(redis_url)
    dropped = completion_job("never", reply_to=REPLY_CHANNEL)
    served = completion_job("served", reply_to=REPLY_CHANNEL)
    async with running_worker(settings, concurrency=1) as worker:
        await aredis_client.publish(keys.CANCEL_CHANNEL, dropped.request_id)
        await eventually(lambda: dropped.request_id in worker._early_cancels)
        await enqueue(aredis_client, dropped, settings)
        await enqueue(aredis_client, served, settings)
        await replies.final(served.request_id)
        assert dropped.request_id not in worker._early_cancels
    assert replies.of(dropped.request_id) == []
    assert rq_job(clean_redis, dropped.request_id).get_status() == JobStatus.STOPPED


async def test_rq_stop_job_command_stops_the_job(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """rq's own ``send_stop_job_command`` reaches the async worker and stops the job."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    slow = completion_job(upstream_model="lorem", max_tokens=200, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, slow, settings)
        await replies.until(lambda f: f.request_id == slow.request_id and f.kind == events.CHUNKS)
        await asyncio.to_thread(send_stop_job_command, clean_redis, slow.request_id, OrjsonSerializer)
        await eventually(lambda: rq_job(clean_redis, slow.request_id).get_status() == JobStatus.STOPPED)


async def test_liveness_keys_while_running_and_removed_on_exit(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """A running worker keeps its alive key, pool entry and pool name fresh; a clean exit removes them."""
    settings = worker_settings(redis_url)
    async with running_worker(settings) as worker:
        alive = keys.worker_alive(worker.name)
        clean_redis.pexpire(alive, 60_000)  # longer than any beat sets: the next beat shows as a shorter TTL
        await eventually(lambda: 0 < clean_redis.pttl(alive) <= 1000)
        assert clean_redis.zscore(keys.pool_workers("simulated"), worker.name) is not None
        assert clean_redis.sismember(keys.POOLS_SET, "simulated")
        assert clean_redis.sismember(Worker.redis_workers_keys, worker.key)
    assert not clean_redis.exists(keys.worker_alive(worker.name))
    assert clean_redis.zscore(keys.pool_workers("simulated"), worker.name) is None
    assert Worker.all(connection=clean_redis) == []


async def test_graceful_stop_lets_inflight_jobs_finish(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """After a stop request the worker takes no new job but finishes the one it runs."""
    settings = worker_settings(redis_url, tokens_per_second=20)
    running = completion_job(upstream_model="lorem", max_tokens=10, reply_to=REPLY_CHANNEL)
    waiting = completion_job("later", reply_to=REPLY_CHANNEL)
    async with running_worker(settings) as worker:
        await enqueue(aredis_client, running, settings)
        await replies.until(lambda f: f.kind == events.START)
        worker.request_stop()
        await enqueue(aredis_client, waiting, settings)
        assert (await replies.final(running.request_id)).kind == events.DONE
    assert rq_job(clean_redis, running.request_id).get_status() == JobStatus.FINISHED
    assert rq_job(clean_redis, waiting.request_id).get_status() == JobStatus.QUEUED
    assert replies.of(waiting.request_id) == []


async def test_stop_after_grace_fails_unfinished_jobs(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """Jobs still running when the shutdown grace ends get a worker_lost E frame and are failed in rq."""
    settings = worker_settings(redis_url, tokens_per_second=5)
    long = completion_job(upstream_model="lorem", max_tokens=200, reply_to=REPLY_CHANNEL)
    async with running_worker(settings, shutdown_grace=0.3) as worker:
        await enqueue(aredis_client, long, settings)
        await replies.until(lambda f: f.kind == events.START)
        worker.request_stop()
        error = await replies.final(long.request_id)
    assert error.kind == events.ERROR and error.meta["code"] == "worker_lost"
    assert rq_job(clean_redis, long.request_id).get_status() == JobStatus.FAILED
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []


async def test_malformed_job_is_failed_at_once(clean_redis: redis.Redis, redis_url: str) -> None:
    """A genuine rq job whose argument is not a CompletionJob is failed right away, not left started."""
    queue = Queue("simulated", connection=clean_redis, serializer=OrjsonSerializer)
    bogus = queue.enqueue(JOB_FUNC, {"not": "a completion job"})
    async with running_worker(worker_settings(redis_url)):
        await eventually(lambda: rq_job(clean_redis, bogus.id).get_status() == JobStatus.FAILED)
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    result = rq_job(clean_redis, bogus.id).latest_result()
    assert result is not None and "Malformed completion job" in (result.exc_string or "")


async def test_vanished_job_leaves_no_trace(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A queued id whose job hash is gone is dropped without recreating a partial hash or execution."""
    settings = worker_settings(redis_url)
    clean_redis.rpush(keys.rq_queue_key("simulated"), "ghost")
    after = completion_job("after the ghost", reply_to=REPLY_CHANNEL)
    async with running_worker(settings, concurrency=1):
        await enqueue(aredis_client, after, settings)
        assert (await replies.final(after.request_id)).kind == events.DONE
    assert not clean_redis.exists(Job.key_for("ghost"))
    assert StartedJobRegistry("simulated", connection=clean_redis).get_job_ids() == []
    assert clean_redis.llen(f"{keys.rq_queue_key('simulated')}:intermediate") == 0


async def test_rq_sees_running_executions_and_busy_state(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """While jobs run, rq's own view shows the worker busy with one execution per job."""
    settings = worker_settings(redis_url, tokens_per_second=10)
    jobs = [completion_job(upstream_model="lorem", max_tokens=20, reply_to=REPLY_CHANNEL) for _ in range(2)]
    async with running_worker(settings) as worker:
        for job in jobs:
            await enqueue(aredis_client, job, settings)
        await replies.until(lambda f: f.kind == events.START)
        await replies.until(lambda f: f.kind == events.START)
        (seen,) = Worker.all(connection=clean_redis)
        executions = seen.get_current_executions()
        assert seen.name == worker.name and seen.get_state() == "busy"
        assert sorted(e.job_id for e in executions) == sorted(j.request_id for j in jobs)
        for job in jobs:
            await replies.final(job.request_id)
        await eventually(lambda: Worker.all(connection=clean_redis)[0].get_state() == "idle")


async def test_expired_worker_hash_is_recreated_by_the_heartbeat(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """If rq's worker hash expires (a long stall), the next heartbeat registers the worker again."""
    async with running_worker(worker_settings(redis_url)) as worker:
        clean_redis.delete(worker.key)
        await eventually(lambda: clean_redis.hget(worker.key, "birth") is not None, within=5)
        assert clean_redis.ttl(worker.key) > 0
        assert [w.name for w in Worker.all(connection=clean_redis)] == [worker.name]


async def test_job_timeout_ends_the_job_with_an_error(
    clean_redis: redis.Redis, aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job running past rq's job timeout is stopped with an upstream_timeout E frame and failed, and
    counts as an error of its pool's minute."""
    settings = worker_settings(redis_url, tokens_per_second=5, job_timeout=1)
    slow = completion_job(upstream_model="lorem", max_tokens=100, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, slow, settings)
        error = await replies.final(slow.request_id)
    assert error.kind == events.ERROR and error.meta["code"] == "upstream_timeout"
    counts = await pool_minute_counts(aredis_client)
    assert counts.errors == 1 and counts.jobs == 1
    assert rq_job(clean_redis, slow.request_id).get_status() == JobStatus.FAILED
    assert slow.request_id in FailedJobRegistry("simulated", connection=clean_redis).get_job_ids()


async def test_a_failing_heartbeat_does_not_end_the_heartbeats(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """One beat raising (Redis blip, a stats write failing) is logged; the next beats still mark it alive."""
    async with running_worker(worker_settings(redis_url)) as worker:
        heartbeat = worker.upkeep.heartbeat
        beat = heartbeat.beat
        calls = 0

        async def flaky_beat() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ServiceUnavailable("blip")
            await beat()

        heartbeat.beat = flaky_beat  # type: ignore[method-assign]
        clean_redis.delete(keys.worker_alive(worker.name))
        await eventually(lambda: clean_redis.exists(keys.worker_alive(worker.name)) == 1, within=5)
    assert calls >= 2


async def test_a_beat_renews_only_the_executions_due(
    clean_redis: redis.Redis,
    aredis_client: aredis.Redis,
    replies: Replies,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A running job's rq execution is renewed every ``execution_renew_every`` (a few beats), not on every
    beat (with thousands of running streams, renewing all of them each beat took a tenth of the loop),
    and still before its TTL runs out: rq's registry keeps a job that outlives several TTLs."""
    from workers import bookkeeping

    beats: list[list[str]] = []
    build = bookkeeping.heartbeat_commands

    def spy(worker: object, due: list[bookkeeping.StartedJob], *, execution_ttl: int) -> Any:
        beats.append([started.job.id for started in due])
        return build(worker, due, execution_ttl=execution_ttl)  # type: ignore[arg-type]

    monkeypatch.setattr(bookkeeping, "heartbeat_commands", spy)
    settings = worker_settings(redis_url, tokens_per_second=4)
    job = completion_job(upstream_model="lorem", max_tokens=24, reply_to=REPLY_CHANNEL)
    async with running_worker(settings, maintenance_interval=0.5) as worker:
        assert worker.settings.worker_heartbeat_interval < worker.execution_renew_every < worker.execution_ttl
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id, within=30)
    assert done.kind == events.DONE
    assert rq_job(clean_redis, job.request_id).get_status() == JobStatus.FINISHED
    renewed = [i for i, due in enumerate(beats) if job.request_id in due]
    assert len(renewed) >= 2  # the job ran for more than twice the renewal interval
    assert all(b - a >= 2 for a, b in itertools.pairwise(renewed))  # the beats between left it alone


async def test_a_failed_beat_leaves_the_renewals_due_for_the_next(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beat that fails (Redis blip) renews nothing, so the next beat renews the executions it was due
    to renew, rather than one renewal interval later: the registry's margin survives a failed beat."""
    from workers import bookkeeping

    beats: list[list[str]] = []
    failed: list[int] = []
    build = bookkeeping.heartbeat_commands

    def flaky(worker: object, due: list[bookkeeping.StartedJob], *, execution_ttl: int) -> Any:
        beats.append([started.job.id for started in due])
        if due and not failed:
            failed.append(len(beats) - 1)
            raise ServiceUnavailable("blip")
        return build(worker, due, execution_ttl=execution_ttl)  # type: ignore[arg-type]

    monkeypatch.setattr(bookkeeping, "heartbeat_commands", flaky)
    settings = worker_settings(redis_url, tokens_per_second=4)
    job = completion_job(upstream_model="lorem", max_tokens=16, reply_to=REPLY_CHANNEL)
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        assert (await replies.final(job.request_id, within=30)).kind == events.DONE
    (first,) = failed
    assert job.request_id in beats[first] and job.request_id in beats[first + 1]
