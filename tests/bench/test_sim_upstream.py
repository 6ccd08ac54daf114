"""The simulated upstream over a real socket: the OpenAI protocol, every failure mode, and its counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from bench.sim_payloads import TOOL_ARGUMENTS, TOOL_INPUT, expected_content
from bench.upstream import Upstream
from tests.waiting import eventually


@pytest.fixture
async def client(upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=10) as http:
        yield http


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "say three words"}], **extra}


async def read_events(response: httpx.Response) -> list[str]:
    events = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(line.removeprefix("data: "))
    return events


async def stream_events(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    async with client.stream("POST", "/chat/completions", json=body) as response:
        return response, await read_events(response)


async def test_non_stream_answer_is_a_chat_completion_with_usage(client: httpx.AsyncClient) -> None:
    """A plain request gets a chat.completion with the requested tokens and consistent usage."""
    response = await client.post("/chat/completions", json=chat("sim?tokens=3"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim?tokens=3"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 ", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


async def test_path_without_v1_prefix_is_served(upstream: Upstream) -> None:
    """``/chat/completions`` at the root answers like ``/v1/chat/completions``."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"http://127.0.0.1:{upstream.port}/chat/completions", json=chat("sim"))
    assert response.json()["choices"][0]["message"]["content"] == expected_content(16)


async def test_stream_follows_the_openai_chunk_protocol(client: httpx.AsyncClient) -> None:
    """A stream is chunked SSE: role first, tokens in order, one finish_reason, usage chunk, [DONE]."""
    body = chat("sim?tokens=4&itl_ms=1", stream=True, stream_options={"include_usage": True})
    response, events = await stream_events(client, body)
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [chunk for chunk in chunks if chunk["choices"]]
    assert all("role" not in chunk["choices"][0]["delta"] for chunk in with_choices[1:])
    content = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in with_choices)
    assert content == "w0 w1 w2 w3 "
    finishes = [chunk["choices"][0]["finish_reason"] for chunk in with_choices]
    assert [reason for reason in finishes if reason is not None] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_chunk(client: httpx.AsyncClient) -> None:
    """Without ``stream_options.include_usage`` no chunk carries usage and every chunk has a choice."""
    _, events = await stream_events(client, chat("sim?tokens=2", stream=True))
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks)
    assert len(chunks) == 4  # role, two tokens, finish


async def test_models_are_listed(client: httpx.AsyncClient) -> None:
    """``GET /v1/models`` returns an OpenAI model list."""
    body = (await client.get("/models")).json()
    assert body["object"] == "list"
    assert body["data"][0]["id"] == "sim"


