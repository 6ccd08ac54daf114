"""``upstream_stream = "as_requested"``: a non-stream request is one JSON call upstream, and its answer is the
one the streamed call gives; a stream request still streams."""

from __future__ import annotations

from typing import Any

import fakeredis
import orjson
import pytest

from bench.upstream import Upstream
from shared import events
from shared.errors import AIORouterError, ConfigError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings, Timeouts, UpstreamStream, settings_from_mapping
from tests.openai_spec import completion_violations
from tests.workers.factories import WEATHER_TOOL, completion_job
from tests.workers.raw_server import CLOSE, start_raw_server
from workers.completion import complete
from workers.providers.base import Delta
from workers.providers.openai_compatible import OpenAICompatibleProvider
from workers.publisher import FramePublisher

FAST = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=20.0)


def provider_for(
    base_url: str, upstream_stream: UpstreamStream = "as_requested", timeouts: Timeouts = FAST
) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        ProviderSettings(
            name="upstream",
            kind="openai",
            base_url=base_url,
            timeouts=timeouts,
            upstream_stream=upstream_stream,
        )
    )


def job_for(model: str, *, stream: bool = False, **body: Any) -> CompletionJob:
    return completion_job("hello", upstream_model=model, provider="upstream", stream=stream, **body)


async def collect(provider: OpenAICompatibleProvider, job: CompletionJob) -> list[Delta]:
    try:
        return [delta async for delta in provider.stream(job)]
    finally:
        await provider.aclose()


async def final_body(job: CompletionJob, provider: OpenAICompatibleProvider) -> dict[str, Any]:
    """The chat.completion the worker publishes for ``job`` (its D frame's payload)."""
    redis = fakeredis.FakeAsyncRedis()
    pubsub = redis.pubsub()
    await pubsub.subscribe(job.reply_to)
    try:
        await complete(job, provider, FramePublisher(redis, job.reply_to, job.request_id), worker_name="w")
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            if message is not None:
                frame = events.decode(message["data"])
                if frame.is_final:
                    assert frame.kind == events.DONE, frame
                    body: dict[str, Any] = orjson.loads(frame.payload)
                    return body
    finally:
        await provider.aclose()
        await pubsub.aclose()
        await redis.aclose()


@pytest.mark.parametrize(
    ("model", "body"),
    [("sim?tokens=7", {}), ("sim?tools", {"tools": [WEATHER_TOOL]})],
    ids=["text", "tool-call"],
)
async def test_json_call_answers_as_the_streamed_call_does(
    upstream: Upstream, model: str, body: dict[str, Any]
) -> None:
    """The same non-stream job through a streamed call and through a JSON call: the same chat.completion
    (content or tool call, finish reason, usage), and the upstream saw one stream and one JSON call."""
    streamed_job = job_for(model, **body)
    json_job = job_for(model, **body)
    streamed = await final_body(streamed_job, provider_for(upstream.base_url, "always"))
    assert upstream.stats.streams == 1
    answered = await final_body(json_job, provider_for(upstream.base_url))
    assert upstream.stats.requests == 2 and upstream.stats.streams == 1  # the second call did not stream
    assert completion_violations(answered) == []
    assert answered["id"] == f"chatcmpl-{json_job.request_id}"
    assert without_ids(answered) == without_ids(streamed)


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without its id and its tool calls' ids (the simulated upstream draws those at random)."""
    body = {**body, "id": None}
    for choice in body["choices"]:
        for call in choice["message"].get("tool_calls") or ():
            assert call["id"].startswith("call_")
            call["id"] = None
    return body


async def test_stream_request_still_streams(upstream: Upstream) -> None:
    """``as_requested`` changes nothing for a request that asked for a stream."""
    deltas = await collect(provider_for(upstream.base_url), job_for("sim?tokens=4", stream=True))
    assert "".join(d.content or "" for d in deltas) == "w0 w1 w2 w3 "
    assert upstream.stats.streams == 1


def json_answer(answer: dict[str, Any]) -> bytes:
    body = orjson.dumps(answer)
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


