"""The OpenAI-compatible adapter against the simulated upstream over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import orjson
import pytest

from bench.sim_stats import Counter
from bench.upstream import Upstream, start_upstream
from shared import events
from shared.errors import (
    AIORouterError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings, Timeouts
from tests.openai_spec import chunk_violations, completion_violations
from tests.waiting import eventually
from tests.workers.factories import WEATHER_TOOL, completion_job
from tests.workers.raw_server import CLOSE, Step, chunked, start_raw_server
from workers.completion import complete
from workers.providers.base import Delta
from workers.providers.openai_compatible import OpenAICompatibleProvider
from workers.publisher import FramePublisher

FAST = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=20.0)
CONTENT_EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
LAST_EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"


def provider_for(base_url: str, timeouts: Timeouts = FAST) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        ProviderSettings(
            name="upstream", kind="openai", base_url=base_url, api_key="sk-test", timeouts=timeouts
        )
    )


async def collect(provider: OpenAICompatibleProvider, job: CompletionJob) -> list[Delta]:
    try:
        return [delta async for delta in provider.stream(job)]
    finally:
        await provider.aclose()


def sim_job(model: str, **kwargs: Any) -> CompletionJob:
    return completion_job("hello", upstream_model=model, provider="upstream", **kwargs)


async def test_stream_is_normalized_into_deltas(upstream: Upstream) -> None:
    """Text tokens, one finish_reason and the upstream's usage come through as deltas."""
    deltas = await collect(provider_for(upstream.base_url), sim_job("sim?tokens=5"))
    assert "".join(d.content or "" for d in deltas) == "w0 w1 w2 w3 w4 "
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    usage = [d.usage for d in deltas if d.usage]
    assert len(usage) == 1 and usage[0] is not None and usage[0].completion_tokens == 5


async def run_complete(job: CompletionJob, provider: OpenAICompatibleProvider) -> list[events.Frame]:
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(job.reply_to)
    try:
        await complete(job, provider, FramePublisher(redis, job.reply_to, job.request_id), worker_name="w")
        frames: list[events.Frame] = []
        while not frames or not frames[-1].is_final:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            if message is not None:
                frames.append(events.decode(message["data"]))
        return frames
    finally:
        await provider.aclose()
        await pubsub.aclose()
        await redis.aclose()


async def test_streamed_tool_call_becomes_openai_exact_chunks(upstream: Upstream) -> None:
    """An upstream tool-call stream is re-emitted as schema-valid chunks with identity in the first delta."""
    job = sim_job("sim?tools", tools=[WEATHER_TOOL], include_usage=True)
    frames = await run_complete(job, provider_for(upstream.base_url))
    payload = b"".join(f.payload for f in frames[1:])
    lines = [line[6:] for line in payload.split(b"\n\n") if line]
    assert lines[-1] == b"[DONE]"
    chunks = [orjson.loads(line) for line in lines[:-1]]
    assert all(chunk_violations(c) == [] for c in chunks)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert "id" in calls[0] and calls[0]["type"] == "function" and calls[0]["function"]["name"]
    assert all(set(call) == {"index", "function"} for call in calls[1:])
    orjson.loads("".join(call["function"]["arguments"] for call in calls))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]].count("tool_calls") == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["model"] == "aiorouter/test-model"


async def test_non_stream_job_gets_one_completion_body(upstream: Upstream) -> None:
    """A non-stream client request is assembled from the upstream stream into one chat.completion."""
    frames = await run_complete(sim_job("sim?tokens=3", stream=False), provider_for(upstream.base_url))
    assert [f.kind for f in frames] == [events.START, events.DONE]
    body = orjson.loads(frames[-1].payload)
    assert completion_violations(body) == []
    assert body["choices"][0]["message"]["content"] == "w0 w1 w2 "
    assert body["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_error_statuses_become_bad_request(upstream: Upstream, status: int) -> None:
    """Upstream 400/404/413/422 become our 400 carrying the upstream's message."""
    with pytest.raises(UpstreamBadRequest) as caught:
        await collect(provider_for(upstream.base_url), sim_job(f"sim?status={status}"))
    assert caught.value.status == 400 and caught.value.message


CONTEXT_TOO_LONG = orjson.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
)


