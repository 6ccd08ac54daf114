"""The simulated Anthropic API itself: the checks a real one makes, so adapter tests can trust it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bench.anthropic_upstream import AnthropicUpstream, start_anthropic_upstream

HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
BODY = {"model": "claude-sim", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[tuple[AnthropicUpstream, httpx.AsyncClient]]:
    """A simulated Anthropic API and an httpx client on its base URL."""
    upstream = await start_anthropic_upstream()
    async with httpx.AsyncClient(base_url=upstream.base_url) as http:
        yield upstream, http
    await upstream.close()


async def post(
    http: httpx.AsyncClient, body: Any = BODY, headers: dict[str, str] = HEADERS
) -> httpx.Response:
    return await http.post("messages", json=body, headers=headers)


async def test_checks_key_version_and_required_fields(
    client: tuple[AnthropicUpstream, httpx.AsyncClient],
) -> None:
    """Wrong key → 401, no anthropic-version → 400, no max_tokens → 400, all as Anthropic error bodies."""
    upstream, http = client
    wrong_key = await post(http, headers={**HEADERS, "x-api-key": "nope"})
    assert wrong_key.status_code == 401 and wrong_key.json()["error"]["type"] == "authentication_error"
    no_version = await post(http, headers={"x-api-key": "sk-ant-test"})
    assert no_version.status_code == 400 and no_version.json()["error"]["type"] == "invalid_request_error"
    no_max = await post(http, body={k: v for k, v in BODY.items() if k != "max_tokens"})
    assert no_max.status_code == 400
    assert (await http.get("models")).status_code == 404
    assert upstream.stats.requests == 3  # the 404 is not a Messages request


async def test_keep_alive_client_gets_json_and_stream_answers_in_turn(
    client: tuple[AnthropicUpstream, httpx.AsyncClient],
) -> None:
    """Non-stream and stream answers follow each other on a keep-alive client without mixing up."""
    upstream, http = client
    first = await post(http)
    async with http.stream("POST", "messages", json={**BODY, "stream": True}, headers=HEADERS) as response:
        events = [line async for line in response.aiter_lines() if line.startswith("event: ")]
    second = await post(http)
    assert (
        first.json()["content"]
        == second.json()["content"]
        == [{"type": "text", "text": "Hello from Claude. You said: hi"}]
    )
    assert events[0] == "event: message_start" and events[-1] == "event: message_stop"
    assert "event: ping" in events
    assert upstream.stats.requests == 3 and upstream.stats.client_closed == 0


async def test_rate_limited_answer_carries_retry_after(
    client: tuple[AnthropicUpstream, httpx.AsyncClient],
) -> None:
    """The rate-limited model answers 429 rate_limit_error with retry-after; overloaded answers 529."""
    _, http = client
    limited = await post(http, body={**BODY, "model": "claude-rate-limited"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    overloaded = await post(http, body={**BODY, "model": "claude-overloaded"})
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
