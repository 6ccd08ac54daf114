"""complete(): one job from adapter deltas to its S/C/D or E frames, with the simulated provider or fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import fakeredis
import orjson
import pytest
from redis import exceptions as redis_exceptions

from shared import batch_lines, events, keys, pool_stats
from shared.batch_lines import LineRef
from shared.errors import IngressGone, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.redis_commands import Command
from shared.settings import ProviderSettings
from tests.openai_spec import chunk_violations, completion_violations
from tests.workers.factories import WEATHER_TOOL, completion_job
from workers import completion
from workers.completion import JobEnding, complete
from workers.providers.base import Delta, ProviderAdapter
from workers.providers.simulated import SimulatedProvider
from workers.publisher import FramePublisher


class ScriptedProvider:
    """A provider adapter that yields the given deltas, then raises ``error`` if one is given."""

    def __init__(self, deltas: Sequence[Delta], error: Exception | None = None) -> None:
        self._deltas = deltas
        self._error = error

    def streams(self, job: CompletionJob) -> bool:
        return True

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        for delta in self._deltas:
            yield delta
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        return None


async def frames_for(
    job: CompletionJob,
    adapter: ProviderAdapter,
    bookkeeping: list[Command] | None = None,
    redis: fakeredis.FakeAsyncRedis | None = None,
) -> tuple[JobEnding, list[events.Frame]]:
    redis = redis or fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(job.reply_to)
    ending = await complete(
        job,
        adapter,
        FramePublisher(redis, job.reply_to, job.request_id),
        worker_name="worker-1",
        bookkeeping_commands=lambda _: bookkeeping or [],
    )
    frames: list[events.Frame] = []
    while not frames or not frames[-1].is_final:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        if message is not None:
            frames.append(events.decode(message["data"]))
    await pubsub.aclose()
    return ending, frames


def sse_chunks(frames: list[events.Frame]) -> list[dict[str, object]]:
    payload = b"".join(f.payload for f in frames if f.kind in (events.CHUNKS, events.DONE))
    lines = [line[6:] for line in payload.split(b"\n\n") if line]
    assert lines[-1] == b"[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def simulated() -> SimulatedProvider:
    return SimulatedProvider(ProviderSettings(name="simulated"))


async def test_stream_tool_call_chunks_validate() -> None:
    """A simulated tool call streams as schema-valid chunks ending in one tool_calls finish and usage."""
    job = completion_job("Paris", tools=[WEATHER_TOOL], include_usage=True)
    ending, frames = await frames_for(job, simulated())
    chunks = sse_chunks(frames)
    assert all(chunk_violations(c) == [] for c in chunks)
    start = {**frames[0].meta}
    assert start.pop("held_ms") >= 0  # it waited for the first content, and went out with it
    assert start == {"provider": "simulated", "worker": "worker-1", "upstream_model": "echo"}
    assert frames[1].kind == events.CHUNKS
    assert ending.ok and ending.meta["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == ending.meta["usage"]


async def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    """Without include_usage the stream ends with the finish chunk and [DONE], yet D meta has usage."""
    _, frames = await frames_for(completion_job("a b"), simulated())
    chunks = sse_chunks(frames)
    assert all(c["choices"] for c in chunks)
    assert frames[-1].meta["usage"]["completion_tokens"] == 2


async def test_with_include_usage_every_chunk_has_a_usage_field_null_until_the_usage_chunk() -> None:
    """OpenAI's stream with ``include_usage``: each chunk carries ``usage``, null on all but the last."""
    job = completion_job("one two three", include_usage=True)
    ending, frames = await frames_for(job, simulated())
    chunks = sse_chunks(frames)
    assert all(chunk_violations(c) == [] for c in chunks)
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["usage"] == ending.meta["usage"] and chunks[-1]["choices"] == []


