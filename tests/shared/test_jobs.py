"""The completion job: its wire form, and enqueue commands that make a genuine rq job on a real Redis."""

from __future__ import annotations

import zlib

import redis
import redis.asyncio as aredis
from rq.job import Job
from rq.queue import Queue

from shared import keys
from shared.jobs import (
    JOB_FUNC,
    REPLY_CHANNEL_FIELD,
    CompletionJob,
    diagnostic_call,
    enqueue_commands,
    prompt_head,
    rq_enqueue_commands,
)
from shared.redis_commands import replay
from shared.serialization import OrjsonSerializer
from tests.store_calls import command_names


def _job(request_id: str = "req-1") -> CompletionJob:
    return CompletionJob(
        request_id=request_id,
        reply_to=keys.reply_channel("ingress-1"),
        model="aiorouter/echo",
        provider="simulated",
        upstream_model="echo",
        stream=True,
        include_usage=False,
        body={"model": "aiorouter/echo", "messages": [{"role": "user", "content": "hi"}]},
        created=1_780_272_000,
        account_id="acme",
        key_id="key_1",
    )


def test_wire_round_trip() -> None:
    """A job survives to_wire → orjson → from_wire unchanged."""
    job = _job()
    assert CompletionJob.from_wire(OrjsonSerializer.loads(OrjsonSerializer.dumps(job.to_wire()))) == job


def test_enqueue_commands_only_record() -> None:
    """Building the commands does no I/O and ends by pushing the id onto the pool's queue."""
    commands = enqueue_commands(_job(), job_timeout=900, result_ttl=60, failure_ttl=3_600)
    names = [name.upper() for name in command_names(commands)]
    assert "HSET" in names and names[-1] in ("RPUSH", "LPUSH")
    assert commands[-1][0][1] == keys.rq_queue_key("simulated")


async def test_replayed_commands_make_a_real_rq_job(aredis_client: aredis.Redis, redis_url: str) -> None:
    """Replayed on Redis, the commands leave a job rq reads back: queued, its function, argument, TTLs."""
    job = _job("req-e2e")
    async with aredis_client.pipeline(transaction=True) as pipe:
        replay(pipe, enqueue_commands(job, job_timeout=900, result_ttl=60, failure_ttl=3_600))
        await pipe.execute()
    connection = redis.Redis.from_url(redis_url)
    try:
        queue = Queue("simulated", connection=connection, serializer=OrjsonSerializer)
        assert queue.job_ids == ["req-e2e"]
        assert keys.rq_queue_key("simulated").encode() in connection.smembers(keys.RQ_QUEUES_SET)
        fetched = Job.fetch("req-e2e", connection=connection, serializer=OrjsonSerializer)
        assert fetched.func_name == JOB_FUNC and fetched.get_status() == "queued"
        assert CompletionJob.from_wire(fetched.args[0]) == job
        assert (fetched.timeout, fetched.result_ttl, fetched.failure_ttl) == (900, 60, 3_600)
        assert "aiorouter/echo" in (fetched.description or "")
        assert connection.hget(Job.key_for("req-e2e"), REPLY_CHANNEL_FIELD) == job.reply_to.encode()
    finally:
        connection.close()


def test_a_batch_lines_job_names_no_reply_channel() -> None:
    """A batch line's job (its channel has no subscriber, by design) carries no reply channel field: the
    worker's take script does not check it."""
    line = CompletionJob.from_wire({**_job().to_wire(), "reply_to": keys.BATCH_REPLY_CHANNEL})
    (args, _), *_ = enqueue_commands(
        line, job_timeout=900, result_ttl=0, failure_ttl=3_600, queue=keys.batch_lane("simulated")
    )
    assert args[0] == "HSET" and REPLY_CHANNEL_FIELD not in args[2::2]


def call_as_rq_reads_it(data: bytes) -> bytes:
    """A record's call as rq's ``Job.restore`` reads it: decompressed, or as it is if no zlib stream."""
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


def test_enqueue_commands_write_the_hash_rq_writes() -> None:
    """The templated commands carry exactly rq's fields and values (times aside, and the call compressed
    or not, its own way: see ``test_serialization``), then the job's reply channel, and rq's other
    writes."""
    job = _job("req-template")
    ours = enqueue_commands(job, job_timeout=900, result_ttl=60, failure_ttl=3_600)
    theirs = rq_enqueue_commands(job, job_timeout=900, result_ttl=60, failure_ttl=3_600)
    times = {"created_at", "enqueued_at"}

    def without_times(command: tuple[object, ...]) -> dict[object, object]:
        pairs = dict(zip(command[2::2], command[3::2], strict=True))
        assert times <= pairs.keys()
        fields = {name: value for name, value in pairs.items() if name not in times}
        assert isinstance(fields["data"], bytes)
        return {**fields, "data": call_as_rq_reads_it(fields["data"])}

    assert without_times(ours[0][0]) == {
        **without_times(theirs[1][0]),
        REPLY_CHANNEL_FIELD: keys.reply_channel("ingress-1"),
    }
    assert list(without_times(ours[0][0]))[-1] == REPLY_CHANNEL_FIELD
    assert ours[0][0][1] == theirs[1][0][1] == Job.key_for("req-template")
    assert [args for args, _ in ours[1:]] == [args for args, _ in theirs[2:]]
    other_pool = enqueue_commands(
        CompletionJob.from_wire({**job.to_wire(), "provider": "other"}),
        job_timeout=900,
        result_ttl=60,
        failure_ttl=3_600,
    )
    assert other_pool[-1][0] == ("RPUSH", keys.rq_queue_key("other"), "req-template")


def test_prompt_head_takes_the_first_bytes_of_every_messages_text() -> None:
    """The excerpt follows the messages in order (text parts too), never splits a character, and stops
    at the byte limit however long the prompt."""
    messages = [
        {"role": "system", "content": "é" * 3},
        {"role": "user", "content": [{"type": "text", "text": "abc"}, {"type": "image_url"}]},
        {"role": "user", "content": "z" * 1_000_000},
    ]
    assert prompt_head(messages, 0) == ""
    assert prompt_head(messages, 5) == "éé"
    assert prompt_head(messages, 12) == "ééé\nabc\nz"
    assert len(prompt_head(messages, 256).encode()) == 256
    assert prompt_head("not a list", 10) == ""


def test_diagnostic_call_keeps_the_job_without_its_body() -> None:
    """The diagnostic copy is a genuine rq call whose argument is the job with its body summarized."""
    job = _job()
    func, instance, (wire,), kwargs = OrjsonSerializer.loads(
        diagnostic_call(job, body_bytes=99, prompt_bytes=3)
    )
    assert (func, instance, kwargs) == (JOB_FUNC, None, {})
    assert wire == {
        **job.to_wire(),
        "body": {"stripped": True, "bytes": 99, "messages": 1, "prompt_head": "hi"},
    }
