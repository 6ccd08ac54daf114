"""The `openai` provider kind end to end: SDK → ingress → worker → simulated OpenAI-compatible upstream
on a real socket (bench.upstream), including upstream errors, a stream cut mid-way and a hung upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageCustomToolCall

from bench.sim_payloads import TOOL_ARGUMENTS, TOOL_INPUT, expected_content
from bench.upstream import UpstreamThread
from tests.e2e.running_system import RunningSystem, SystemLauncher

HELLO = [{"role": "user", "content": "Hello upstream"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
SQL_TOOL = {"type": "custom", "custom": {"name": "run_sql", "format": {"type": "text"}}}
HANG_TIMEOUT = 2.0  # the provider's first-token timeout in CONFIG


def config(base_url: str) -> str:
    models = {
        "e2e/sim": "sim?tokens=5",
        "e2e/tools": "sim?tools",
        "e2e/unavailable": "sim?status=503&retry_after=7",
        "e2e/rejects": "sim?status=400",
        "e2e/cut": "sim?tokens=20&cut=3",
        "e2e/hang": "sim?hang",
    }
    catalog = "".join(
        f'\n[[models]]\nid = "{public}"\nprovider = "upstream"\nupstream_model = "{upstream}"\n'
        for public, upstream in models.items()
    )
    return f"""
worker_heartbeat_interval = 0.5
worker_dead_after = 3.0

[providers.upstream]
kind = "openai"
base_url = "{base_url}"
api_key = "sk-e2e"

[providers.upstream.timeouts]
connect = 2.0
first_token = {HANG_TIMEOUT}
idle = {HANG_TIMEOUT}
total = 30.0

[breaker]
failure_threshold = 1000
{catalog}"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    with UpstreamThread() as running:
        yield running


@pytest.fixture(scope="module")
def system(launch_system: SystemLauncher, upstream: UpstreamThread) -> RunningSystem:
    """The system with one worker of the `upstream` pool, an `openai`-kind provider."""
    return launch_system(config(upstream.upstream.base_url), pools=["upstream"])


@pytest.fixture
def client(system: RunningSystem) -> openai.OpenAI:
    return system.client(timeout=30)


def _error(exc: openai.APIStatusError) -> dict[str, object]:
    error: dict[str, object] = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_non_stream_through_the_adapter(client: openai.OpenAI) -> None:
    """A non-stream answer carries the upstream's text under our model id, with usage and X-Provider."""
    raw = client.chat.completions.with_raw_response.create(model="e2e/sim", messages=HELLO)
    completion = raw.parse()
    assert raw.headers["x-provider"] == "upstream"
    assert completion.model == "e2e/sim" and completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected_content(5)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


def test_stream_through_the_adapter(client: openai.OpenAI) -> None:
    """Upstream chunks are normalized: role first only, text in order, one finish_reason, then usage."""
    chunks = list(
        client.chat.completions.create(
            model="e2e/sim", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    usage_chunk, content_chunks = chunks[-1], chunks[:-1]
    assert usage_chunk.choices == [] and usage_chunk.usage and usage_chunk.usage.completion_tokens == 5
    deltas = [c.choices[0].delta for c in content_chunks]
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert "".join(d.content or "" for d in deltas) == expected_content(5)
    assert [c.choices[0].finish_reason for c in content_chunks if c.choices[0].finish_reason] == ["stop"]
    assert {c.model for c in chunks} == {"e2e/sim"}


def test_tool_call_through_the_adapter(client: openai.OpenAI) -> None:
    """A streamed upstream tool call arrives whole in both modes: name once, arguments reassembled."""
    request = {"model": "e2e/tools", "messages": HELLO, "tools": [WEATHER_TOOL]}
    completion = client.chat.completions.create(**request)  # type: ignore[call-overload]
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == TOOL_ARGUMENTS
    assert completion.choices[0].finish_reason == "tool_calls"
    chunks = list(client.chat.completions.create(**request, stream=True))  # type: ignore[call-overload]
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0].function.name == "get_weather" and pieces[0].id
    assert all(p.function is None or p.function.name is None for p in pieces[1:])
    assert "".join(p.function.arguments or "" for p in pieces if p.function) == TOOL_ARGUMENTS
    assert isinstance(orjson.loads(TOOL_ARGUMENTS), dict)


def test_custom_tool_call_through_the_adapter(client: openai.OpenAI) -> None:
    """An upstream call of a custom tool reaches the SDK as a custom call in both modes: ``type: custom``,
    ``custom.name``, and its input whole in the answer or in pieces (name in the first) in the stream."""
    request = {"model": "e2e/tools", "messages": HELLO, "tools": [SQL_TOOL]}
    completion = client.chat.completions.create(**request)  # type: ignore[call-overload]
    (call,) = completion.choices[0].message.tool_calls
    assert isinstance(call, ChatCompletionMessageCustomToolCall) and call.id
    assert (call.custom.name, call.custom.input) == ("run_sql", TOOL_INPUT)
    assert completion.choices[0].finish_reason == "tool_calls"
    chunks = list(client.chat.completions.create(**request, stream=True))  # type: ignore[call-overload]
    pieces = [tc.model_dump() for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert pieces[0]["type"] == "custom" and pieces[0]["id"]
    assert pieces[0]["custom"] == {"name": "run_sql", "input": ""} and pieces[0]["function"] is None
    assert all(p["type"] is None and set(p["custom"]) == {"input"} for p in pieces[1:])
    assert "".join(p["custom"]["input"] for p in pieces) == TOOL_INPUT


def test_upstream_503_becomes_service_unavailable(client: openai.OpenAI) -> None:
    """An upstream 503 is our 503 service_unavailable / upstream_unavailable, keeping its Retry-After."""
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="e2e/unavailable", messages=HELLO)
    assert caught.value.status_code == 503
    error = _error(caught.value)
    assert error["type"] == "service_unavailable" and error["code"] == "upstream_unavailable"
    assert caught.value.response.headers.get("retry-after") == "7"


def test_upstream_503_on_a_stream_is_an_error(client: openai.OpenAI) -> None:
    """With stream=true, an upstream 503 reaches the SDK as an APIError carrying upstream_unavailable."""
    with pytest.raises(openai.APIError) as caught:
        list(client.chat.completions.create(model="e2e/unavailable", messages=HELLO, stream=True))
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "upstream_unavailable"
    assert body["type"] == "service_unavailable"


def test_upstream_400_becomes_bad_request(client: openai.OpenAI) -> None:
    """An upstream 400 is our 400 invalid_request / upstream_bad_request."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="e2e/rejects", messages=HELLO)
    error = _error(caught.value)
    assert error["type"] == "invalid_request" and error["code"] == "upstream_bad_request"


def test_stream_cut_mid_way_ends_with_an_error_event(client: openai.OpenAI) -> None:
    """An upstream that drops the connection mid-stream: the client gets the text so far, then an error."""
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="e2e/cut", messages=HELLO, stream=True):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == expected_content(3)
    assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == "upstream_error"


def test_hung_upstream_times_out(client: openai.OpenAI) -> None:
    """An upstream that never answers ends as 503 upstream_timeout after the first-token timeout."""
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="e2e/hang", messages=HELLO)
    assert _error(caught.value)["code"] == "upstream_timeout"
    assert HANG_TIMEOUT <= time.monotonic() - started < HANG_TIMEOUT + 10