async def test_non_stream_json_schema_body_validates() -> None:
    """A non-stream json_schema answer is a valid chat.completion whose content parses as JSON."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    job = completion_job("Lyon", stream=False, response_format=response_format)
    _, frames = await frames_for(job, simulated())
    assert [f.kind for f in frames] == [events.START, events.DONE]
    body = orjson.loads(frames[-1].payload)
    assert completion_violations(body) == []
    assert orjson.loads(body["choices"][0]["message"]["content"]) == {"city": "Lyon"}


async def test_error_after_content_sends_chunks_then_error() -> None:
    """An adapter error mid-stream: the content already produced goes out, then one E frame."""
    adapter = ScriptedProvider([Delta(content="partial")], UpstreamUnavailable("gone"))
    ending, frames = await frames_for(completion_job(), adapter)
    assert [f.kind for f in frames][-1] == events.ERROR
    assert b"partial" in b"".join(f.payload for f in frames)
    assert frames[-1].meta["code"] == "upstream_unavailable" and frames[-1].meta["status"] == 503
    assert ending.error is not None


async def test_stream_ending_without_finish_reason_is_an_error() -> None:
    """An adapter that stops without a finish_reason produces an upstream_error E frame."""
    _, frames = await frames_for(completion_job(stream=False), ScriptedProvider([Delta(content="x")]))
    assert frames[-1].kind == events.ERROR and frames[-1].meta["code"] == "upstream_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_that_ignores_n_gives_the_choice_it_answered(stream: bool) -> None:
    """n=2 to an upstream that answers one choice: that choice is the answer, not an error."""
    adapter = ScriptedProvider([Delta(content="only one"), Delta(finish_reason="stop")])
    ending, frames = await frames_for(completion_job(stream=stream, n=2), adapter)
    assert ending.ok and frames[-1].kind == events.DONE
    if stream:
        choices = [c["choices"] for c in sse_chunks(frames)]
        assert {choice["index"] for listed in choices for choice in listed} == {0}
    else:
        body = orjson.loads(frames[-1].payload)
        assert [c["message"]["content"] for c in body["choices"]] == ["only one"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_choice_started_and_not_finished_is_a_cut_answer(stream: bool) -> None:
    """n=2 where the second choice began but never finished: an upstream_error, not a partial answer."""
    deltas = [Delta(content="a"), Delta(content="b", index=1), Delta(finish_reason="stop")]
    _, frames = await frames_for(completion_job(stream=stream, n=2), ScriptedProvider(deltas))
    assert frames[-1].kind == events.ERROR and frames[-1].meta["code"] == "upstream_error"


async def test_adapter_bug_still_ends_with_an_error_frame() -> None:
    """An unexpected exception in an adapter becomes a 500 E frame instead of a silent hang."""
    _, frames = await frames_for(completion_job(), ScriptedProvider([], KeyError("bug")))
    assert frames[-1].kind == events.ERROR and frames[-1].meta["status"] == 500


async def test_bookkeeping_commands_follow_the_final_frame() -> None:
    """rq's bookkeeping commands for the job's ending are written once the final frame landed, before
    complete() returns."""
    redis = fakeredis.FakeAsyncRedis()
    bookkeeping: list[Command] = [(("SET", "bookkeeping-marker", "1"), {})]
    ending, frames = await frames_for(completion_job(), simulated(), bookkeeping, redis)
    assert ending.ok and frames[-1].kind == events.DONE
    assert await redis.get("bookkeeping-marker") == b"1"
    await redis.aclose()


class EndlessProvider:
    """A provider adapter that yields one word per call, forever."""

    def streams(self, job: CompletionJob) -> bool:
        return True

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        while True:
            yield Delta(content="word ")
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("stream", [True, False])
async def test_a_job_nobody_listens_to_stops_with_what_it_produced(stream: bool) -> None:
    """A job whose reply channel has no subscriber (its ingress died) stops within a few deltas instead of
    running to its end, and its outcome carries the usage produced so far, for its usage record."""
    redis = fakeredis.FakeAsyncRedis()
    job = completion_job(stream=stream)
    publisher = FramePublisher(redis, job.reply_to, job.request_id)
    outcome = await asyncio.wait_for(complete(job, EndlessProvider(), publisher, worker_name="w"), 5)
    assert isinstance(outcome.error, IngressGone)
    assert outcome.meta["usage"]["completion_tokens"] > 0


async def test_a_job_counts_in_its_pool_minute() -> None:
    """A job that succeeds counts in one TTFT bucket of its pool's current minute, one that fails as an
    error, both written right after the final frame."""
    redis = fakeredis.FakeAsyncRedis()
    minute = pool_stats.minute_of(time.time())
    await frames_for(completion_job(), simulated(), redis=redis)
    await frames_for(completion_job(), ScriptedProvider([], UpstreamUnavailable("down")), redis=redis)
    counts = [  # the minute may turn while the jobs run
        pool_stats.MinuteCounts.parse(m, await redis.hgetall(keys.pool_minute("simulated", str(m))))
        for m in (minute, minute + 1)
    ]
    assert sum(c.jobs for c in counts) == 2 and sum(c.errors for c in counts) == 1
    assert sum(sum(c.buckets) for c in counts) == 1
    await redis.aclose()


async def test_a_json_answer_over_its_bound_is_an_error_not_one_huge_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-stream answer larger than MAX_JSON_ANSWER_BYTES ends with an upstream error frame instead
    of being published whole (one message the ingress' pub/sub connection could not hold)."""
    monkeypatch.setattr(completion, "MAX_JSON_ANSWER_BYTES", 10_000)
    deltas = [Delta(content="x" * 1_000) for _ in range(20)] + [Delta(finish_reason="stop")]
    ending, frames = await frames_for(completion_job("hi", stream=False), ScriptedProvider(deltas))
    assert frames[-1].kind == events.ERROR and frames[-1].meta["code"] == "upstream_error"
    assert "longer than 10000 bytes" in frames[-1].meta["message"]
    assert all(len(f.payload) < 10_000 for f in frames)
    assert ending.error is not None


