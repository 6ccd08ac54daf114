"""The anthropic adapter against the simulated Anthropic API over a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from bench.anthropic_upstream import AnthropicUpstream, start_anthropic_upstream
from shared.errors import UpstreamBadRequest, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.settings import DEADLINE_GRACE, ProviderSettings, Timeouts
from tests.waiting import eventually
from tests.workers.factories import completion_job
from tests.workers.raw_server import chunked, start_raw_server
from workers.providers import make_adapter
from workers.providers.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from workers.providers.anthropic_translate import message_to_completion
from workers.providers.base import Delta, Usage

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
async def upstream() -> AsyncIterator[AnthropicUpstream]:
    """A simulated Anthropic API on a free port."""
    server = await start_anthropic_upstream(api_key="sk-ant-test")
    yield server
    await server.close()


def provider_for(base_url: str, api_key: str = "sk-ant-test", **timeouts: float) -> AnthropicProvider:
    settings = ProviderSettings(
        name="claude", kind="anthropic", base_url=base_url, api_key=api_key, timeouts=Timeouts(**timeouts)
    )
    return AnthropicProvider(settings)


def job(model: str, stream: bool = True, **body: Any) -> CompletionJob:
    """A job for the ``claude`` pool: usage requested, the user message below unless ``messages`` is given."""
    return completion_job(
        "Bonjour Montreal", upstream_model=model, stream=stream, include_usage=True, provider="claude", **body
    )


async def collect(adapter: AnthropicProvider, completion: CompletionJob) -> list[Delta]:
    return [delta async for delta in adapter.stream(completion)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.content or "" for d in deltas)


async def test_streams_text_with_finish_and_usage(upstream: AnthropicUpstream) -> None:
    """A text answer streams as content deltas, then finish_reason stop, then usage; headers are sent."""
    adapter = provider_for(upstream.base_url)
    try:
        deltas = await collect(adapter, job("claude-sim", max_tokens=64))
    finally:
        await adapter.aclose()
    assert text_of(deltas) == "Hello from Claude. You said: Bonjour Montreal"
    assert len([d for d in deltas if d.content]) == 7  # one delta per word: really streamed
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert deltas[-1].usage == Usage(2, 7)
    assert upstream.stats.last_headers["x-api-key"] == "sk-ant-test"
    assert upstream.stats.last_headers["anthropic-version"] == ANTHROPIC_VERSION
    assert upstream.stats.last_body["max_tokens"] == 64 and upstream.stats.last_body["stream"] is True


async def test_non_stream_job_yields_the_same_deltas(upstream: AnthropicUpstream) -> None:
    """A stream=false job is served by the same streamed upstream call (the writer assembles the body)."""
    adapter = provider_for(upstream.base_url)
    try:
        deltas = await collect(adapter, job("claude-sim", stream=False))
    finally:
        await adapter.aclose()
    assert text_of(deltas) == "Hello from Claude. You said: Bonjour Montreal"
    assert deltas[-1].usage == Usage(2, 7)


async def test_non_stream_upstream_message_translates_to_chat_completion(upstream: AnthropicUpstream) -> None:
    """The simulated server's non-stream message, fetched over HTTP, becomes a chat.completion."""
    body = {"model": "claude-tool", "max_tokens": 10, "messages": [{"role": "user", "content": "weather?"}]}
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": ANTHROPIC_VERSION}
    async with httpx.AsyncClient(base_url=upstream.base_url) as client:
        response = await client.post("messages", content=orjson.dumps(body), headers=headers)
    assert response.status_code == 200
    completion = message_to_completion(response.json(), model="claude-public", completion_id="c1", created=1)
    message = completion["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"location":"Montreal"}',
    }
    assert completion["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_use_both_ways(upstream: AnthropicUpstream) -> None:
    """The model's tool_use streams as a tool call; sending its result back reaches the model as a
    tool_result and the answer quotes it."""
    adapter = provider_for(upstream.base_url)
    question = [{"role": "user", "content": "Weather in Montreal?"}]
    try:
        deltas = await collect(adapter, job("claude-tool", messages=question, tools=[WEATHER_TOOL]))
        calls = [c for d in deltas for c in d.tool_calls]
        assert calls[0].index == 0 and calls[0].name == "get_weather" and calls[0].id
        assert "".join(c.arguments for c in calls) == '{"location":"Montreal"}'
        assert len(calls) > 2  # the arguments arrived in pieces
        assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]
        assert upstream.stats.last_body["tools"][0]["name"] == "get_weather"

        follow_up = [
            *question,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0].id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Montreal"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": "-5C and snowing"},
        ]
        answer = await collect(adapter, job("claude-tool", messages=follow_up, tools=[WEATHER_TOOL]))
    finally:
        await adapter.aclose()
    assert text_of(answer) == "The tool said: -5C and snowing"
    sent = upstream.stats.last_body["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "-5C and snowing"}],
    }