@pytest.mark.parametrize("stream", [True, False])
async def test_client_error_reaches_the_client_with_the_upstreams_code_and_param(stream: bool) -> None:
    """An upstream 400 saying context_length_exceeded is the job's error frame with that code and param
    (not upstream_bad_request and null), streamed or not: what the ingress answers and a batch line holds."""
    head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    server = await start_raw_server(
        lambda connection, request: [head % len(CONTEXT_TOO_LONG) + CONTEXT_TOO_LONG]
    )
    try:
        frames = await run_complete(sim_job("real-model", stream=stream), provider_for(server.base_url))
    finally:
        await server.close()
    error = frames[-1]
    assert error.kind == events.ERROR and error.meta["status"] == 400
    assert (error.meta["code"], error.meta["param"]) == ("context_length_exceeded", "messages")
    assert error.meta["message"] == "This model's maximum context length is 8192 tokens."


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_statuses_become_our_misconfiguration(upstream: Upstream, status: int) -> None:
    """Upstream 401/403 mean our credentials are wrong: a 500 upstream_error, not the client's fault."""
    with pytest.raises(UpstreamError) as caught:
        await collect(provider_for(upstream.base_url), sim_job(f"sim?status={status}"))
    assert caught.value.status == 500 and caught.value.code == "upstream_error"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_overload_statuses_become_unavailable_with_retry_after(upstream: Upstream, status: int) -> None:
    """Upstream 429/5xx become 503 upstream_unavailable, forwarding Retry-After."""
    with pytest.raises(UpstreamUnavailable) as caught:
        await collect(provider_for(upstream.base_url), sim_job(f"sim?status={status}&retry_after=2"))
    assert caught.value.status == 503 and caught.value.code == "upstream_unavailable"
    assert caught.value.headers == {"Retry-After": "2"}


async def test_stream_cut_midway_is_an_error(upstream: Upstream) -> None:
    """A stream closed after some content but without [DONE] or finish_reason is an upstream error."""
    deltas: list[Delta] = []
    provider = provider_for(upstream.base_url)
    with pytest.raises(UpstreamError) as caught:
        async for delta in provider.stream(sim_job("sim?tokens=10&cut=3")):
            deltas.append(delta)
    await provider.aclose()
    assert not isinstance(caught.value, UpstreamUnavailable)
    assert "".join(d.content or "" for d in deltas) == "w0 w1 w2 "


async def test_stream_cut_before_content_is_unavailable(upstream: Upstream) -> None:
    """A connection closed before any content is safe to retry elsewhere: upstream_unavailable."""
    with pytest.raises(UpstreamUnavailable):
        await collect(provider_for(upstream.base_url), sim_job("sim?tokens=10&cut=0"))


async def test_malformed_json_is_an_upstream_error(upstream: Upstream) -> None:
    """A chunk that is not JSON is reported as an upstream error."""
    with pytest.raises(UpstreamError) as caught:
        await collect(provider_for(upstream.base_url), sim_job("sim?bad_json"))
    assert caught.value.code == "upstream_error"


async def test_hung_upstream_hits_first_token_timeout(upstream: Upstream) -> None:
    """An upstream that never answers ends with upstream_timeout after the first-token timeout."""
    timeouts = Timeouts(connect=2.0, first_token=0.3, idle=5.0, total=20.0)
    with pytest.raises(UpstreamTimeout) as caught:
        await collect(provider_for(upstream.base_url, timeouts), sim_job("sim?hang"))
    assert "first-token" in caught.value.message


async def test_silent_stream_hits_idle_timeout(upstream: Upstream) -> None:
    """A stream that goes quiet between chunks longer than the idle timeout ends with upstream_timeout."""
    timeouts = Timeouts(connect=2.0, first_token=5.0, idle=0.2, total=20.0)
    with pytest.raises(UpstreamTimeout) as caught:
        await collect(provider_for(upstream.base_url, timeouts), sim_job("sim?tokens=5&itl_ms=1000"))
    assert "idle" in caught.value.message


async def test_steady_stream_outlasting_the_idle_timeout_is_not_cut(upstream: Upstream) -> None:
    """The idle timeout counts from the last chunk: a stream longer than it, never quiet that long, ends."""
    timeouts = Timeouts(connect=2.0, first_token=5.0, idle=0.4, total=20.0)
    deltas = await collect(provider_for(upstream.base_url, timeouts), sim_job("sim?tokens=12&itl_ms=100"))
    assert "".join(d.content or "" for d in deltas) == "".join(f"w{i} " for i in range(12))


async def test_long_stream_hits_total_timeout(upstream: Upstream) -> None:
    """A stream that keeps going past the total timeout ends with upstream_timeout."""
    timeouts = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=0.5)
    with pytest.raises(UpstreamTimeout) as caught:
        await collect(provider_for(upstream.base_url, timeouts), sim_job("sim?tokens=100&itl_ms=50"))
    assert "total" in caught.value.message


async def test_unreachable_upstream_is_unavailable() -> None:
    """Nothing listening on the upstream's port means upstream_unavailable."""
    server = await start_upstream()
    base_url = server.base_url
    await server.close()
    with pytest.raises(UpstreamUnavailable):
        await collect(provider_for(base_url), sim_job("sim"))