class DropsFirstPipeline(fakeredis.FakeAsyncRedis):
    """fakeredis whose first pipeline is lost on the way: a connection error, nothing of it run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dropped = False

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        if not self.dropped:
            self.dropped = True

            async def lost(*args: Any, **kwargs: Any) -> Any:
                raise redis_exceptions.ConnectionError("lost before it ran")

            pipe.execute = lost  # type: ignore[method-assign]
        return pipe


async def test_a_batch_line_result_lost_with_the_final_round_trip_is_in_its_retry() -> None:
    """The final frame's round trip is retried with its idempotent part only; a batch line's result is
    part of it (recorded once whatever the tries): a line charged without its result would run again."""
    redis = DropsFirstPipeline()
    ref = LineRef("batch_x", 0, "c-0")
    job = CompletionJob(
        "req-line",
        "",
        "m",
        "simulated",
        "echo",
        False,
        False,
        {"messages": []},
        0,
        extra={batch_lines.EXTRA_KEY: ref.to_wire()},
    )
    await redis.hset(keys.batch_inflight("batch_x"), "0", orjson.dumps({"job": "req-line", "attempt": 1}))
    publisher = FramePublisher(redis, keys.BATCH_REPLY_CHANNEL, job.request_id, listened=False)
    ending = await complete(
        job, ScriptedProvider([Delta(content="hi"), Delta(finish_reason="stop")]), publisher, worker_name="w"
    )
    assert ending.ok and redis.dropped
    result = await redis.hget(keys.batch_results("batch_x"), "0")
    assert isinstance(result, bytes) and result.startswith(batch_lines.OUTPUT)


def test_a_call_answered_whole_gives_its_pool_no_time_to_first_token() -> None:
    """The pool's minute statistics take a job's time to first token only from a streamed call: a JSON
    call's first piece came with its whole answer."""
    from workers.completion import Progress

    whole = Progress(started=10.0, first_part_at=12.5, streamed=False)
    streamed = Progress(started=10.0, first_part_at=12.5)
    assert whole.ttft() is None and streamed.ttft() == 2.5