@pytest.mark.parametrize(
    ("model", "error_class", "retry_after"),
    [
        ("claude-overloaded", UpstreamUnavailable, None),
        ("claude-rate-limited", UpstreamUnavailable, "7"),
        ("claude-bad-request", UpstreamBadRequest, None),
        ("claude-error-event", UpstreamUnavailable, None),
    ],
)
async def test_upstream_errors_map_to_ours(
    upstream: AnthropicUpstream, model: str, error_class: type[Exception], retry_after: str | None
) -> None:
    """529 and 429 (with Retry-After) are unavailable, 400 is the client's bad request, and an
    overloaded error event before any content is unavailable (so fallback is possible)."""
    adapter = provider_for(upstream.base_url)
    try:
        with pytest.raises(error_class) as caught:
            await collect(adapter, job(model))
    finally:
        await adapter.aclose()
    assert caught.value.headers.get("Retry-After") == retry_after  # type: ignore[attr-defined]
    if error_class is UpstreamBadRequest:
        assert "prompt is too long" in str(caught.value)


async def test_wrong_api_key_is_our_configuration_error(upstream: AnthropicUpstream) -> None:
    """401 from the upstream (our key is wrong) is an UpstreamError (500), not the client's fault."""
    adapter = provider_for(upstream.base_url, api_key="sk-ant-wrong")
    try:
        with pytest.raises(UpstreamError) as caught:
            await collect(adapter, job("claude-sim"))
    finally:
        await adapter.aclose()
    assert type(caught.value) is UpstreamError and caught.value.status == 500


async def test_cut_after_content_is_an_upstream_error(upstream: AnthropicUpstream) -> None:
    """A stream cut after content started is an UpstreamError, after the content already yielded."""
    adapter = provider_for(upstream.base_url)
    seen: list[Delta] = []
    try:
        with pytest.raises(UpstreamError) as caught:
            async for delta in adapter.stream(job("claude-cut")):
                seen.append(delta)
    finally:
        await adapter.aclose()
    assert type(caught.value) is UpstreamError
    assert text_of(seen).startswith("Hello")


async def test_cut_before_content_is_unavailable(upstream: AnthropicUpstream) -> None:
    """A stream cut before any content is UpstreamUnavailable: nothing was shown, so fallback is safe."""
    adapter = provider_for(upstream.base_url)
    try:
        with pytest.raises(UpstreamUnavailable):
            await collect(adapter, job("claude-cut-early"))
    finally:
        await adapter.aclose()


async def test_hang_hits_first_token_timeout_and_closes_the_connection(upstream: AnthropicUpstream) -> None:
    """A silent upstream raises UpstreamTimeout after first_token seconds and the server sees the close."""
    adapter = provider_for(upstream.base_url, first_token=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout, match="first-token"):
            await collect(adapter, job("claude-hang"))
    finally:
        await adapter.aclose()
    assert time.monotonic() - started < 5
    await eventually(lambda: upstream.stats.client_closed)
    assert upstream.stats.client_closed == 1


