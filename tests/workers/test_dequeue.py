"""Taking a job off the queue reads what starts it in the same round trip (``workers.dequeue``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aredis
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from shared import keys
from shared.autopipeline import REPLY_TIMEOUT
from shared.jobs import REPLY_CHANNEL_FIELD, CompletionJob
from shared.redis_client import async_client
from shared.redis_commands import run_commands
from shared.settings import Settings
from tests.waiting import eventually
from tests.workers.conftest import enqueue
from tests.workers.factories import completion_job
from workers import bookkeeping, dequeue
from workers.dequeue import Dequeued, StartReads, Taken, next_batch
from workers.worker import DEQUEUE_TIMEOUT

pytestmark = pytest.mark.redis

SOURCE = keys.rq_queue_key("simulated")
TARGET = IntermediateQueue.get_intermediate_queue_key(SOURCE)


@pytest.fixture(params=["auto-pipelined", "plain"])
async def mover(
    request: pytest.FixtureRequest, clean_redis: redis.Redis, redis_url: str
) -> AsyncIterator[aredis.Redis]:
    """The dequeue loop's own client: auto-pipelined (the default), or plain redis-py
    (``redis_auto_pipeline = false``)."""
    client = async_client(redis_url, max_connections=1, auto_pipeline=request.param == "auto-pipelined")
    yield client
    await client.aclose()


async def test_the_move_brings_the_jobs_hash_cancel_marker_and_breakers(
    mover: aredis.Redis, aredis_client: aredis.Redis, clean_redis: redis.Redis
) -> None:
    """One round trip moves the job to the intermediate list and reads what ``start_read_commands`` would
    read on their own, reply for reply, and how many jobs are left in the queue; and, which they do not
    ask, that nobody subscribes to the job's reply channel."""
    await dequeue.load_script(mover)
    job, other = completion_job("hello"), completion_job("next")
    await enqueue(aredis_client, job, Settings())
    await enqueue(aredis_client, other, Settings())
    clean_redis.set(keys.cancelled_marker(job.request_id), 1)
    clean_redis.zadd(keys.BREAKER_BLOCKED, {"sim/a": 1})
    taken = await dequeue.take(mover, SOURCE, TARGET, block=1)
    [one] = taken.jobs
    assert one.job_id == job.request_id and taken.queued == 1
    assert clean_redis.lrange(TARGET, 0, -1) == [job.request_id.encode()]
    async with aredis_client.pipeline(transaction=False) as pipe:
        for command, _ in dequeue.start_read_commands(job.request_id):
            pipe.execute_command(*command)
        alone = dequeue.start_reads(await pipe.execute())
    assert one.reads == dataclasses.replace(alone, unheard=True)
    assert one.reads.cancelled and one.reads.broken == [b"sim/a"]
    assert one.reads.job_hash[b"status"] == b"queued"


async def test_a_blocked_move_is_read_when_the_job_arrives(
    mover: aredis.Redis, aredis_client: aredis.Redis, clean_redis: redis.Redis
) -> None:
    """The read waits behind the BLMOVE: it reads the job pushed while the move blocked, not the empty
    list it would have found when the two were sent."""
    await dequeue.load_script(mover)
    waiting = asyncio.create_task(dequeue.take(mover, SOURCE, TARGET, block=5))
    job = completion_job("late")
    await eventually(lambda: any(c.get("cmd") == "blmove" for c in clean_redis.client_list()))
    await enqueue(aredis_client, job, Settings())
    [taken] = (await asyncio.wait_for(waiting, 5)).jobs
    assert taken.reads is not None
    assert taken.job_id == job.request_id and taken.reads.job_hash[b"status"] == b"queued"


async def test_an_empty_queue_gives_nothing(mover: aredis.Redis, clean_redis: redis.Redis) -> None:
    """Without a job the move gives no job, whether it waited (BLMOVE) or not (LMOVE), even with an id
    left on the intermediate list from before."""
    await dequeue.load_script(mover)
    clean_redis.rpush(TARGET, "left-over")
    assert await dequeue.take(mover, SOURCE, TARGET, block=None) == Dequeued([], 0)
    assert await dequeue.take(mover, SOURCE, TARGET, block=1, count=3) == Dequeued([], 0)


async def test_a_server_without_the_script_still_gives_the_job_and_learns_it(
    mover: aredis.Redis, aredis_client: aredis.Redis
) -> None:
    """After SCRIPT FLUSH (a restarted Redis) the move still takes the job, without its reads (the worker
    reads them itself), and loads the script: the next move brings them again."""
    settings = Settings()
    first, second = completion_job("one"), completion_job("two")
    await enqueue(aredis_client, first, settings)
    await enqueue(aredis_client, second, settings)
    await aredis_client.script_flush()
    taken = await dequeue.take(mover, SOURCE, TARGET, block=None)
    assert taken == Dequeued([Taken(first.request_id, None)], None)
    [again] = (await dequeue.take(mover, SOURCE, TARGET, block=None)).jobs
    assert again.job_id == second.request_id and again.reads is not None