async def test_unknown_route_is_404_with_an_error_envelope(client: httpx.AsyncClient) -> None:
    """Routes the upstream does not serve answer 404 with an OpenAI error envelope."""
    response = await client.get("/embeddings")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_503_carries_retry_after_and_an_error_envelope(client: httpx.AsyncClient) -> None:
    """``status=503&retry_after=2`` answers 503, ``Retry-After: 2`` and an OpenAI error envelope."""
    response = await client.post("/chat/completions", json=chat("sim?status=503&retry_after=2"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("status", "code"), [(400, None), (401, "invalid_api_key"), (429, "rate_limit_exceeded")]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_client_errors_answer_before_any_stream(
    client: httpx.AsyncClient, status: int, code: str | None, stream: bool
) -> None:
    """Error statuses answer with the status and envelope, streamed request or not."""
    response = await client.post("/chat/completions", json=chat(f"sim?status={status}", stream=stream))
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, None)
    assert error["message"]


async def test_unknown_option_is_refused_with_400(client: httpx.AsyncClient) -> None:
    """A typo in the model options answers 400 naming the option."""
    response = await client.post("/chat/completions", json=chat("sim?tokenz=3"))
    assert response.status_code == 400
    assert "tokenz" in response.json()["error"]["message"]


async def test_latency_delays_the_answer(client: httpx.AsyncClient) -> None:
    """``latency_ms`` holds the response back at least that long."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.post("/chat/completions", json=chat("sim?latency_ms=150"))
    assert response.status_code == 200
    assert loop.time() - started >= 0.15


async def test_hang_never_answers_and_the_disconnect_is_counted(
    upstream: Upstream, client: httpx.AsyncClient
) -> None:
    """``hang`` leaves the request unanswered; the client giving up counts as a client disconnect."""
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/chat/completions", json=chat("sim?hang"), timeout=0.3)
    await eventually(lambda: upstream.stats.client_disconnects == 1)
    assert (upstream.stats.hangs, upstream.stats.completed) == (1, 0)


async def test_client_leaving_mid_stream_is_counted(upstream: Upstream, client: httpx.AsyncClient) -> None:
    """Closing a stream before its end counts one client disconnect and stops the stream."""
    body = chat("sim?tokens=100&itl_ms=20", stream=True)
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if "w1 " in line:
                break
    await eventually(lambda: upstream.stats.client_disconnects == 1)
    assert upstream.stats.completed == 0


async def test_cut_closes_the_stream_after_n_tokens_without_done(
    upstream: Upstream, client: httpx.AsyncClient
) -> None:
    """``cut=2`` sends two content tokens then drops the connection: no finish_reason, no [DONE]."""
    events: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        body = chat("sim?cut=2", stream=True)
        async with client.stream("POST", "/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
    assert "[DONE]" not in events
    contents = [orjson.loads(event)["choices"][0]["delta"].get("content") for event in events]
    assert contents == ["", "w0 ", "w1 "]
    assert (upstream.stats.cuts, upstream.stats.client_disconnects) == (1, 0)


async def test_cut_on_a_non_stream_closes_without_answering(client: httpx.AsyncClient) -> None:
    """``cut`` on a non-stream request drops the connection with no response at all."""
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/chat/completions", json=chat("sim?cut=0"))


async def test_bad_json_stream_has_a_malformed_chunk(client: httpx.AsyncClient) -> None:
    """``bad_json`` makes the first content chunk of a stream unparsable."""
    _, events = await stream_events(client, chat("sim?bad_json&tokens=2", stream=True))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(events[1])
    assert events[-1] == "[DONE]"


async def test_bad_json_non_stream_body_is_malformed(client: httpx.AsyncClient) -> None:
    """``bad_json`` makes a non-stream body unparsable while the status stays 200."""
    response = await client.post("/chat/completions", json=chat("sim?bad_json"))
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


async def test_tools_non_stream_answers_with_a_tool_call(client: httpx.AsyncClient) -> None:
    """``tools`` answers with one function call named after the request's first tool."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    body = (await client.post("/chat/completions", json=chat("sim?tools", tools=tools))).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert (call["type"], call["function"]["name"]) == ("function", "lookup")
    assert orjson.loads(call["function"]["arguments"]) == orjson.loads(TOOL_ARGUMENTS)


async def test_tools_stream_splits_arguments_and_names_the_call_once(client: httpx.AsyncClient) -> None:
    """A streamed tool call has id, type and name only in its first delta and arguments over many."""
    _, events = await stream_events(client, chat("sim?tools&itl_ms=1", stream=True))
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(event)["choices"][0]["delta"] for event in events[:-1]]
    calls = [delta["tool_calls"][0] for delta in deltas if "tool_calls" in delta]
    assert calls[0]["id"].startswith("call_")
    assert (calls[0]["type"], calls[0]["function"]["name"]) == ("function", "get_weather")
    assert all(set(call) == {"index", "function"} for call in calls[1:])
    assert all(set(call["function"]) == {"arguments"} for call in calls[1:])
    assert len(calls) > 3
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == orjson.loads(TOOL_ARGUMENTS)
    finish = orjson.loads(events[-2])["choices"][0]["finish_reason"]
    assert finish == "tool_calls"


SQL_TOOL = {"type": "custom", "custom": {"name": "run_sql"}}