async def test_cancelling_the_job_closes_the_upstream_connection(upstream: AnthropicUpstream) -> None:
    """Cancelling the consuming task (client went away) closes the upstream connection promptly."""
    adapter = provider_for(upstream.base_url)
    task = asyncio.create_task(collect(adapter, job("claude-hang")))
    await eventually(lambda: upstream.stats.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await adapter.aclose()
    await eventually(lambda: upstream.stats.client_closed)
    assert upstream.stats.client_closed == 1


async def test_unreachable_upstream_is_unavailable() -> None:
    """A refused connection is UpstreamUnavailable (retryable elsewhere)."""
    adapter = provider_for("http://127.0.0.1:1/v1")
    try:
        with pytest.raises(UpstreamUnavailable):
            await collect(adapter, job("claude-sim"))
    finally:
        await adapter.aclose()


async def test_registry_builds_the_anthropic_adapter() -> None:
    """ProviderSettings.kind = "anthropic" gives this adapter."""
    adapter = make_adapter(
        ProviderSettings(name="claude", kind="anthropic", base_url="http://127.0.0.1:1/v1")
    )
    assert isinstance(adapter, AnthropicProvider)
    await adapter.aclose()


async def test_stall_after_first_token_hits_idle_timeout() -> None:
    """An upstream that goes quiet mid-stream for longer than `idle` (and its grace) raises
    UpstreamTimeout (idle)."""
    slow = await start_anthropic_upstream(token_delay=0.15 + DEADLINE_GRACE + 0.2)
    adapter = provider_for(slow.base_url, first_token=5.0, idle=0.15)
    seen: list[Delta] = []
    try:
        with pytest.raises(UpstreamTimeout, match="idle"):
            async for delta in adapter.stream(job("claude-sim")):
                seen.append(delta)
    finally:
        await adapter.aclose()
        await slow.close()
    assert len([d for d in seen if d.content]) <= 1


@pytest.mark.parametrize(
    "event",
    [
        b'{"type": "content_block_delta", "index": "abc", "delta": {"type": "text_delta", "text": "x"}}',
        b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}}',
        b'{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1e23}}',
        b'{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": -1}}',
        b'{"type": "error", "error": "overloaded"}',
    ],
    ids=["string-index", "int-text", "huge-usage", "negative-usage", "string-error"],
)
async def test_an_event_with_a_field_of_the_wrong_kind_is_malformed(event: bytes) -> None:
    """An event whose fields are not what Anthropic sends (an index that is no number, text that is no
    string, token counts out of range, an error that is no object) is a clean upstream error naming a
    malformed event, never a traceback nor a value relayed as it is."""
    start = b'{"type": "message_start", "message": {"usage": {"input_tokens": 1}}}'
    steps = [chunked(*(b"event: x\ndata: " + e + b"\n\n" for e in (start, event)))]
    server = await start_raw_server(lambda connection, request: steps)
    adapter = provider_for(server.base_url)
    try:
        with pytest.raises(UpstreamError, match="malformed event"):
            await collect(adapter, job("claude-sim"))
    finally:
        await adapter.aclose()
        await server.close()


async def test_a_body_that_ends_after_message_stop_keeps_its_connection_for_the_next_call() -> None:
    """The body's end may come a moment after ``message_stop`` (in a write of its own): it is read, and
    the next call goes out on the same connection instead of a new one (a new TLS handshake)."""
    events = [
        b'{"type": "message_start", "message": {"usage": {"input_tokens": 1}}}',
        b'{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}',
        b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}',
        b'{"type": "content_block_stop", "index": 0}',
        b'{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}',
        b'{"type": "message_stop"}',
    ]
    whole = chunked(*(b"event: x\ndata: " + event + b"\n\n" for event in events))
    answer, end = whole.removesuffix(b"0\r\n\r\n"), b"0\r\n\r\n"
    server = await start_raw_server(lambda connection, request: [answer, 0.01, end])
    adapter = provider_for(server.base_url)
    try:
        for _ in range(2):
            assert text_of(await collect(adapter, job("claude-sim"))) == "hi"
    finally:
        await adapter.aclose()
        await server.close()
    assert server.connections == 1