async def test_cancelling_the_job_closes_the_upstream_connection(upstream: Upstream) -> None:
    """Cancelling the task reading a stream closes its upstream connection (the upstream sees it go)."""
    provider = provider_for(upstream.base_url)
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(sim_job("sim?tokens=1000&itl_ms=20")):
            first_delta.set()

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.wait_for(first_delta.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: upstream.stats.total(Counter.CLIENT_DISCONNECTS) >= 1)
    await provider.aclose()


async def test_connections_are_kept_alive_between_jobs(upstream: Upstream) -> None:
    """Sequential jobs reuse one pooled keep-alive connection."""
    provider = provider_for(upstream.base_url)
    for _ in range(3):
        [d async for d in provider.stream(sim_job("sim?tokens=2"))]
    await provider.aclose()
    assert upstream.stats.total(Counter.CONNECTIONS) == 1
    assert upstream.stats.total(Counter.REQUESTS) == 3


async def test_request_body_forwards_client_fields() -> None:
    """The body goes upstream with model replaced, streaming with usage on, unknown fields unchanged."""
    server = await start_raw_server(lambda connection, request: [chunked(LAST_EVENT, DONE)])
    settings = ProviderSettings(name="raw", kind="openai", base_url=server.base_url, api_key="sk-1")
    provider = OpenAICompatibleProvider(settings)
    job = sim_job("real-model", temperature=0.2, vendor_extension={"a": 1}, stream_options={"other": True})
    try:
        deltas = [d async for d in provider.stream(job)]
    finally:
        await provider.aclose()
        await server.close()
    assert [d.content for d in deltas if d.content] == ["x"]
    request = server.requests[0]
    assert request.request_line == "POST /v1/chat/completions HTTP/1.1"
    assert request.headers["authorization"] == "Bearer sk-1"
    assert request.headers["accept"] == "text/event-stream"
    body = orjson.loads(request.body)
    assert body["model"] == "real-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"other": True, "include_usage": True}
    assert body["temperature"] == 0.2 and body["vendor_extension"] == {"a": 1}
    assert body["messages"] == job.body["messages"]


@pytest.mark.parametrize(
    ("steps", "error_class"),
    [
        ([b"garbage\r\n\r\n", 1.0], UpstreamUnavailable),
        ([CLOSE], UpstreamUnavailable),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + CONTENT_EVENT, CLOSE], UpstreamError),
    ],
    ids=["garbage", "closed-before-answering", "closed-mid-body"],
)
async def test_broken_answers_become_our_errors(steps: list[Step], error_class: type[Exception]) -> None:
    """Garbage or a close before content is retryable elsewhere (unavailable); a cut after content is not."""
    assert type(await error_of(steps)) is error_class


@pytest.mark.parametrize(
    "chunk",
    [
        b'{"choices": [], "usage": {"prompt_tokens": 1e23, "completion_tokens": 1}}',
        b'{"choices": [], "usage": {"prompt_tokens": -5, "completion_tokens": 1}}',
        b'{"choices": [], "usage": {"prompt_tokens": "7", "completion_tokens": 1}}',
        b'{"choices": [], "usage": {"prompt_tokens": 18446744073709551616, "completion_tokens": 1}}',
        b'{"choices": [{"index": 0, "delta": {"content": 5}}]}',
        b'{"choices": [{"index": 0, "delta": {"content": {"text": "x"}}}]}',
        b'{"choices": [{"index": 0, "delta": {"refusal": true}}]}',
        b'{"choices": [{"index": 0, "delta": {}, "finish_reason": 5}]}',
        b'{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 1}}]}}]}',
        b'{"choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": null, "finish_reason": 5}]}',
        b'{"choices": [{"index": "a", "delta": {"content": "x"}, "logprobs": null, "finish_reason": null}]}',
    ],
    ids=["huge-usage", "negative-usage", "string-usage", "2^64-usage", "int-content", "object-content",
         "bool-refusal", "int-finish", "object-arguments", "int-finish-usual-shape", "text-index"],
)  # fmt: skip
async def test_a_chunk_with_a_field_of_the_wrong_kind_is_malformed(chunk: bytes) -> None:
    """Token counts that are not whole numbers within range (negative, 1e23, past 64 bits) and text
    fields that are not strings are a malformed chunk (an upstream error), never relayed as they are
    nor left to break the job's bookkeeping later."""
    error = await error_of([chunked(CONTENT_EVENT, b"data: " + chunk + b"\n\n", DONE)])
    assert type(error) is UpstreamError and "malformed" in error.message