ANSWER = {
    "id": "chatcmpl-upstream",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream-model",
    "service_tier": "default",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi there", "refusal": None, "annotations": []},
            "logprobs": {
                "content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}],
                "refusal": None,
            },
            "finish_reason": "stop",
            "content_filter_results": {"hate": {"filtered": False}},
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


async def test_json_call_body_and_fields_beyond_ours_are_relayed() -> None:
    """The call sends ``stream: false`` without ``stream_options`` (and accepts JSON); the answer's fields
    beyond the ones the router writes (answer, choice and message extras, logprobs, fingerprint) reach
    the client's chat.completion."""
    server = await start_raw_server(lambda conn, req: [json_answer(ANSWER)])
    try:
        job = job_for("upstream-model", stream_options={"include_usage": True})
        body = await final_body(job, provider_for(server.base_url))
    finally:
        await server.close()
    [request] = server.requests
    sent = orjson.loads(request.body)
    assert sent["stream"] is False and "stream_options" not in sent and sent["model"] == "upstream-model"
    assert "application/json" in request.headers["accept"]
    assert completion_violations(body) == []
    assert body["service_tier"] == "default" and body["system_fingerprint"] == "fp_1"
    [choice] = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "hi there",
        "refusal": None,
        "annotations": [],
    }
    assert choice["logprobs"] == ANSWER["choices"][0]["logprobs"]  # type: ignore[index]
    assert choice["content_filter_results"] == {"hate": {"filtered": False}}
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"[1, 2]", UpstreamError),
        (b"{not json", UpstreamError),
        (orjson.dumps({"object": "chat.completion", "choices": []}), UpstreamError),
        (orjson.dumps({"error": {"message": "overloaded"}}), UpstreamError),
        (orjson.dumps({"choices": [{"index": 0, "message": {"content": 5}}]}), UpstreamError),
    ],
    ids=["array", "garbage", "no-choices", "error-object", "content-not-text"],
)
async def test_malformed_json_answer_is_an_upstream_error(answer: bytes, error: type[AIORouterError]) -> None:
    """An answer that is no chat.completion fails the call with a clear error, never a crash."""
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(answer)}\r\n\r\n"
    server = await start_raw_server(lambda conn, req: [head.encode() + answer])
    try:
        with pytest.raises(error) as caught:
            await collect(provider_for(server.base_url), job_for("m"))
    finally:
        await server.close()
    assert "upstream" in caught.value.message


