"""What clients see of an Anthropic deployment: the worker's chunk writer and assembler over the
anthropic adapter's deltas give OpenAI-exact objects (checked against the OpenAI schemas)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.anthropic_upstream import AnthropicUpstream, start_anthropic_upstream
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings
from tests.openai_spec import chunk_violations, completion_violations
from tests.workers.factories import completion_job
from workers.chunks import ChunkWriter, MessageAssembler
from workers.providers.anthropic import AnthropicProvider
from workers.providers.anthropic_translate import message_to_completion
from workers.providers.base import Delta, Usage

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
async def deltas_of() -> AsyncIterator[Any]:
    """Runs a job through the anthropic adapter against a simulated Anthropic API; returns its deltas."""
    upstream: AnthropicUpstream = await start_anthropic_upstream()
    settings = ProviderSettings(
        name="claude", kind="anthropic", base_url=upstream.base_url, api_key="sk-ant-test"
    )
    adapter = AnthropicProvider(settings)

    async def run(job: CompletionJob) -> list[Delta]:
        return [delta async for delta in adapter.stream(job)]

    yield run
    await adapter.aclose()
    await upstream.close()


def job(model: str, stream: bool, **body: Any) -> CompletionJob:
    """A job for the ``claude`` pool: usage requested, the user message below unless ``messages`` is given."""
    return completion_job(
        "Weather in Montreal?",
        upstream_model=model,
        stream=stream,
        include_usage=True,
        provider="claude",
        **body,
    )


@pytest.mark.parametrize("model", ["claude-sim", "claude-tool"])
async def test_stream_chunks_are_openai_exact(deltas_of: Any, model: str) -> None:
    """Every chunk built from the adapter's deltas (text or tool call) conforms to the OpenAI schema."""
    completion = job(model, stream=True, tools=[WEATHER_TOOL])
    writer = ChunkWriter(completion)
    chunks = []
    for delta in await deltas_of(completion):
        chunk = writer.chunk(delta)
        if chunk is not None:
            chunks.append(chunk)
        if delta.usage is not None:
            chunks.append(writer.usage_chunk(delta.usage))
    assert chunks and all(chunk_violations(c) == [] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [f for f in finishes if f] == ["tool_calls" if model == "claude-tool" else "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_non_stream_body_is_openai_exact(deltas_of: Any) -> None:
    """The assembled chat.completion of a tool-using answer conforms to the OpenAI schema."""
    completion = job("claude-tool", stream=False, tools=[WEATHER_TOOL])
    assembler = MessageAssembler(completion)
    usage = Usage(0, 0)
    for delta in await deltas_of(completion):
        assembler.add(delta)
        usage = delta.usage or usage
    body = assembler.body(usage)
    assert completion_violations(body) == []
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"location":"Montreal"}'}
    assert call["id"].startswith("toolu_")


def test_translated_message_body_is_openai_exact() -> None:
    """message_to_completion's body conforms to the OpenAI chat.completion schema."""
    message = {
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Montreal"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 9, "output_tokens": 15},
    }
    body = message_to_completion(message, model="claude-public", completion_id="chatcmpl-1", created=1)
    assert completion_violations(body) == []