async def test_a_batch_of_moves_reads_each_job(mover: aredis.Redis, aredis_client: aredis.Redis) -> None:
    """Several moves in one round trip each bring their own job's reads, in queue order, and stop at the
    end of the queue."""
    await dequeue.load_script(mover)
    settings = Settings()
    jobs = [completion_job(f"job {n}") for n in range(3)]
    for job in jobs:
        await enqueue(aredis_client, job, settings)
    taken = await dequeue.take(mover, SOURCE, TARGET, block=1, count=5)
    assert [t.job_id for t in taken.jobs] == [job.request_id for job in jobs] and taken.queued == 0
    for job, one in zip(jobs, taken.jobs, strict=True):
        assert one.reads is not None
        assert CompletionJob.from_wire(bookkeeping.adopt(one.job_id, one.reads.job_hash).args[0]) == job


async def test_the_move_asks_whether_anybody_listens_on_the_jobs_reply_channel(
    mover: aredis.Redis, aredis_client: aredis.Redis, clean_redis: redis.Redis
) -> None:
    """The take script asks ``PUBSUB NUMSUB`` of the channel the job's hash names: unheard when nobody
    subscribes to it; a batch line's job, and one whose hash names no channel (an older ingress enqueued
    it), are not checked; a job read on its own (``start_reads``) is taken as heard."""
    await dequeue.load_script(mover)
    listener = aredis_client.pubsub()
    await listener.subscribe("aior:replies:alive")
    heard = completion_job("heard", reply_to="aior:replies:alive")
    gone = completion_job("gone", reply_to="aior:replies:gone")
    batch_line = completion_job("line", reply_to=keys.BATCH_REPLY_CHANNEL)
    older = completion_job("older", reply_to="aior:replies:gone")
    try:
        for job in (heard, gone, batch_line, older):
            await enqueue(aredis_client, job, Settings())
        assert clean_redis.hdel(Job.key_for(older.request_id), REPLY_CHANNEL_FIELD) == 1
        assert not clean_redis.hexists(Job.key_for(batch_line.request_id), REPLY_CHANNEL_FIELD)
        taken = await dequeue.take(mover, SOURCE, TARGET, block=1, count=4)
        assert [t.job_id for t in taken.jobs] == [j.request_id for j in (heard, gone, batch_line, older)]
        reads = [t.reads for t in taken.jobs]
        assert [r.unheard for r in reads if r is not None] == [False, True, False, False]
        alone = await run_commands(aredis_client, dequeue.start_read_commands(gone.request_id))
        assert not dequeue.start_reads(alone).unheard
    finally:
        await listener.aclose()


def test_a_read_of_another_job_is_dropped() -> None:
    """Another worker's move landed between the move and the read: the read is of its job, so it is not
    used (the worker reads its own job instead)."""
    read = [b"other", [b"status", b"queued"], 0, [], 0, 0]
    assert dequeue.taken(b"mine", read) == Taken("mine", None)
    assert dequeue.taken(b"mine", [b"mine", [b"status", b"queued"], 1, [b"d"], 2, -1]) == Taken(
        "mine", StartReads({b"status": b"queued"}, True, [b"d"])
    )
    assert dequeue.taken(b"mine", [None, [], 0, [], 0, -1]) == Taken("mine", None)
    assert dequeue.taken(None, read) is None


def test_a_blocked_move_ends_well_before_its_connection_gives_up_on_it() -> None:
    """The dequeue loop's connection drops a reply outstanding for ``REPLY_TIMEOUT``: a BLMOVE blocks
    for ``DEQUEUE_TIMEOUT`` at most, well within it, so an idle pool never looks like a frozen Redis."""
    assert DEQUEUE_TIMEOUT * 3 <= REPLY_TIMEOUT


def test_the_batch_of_moves_follows_the_queue_up_and_down() -> None:
    """The batch doubles while the queue keeps more than it (up to the prefetch), and falls back to what
    the queue held when it ran short: after a lull a worker takes a burst one job at a time at first,
    leaving the rest to the pool's other workers."""
    assert next_batch(1, wanted=1, moved=1, short=False, prefetch=64) == 2
    assert next_batch(32, wanted=32, moved=32, short=False, prefetch=64) == 64
    assert next_batch(64, wanted=64, moved=64, short=False, prefetch=64) == 64
    assert next_batch(64, wanted=3, moved=3, short=True, prefetch=64) == 3  # the queue held 3: not doubled
    assert next_batch(8, wanted=8, moved=2, short=False, prefetch=64) == 2  # another worker took the rest
    assert next_batch(8, wanted=8, moved=0, short=False, prefetch=64) == 1


async def test_a_job_taken_off_an_emptied_queue_reaches_its_second_step_before_the_next_move() -> None:
    """A job starts in a task (``_run``) that runs the upstream call in a task of its own (``complete``):
    the dequeue loop's pause lets both steps run, so the upstream request leaves before the next BLMOVE."""
    from workers.worker import _let_job_call_upstream

    steps: list[str] = []

    async def complete() -> None:
        steps.append("upstream request sent")

    async def run() -> None:
        await asyncio.get_running_loop().create_task(complete())

    loop = asyncio.get_running_loop()
    job = loop.create_task(run())  # what _launch does
    await _let_job_call_upstream()
    steps.append("next move")
    await job
    assert steps == ["upstream request sent", "next move"]