async def test_json_answer_cut_short_is_unavailable() -> None:
    """A connection closed before the whole answer came: nothing reached the client, so the call is
    unavailable (the ingress may fall back), not a 500."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n"
    server = await start_raw_server(lambda conn, req: [head + b'{"choices": [', CLOSE])
    try:
        with pytest.raises(UpstreamUnavailable):
            await collect(provider_for(server.base_url), job_for("m"))
    finally:
        await server.close()


async def test_json_call_waits_past_the_first_token_deadline(upstream: Upstream) -> None:
    """A JSON answer comes whole at the end: the first-token deadline does not apply to it (the same
    answer, streamed, is too slow for it), the total deadline does."""
    slow = Timeouts(connect=2.0, first_token=0.2, idle=0.2, total=20.0)
    with pytest.raises(UpstreamTimeout, match="first-token"):
        await collect(provider_for(upstream.base_url, "always", slow), job_for("sim?latency_ms=1500"))
    deltas = await collect(provider_for(upstream.base_url, timeouts=slow), job_for("sim?latency_ms=1500"))
    assert "".join(d.content or "" for d in deltas)
    hung = Timeouts(connect=2.0, first_token=0.2, idle=0.2, total=0.6)
    with pytest.raises(UpstreamTimeout, match="total timeout"):
        await collect(provider_for(upstream.base_url, timeouts=hung), job_for("sim?hang"))
    unanswered = Timeouts(connect=2.0, first_token=0.2, idle=0.2, total=20.0, answer=0.6)
    with pytest.raises(UpstreamTimeout, match="answer timeout"):
        await collect(provider_for(upstream.base_url, timeouts=unanswered), job_for("sim?hang"))


def test_json_calls_must_fail_before_the_job_is_stopped() -> None:
    """A hung JSON call must end with its own timeout (which falls back and counts against the breaker)
    before job_timeout stops the job (which does neither): a provider whose attempts may outlast it is
    refused at start-up; the defaults fit."""
    base = {"kind": "openai", "base_url": "https://up.example/v1", "upstream_stream": "as_requested"}
    models = [{"id": "m", "provider": "up"}]
    loaded = settings_from_mapping({"providers": {"up": base}, "models": models})
    assert loaded.providers["up"].timeouts.answer == 300.0
    too_long = {**base, "timeouts": {"answer": 500}}
    with pytest.raises(ConfigError, match="job_timeout"):
        settings_from_mapping({"providers": {"up": too_long}, "models": models})
    with pytest.raises(ConfigError, match="job_timeout"):
        settings_from_mapping({"providers": {"up": base}, "models": models, "job_timeout": 300})
    with pytest.raises(ConfigError, match=r"timeouts\.answer must be a positive"):
        settings_from_mapping({"providers": {"up": {**base, "timeouts": {"answer": -1}}}, "models": models})


@pytest.mark.parametrize("client", ["fast", "httpx"])
async def test_a_json_answer_past_the_body_bound_is_an_error_not_retried(client: str) -> None:
    """An answer over MAX_BODY_BYTES is cut at the bound by either HTTP client (never read whole into
    memory) and fails as an upstream error: not retryable, since it would be as large again."""
    from workers.providers.upstream_http import MAX_BODY_BYTES

    size = MAX_BODY_BYTES + 1024 * 1024
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
    server = await start_raw_server(lambda conn, req: [head.encode() + b" " * size])
    try:
        provider = OpenAICompatibleProvider(
            ProviderSettings(
                name="upstream",
                kind="openai",
                base_url=server.base_url,
                timeouts=FAST,
                upstream_stream="as_requested",
                http_client=client,  # type: ignore[arg-type]
            )
        )
        with pytest.raises(UpstreamError, match="longer than"):
            await collect(provider, job_for("m"))
    finally:
        await server.close()


async def test_an_answer_without_usage_is_counted_by_its_words() -> None:
    """Without the upstream's usage a JSON answer's completion tokens are estimated from its text (as a
    prompt's are), not from its one delta per choice."""
    answer = {"choices": [{"index": 0, "message": {"content": "word " * 500}, "finish_reason": "stop"}]}
    server = await start_raw_server(lambda conn, req: [json_answer(answer)])
    try:
        body = await final_body(job_for("m"), provider_for(server.base_url))
    finally:
        await server.close()
    assert body["usage"]["completion_tokens"] == 500


async def test_choices_without_an_index_keep_their_places() -> None:
    """Two choices that name no index are choices 0 and 1 (their places), not two halves of choice 0."""
    answer = {
        "choices": [
            {"message": {"content": "first"}, "finish_reason": "stop"},
            {"message": {"content": "second"}, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    server = await start_raw_server(lambda conn, req: [json_answer(answer)])
    try:
        body = await final_body(job_for("m", n=2), provider_for(server.base_url))
    finally:
        await server.close()
    assert [(c["index"], c["message"]["content"]) for c in body["choices"]] == [(0, "first"), (1, "second")]


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            {"kind": "openai", "upstream_stream": "never"},
            'upstream_stream must be "always" or "as_requested"',
        ),
        ({"kind": "anthropic", "upstream_stream": "as_requested"}, "for openai providers only"),
        ({"kind": "simulated", "upstream_stream": "as_requested"}, "for openai providers only"),
    ],
)
def test_settings_refuse_what_no_adapter_does(provider: dict[str, Any], message: str) -> None:
    """An unknown value, or JSON calls asked of an adapter that always streams, fail at start-up."""
    raw = {"providers": {"up": {"base_url": "https://up.example/v1", **provider}}}
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(raw)