async def test_the_usual_chunk_shape_and_its_look_alikes_parse_field_by_field() -> None:
    """OpenAI's usual content chunk (four choice fields) gives the same delta as its fields spelled out,
    and a choice of four fields one of which is not OpenAI's keeps that field for the caller."""
    usual = b'{"choices":[{"index":1,"delta":{"content":"x"},"logprobs":null,"finish_reason":null}]}'
    look_alike = b'{"choices":[{"delta":{"content":"x"},"logprobs":null,"finish_reason":null,"x_sim":2}]}'
    deltas = await deltas_of([chunked(b"data: " + usual + b"\n\n", b"data: " + look_alike + b"\n\n")])
    assert deltas == [Delta(content="x", index=1), Delta(content="x", choice_extra={"x_sim": 2})]


async def deltas_of(steps: list[Step]) -> list[Delta]:
    """The deltas a job's call yields against a raw server answering every request with ``steps``,
    however the call ends."""
    server = await start_raw_server(lambda connection, request: steps)
    provider = provider_for(server.base_url)
    deltas: list[Delta] = []
    try:
        async for delta in provider.stream(sim_job("raw")):
            deltas.append(delta)
    except AIORouterError:
        pass
    finally:
        await provider.aclose()
        await server.close()
    return deltas


async def error_of(steps: list[Step]) -> AIORouterError:
    """The error a job's call raises against a raw server answering every request with ``steps``."""
    server = await start_raw_server(lambda connection, request: steps)
    try:
        with pytest.raises(AIORouterError) as caught:
            await collect(provider_for(server.base_url), sim_job("raw"))
    finally:
        await server.close()
    return caught.value


async def test_an_answer_held_open_after_done_ends_at_done() -> None:
    """An upstream that sends ``[DONE]`` and then neither ends its body nor closes: the answer is whole
    at once (no idle timeout, no error), and the connection, not read to its end, is not used again."""
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
    pieces = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (CONTENT_EVENT, LAST_EVENT, DONE))
    server = await start_raw_server(lambda connection, request: [head + pieces, 30.0])
    provider = provider_for(server.base_url, Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=20.0))
    started = asyncio.get_running_loop().time()
    try:
        first = [d async for d in provider.stream(sim_job("raw"))]
        second = [d async for d in provider.stream(sim_job("raw"))]
    finally:
        await provider.aclose()
        await server.close()
    assert asyncio.get_running_loop().time() - started < 4.0  # well within one idle timeout
    assert [d.content for d in first if d.content] == ["x", "x"] == [d.content for d in second if d.content]
    assert [d.finish_reason for d in first if d.finish_reason] == ["stop"]
    assert server.connections == 2


async def test_connection_close_answer_still_completes() -> None:
    """A stream answered with ``connection: close`` ends normally; the next job opens a new connection."""
    server = await start_raw_server(
        lambda connection, request: [chunked(LAST_EVENT, DONE, headers="connection: close\r\n")]
    )
    provider = provider_for(server.base_url)
    try:
        for _ in range(2):
            assert [d.content async for d in provider.stream(sim_job("raw")) if d.content] == ["x"]
    finally:
        await provider.aclose()
        await server.close()
    assert server.connections == 2


def test_a_late_event_loop_never_cuts_a_call_whose_upstream_kept_sending() -> None:
    """The idle deadline is checked lazily, and only that check expires the call.  When the event loop
    itself stalls past the deadline (a long callback, a GC pause) while the upstream keeps sending, the
    lines wait unread in the socket and the due check runs before the loop polls it: the check gives the
    call a grace to read them instead of cutting it.  A call whose upstream goes quiet still expires, as
    idle.  On uvloop, as the workers run."""
    import socket
    import threading
    import time

    import uvloop

    from shared.settings import Timeouts
    from workers.providers.upstream_call import Deadlines, DeadlineTimer

    def upstream(sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():  # a line every 10 ms, well within the 50 ms idle deadline
            sock.send(b"x\n")
            time.sleep(0.01)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        stop = threading.Event()
        sender = threading.Thread(target=upstream, args=(theirs, stop))
        sender.start()
        reader, writer = await asyncio.open_connection(sock=ours)
        clock = Deadlines(Timeouts(first_token=0.05, idle=0.05, total=60.0), loop)
        clock.first_token_seen = True
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout_at(None) as timeout:
                    timer = DeadlineTimer(clock, timeout, loop)
                    timer.move()
                    try:
                        for n in range(60):
                            await reader.readline()
                            clock.seen()
                            if n in (10, 30):
                                time.sleep(0.2)  # noqa: ASYNC251 -- the loop stalls past the deadline
                        stop.set()  # the upstream goes quiet
                        quiet_from = loop.time()
                        while True:
                            await reader.readline()
                            clock.seen()
                    finally:
                        timer.close()
            assert n == 59 and clock.which_expired() == "idle" and loop.time() - quiet_from < 2.0
        finally:
            stop.set()
            sender.join()
            writer.close()
            theirs.close()

    uvloop.run(scenario())