async def test_tools_non_stream_calls_a_custom_first_tool_as_custom(client: httpx.AsyncClient) -> None:
    """``tools`` whose first tool is custom answers with a custom call: its name and free-text input."""
    body = (await client.post("/chat/completions", json=chat("sim?tools", tools=[SQL_TOOL]))).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "custom"
    assert call["custom"] == {"name": "run_sql", "input": TOOL_INPUT}
    assert body["choices"][0]["finish_reason"] == "tool_calls"


async def test_tools_stream_splits_a_custom_calls_input(client: httpx.AsyncClient) -> None:
    """A streamed custom call has id, type and ``custom.name`` in its first delta, then input in pieces."""
    _, events = await stream_events(client, chat("sim?tools&itl_ms=1", stream=True, tools=[SQL_TOOL]))
    deltas = [orjson.loads(event)["choices"][0]["delta"] for event in events[:-1]]
    calls = [delta["tool_calls"][0] for delta in deltas if "tool_calls" in delta]
    assert calls[0]["type"] == "custom" and calls[0]["custom"] == {"name": "run_sql", "input": ""}
    assert all(set(call) == {"index", "custom"} and set(call["custom"]) == {"input"} for call in calls[1:])
    assert len(calls) > 3 and "".join(call["custom"]["input"] for call in calls) == TOOL_INPUT


async def test_keep_alive_reuses_one_connection(upstream: Upstream, client: httpx.AsyncClient) -> None:
    """Sequential requests from one client travel over one kept-alive connection."""
    for _ in range(5):
        assert (await client.post("/chat/completions", json=chat("sim"))).status_code == 200
    _, events = await stream_events(client, chat("sim", stream=True))
    assert events[-1] == "[DONE]"
    assert upstream.stats.connections == 1
    assert (upstream.stats.requests, upstream.stats.streams, upstream.stats.completed) == (6, 1, 6)


async def test_pipelined_requests_are_answered_in_order(upstream: Upstream) -> None:
    """Two requests written at once on one socket get their two answers in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    requests = b""
    for model in (b"sim?tokens=1&latency_ms=50", b"sim?tokens=2"):
        body = b'{"model":"' + model + b'"}'
        requests += b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
            len(body),
            body,
        )
    writer.write(requests + b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    await writer.wait_closed()
    first, second, third = raw.index(b'"w0 "'), raw.index(b'"w0 w1 "'), raw.index(b'"object":"list"')
    assert first < second < third


async def test_stats_are_served_and_reset_over_http(upstream: Upstream, client: httpx.AsyncClient) -> None:
    """``GET /stats`` reports the counters and ``POST /stats/reset`` zeroes them."""
    await client.post("/chat/completions", json=chat("sim"))
    stats = (await client.get(f"http://127.0.0.1:{upstream.port}/stats")).json()
    assert (stats["requests"], stats["completed"], stats["connections"]) == (1, 1, 1)
    assert (await client.post(f"http://127.0.0.1:{upstream.port}/stats/reset")).status_code == 200
    assert upstream.stats.requests == 0


async def test_ttft_and_itl_pace_a_stream(client: httpx.AsyncClient) -> None:
    """The first content token waits ``ttft_ms`` and the whole stream at least ttft + itl per later token."""
    loop = asyncio.get_running_loop()
    body = chat("sim?tokens=3&ttft_ms=100&itl_ms=50", stream=True)
    started = loop.time()
    first_token_at = None
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if first_token_at is None and '"content":"w0 "' in line:
                first_token_at = loop.time()
    assert first_token_at is not None and first_token_at - started >= 0.1
    assert loop.time() - started >= 0.2


async def test_closing_the_server_is_not_a_client_disconnect(upstream: Upstream) -> None:
    """Shutting the upstream down drops open streams without counting them as client disconnects."""
    async with httpx.AsyncClient(base_url=upstream.base_url, timeout=5) as http:
        body = chat("sim?tokens=100&itl_ms=50", stream=True)
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if '"w0 "' in line:
                        await upstream.close()
    assert (upstream.stats.client_disconnects, upstream.stats.completed) == (0, 0)
