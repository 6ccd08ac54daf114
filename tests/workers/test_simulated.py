"""The simulated provider: deterministic text, limits, stop sequences, tools, JSON modes, rate, usage."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from shared.errors import UpstreamBadRequest
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings
from tests.workers.factories import TIME_TOOL, WEATHER_TOOL, completion_job
from workers.providers.base import Delta
from workers.providers.simulated import MAX_COMPLETION_TOKENS, SimulatedProvider


async def run(job: CompletionJob, tokens_per_second: float = 0.0) -> list[Delta]:
    provider = SimulatedProvider(ProviderSettings(name="simulated", tokens_per_second=tokens_per_second))
    return [delta async for delta in provider.stream(job)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.content or "" for d in deltas)


def finish_of(deltas: list[Delta]) -> list[str]:
    return [d.finish_reason for d in deltas if d.finish_reason]


def arguments_of(deltas: list[Delta]) -> str:
    return "".join(call.arguments for d in deltas for call in d.tool_calls)


async def test_echo_repeats_last_user_message() -> None:
    """``echo`` answers with the text of the last user message and finishes with ``stop``."""
    job = completion_job("the quick brown fox")
    job.body["messages"].insert(0, {"role": "user", "content": "an older message"})
    deltas = await run(job)
    assert text_of(deltas) == "the quick brown fox"
    assert finish_of(deltas) == ["stop"]


async def test_echo_reads_content_parts() -> None:
    """A message whose content is a list of parts is echoed through its text parts."""
    job = completion_job()
    job.body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "part one"}]}]
    assert text_of(await run(job)) == "part one"


async def test_max_tokens_bounds_length() -> None:
    """``max_tokens`` (or ``max_completion_tokens``) cuts the answer and finishes with ``length``."""
    for limit_field in ("max_tokens", "max_completion_tokens"):
        deltas = await run(completion_job("one two three four five", **{limit_field: 2}))
        assert text_of(deltas) == "one two"
        assert finish_of(deltas) == ["length"]


async def test_lorem_emits_exactly_max_tokens() -> None:
    """``lorem`` writes as many tokens as allowed and reports them in usage."""
    deltas = await run(completion_job(upstream_model="lorem", max_tokens=25))
    content = [d for d in deltas if d.content]
    assert len(content) == 25
    assert text_of(deltas).startswith("Lorem ipsum dolor")
    assert finish_of(deltas) == ["length"]
    usage = [d.usage for d in deltas if d.usage]
    assert usage[0] is not None and usage[0].completion_tokens == 25


async def test_stop_sequence_is_honoured() -> None:
    """Generation stops before the first stop sequence found, which is not emitted."""
    deltas = await run(completion_job("alpha beta gamma delta", stop=["gamma", "zzz"]))
    assert text_of(deltas) == "alpha beta "
    assert finish_of(deltas) == ["stop"]


async def test_usage_counts_prompt_words_and_emitted_tokens() -> None:
    """Prompt tokens are the words of every message; completion tokens are the tokens emitted."""
    job = completion_job("a b c")
    job.body["messages"].insert(0, {"role": "system", "content": "be brief"})
    deltas = await run(job)
    usage = deltas[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 3)


async def test_tool_call_arguments_follow_schema() -> None:
    """With tools, the first tool is called with valid JSON arguments built from its schema."""
    deltas = await run(completion_job("Montreal", tools=[WEATHER_TOOL, TIME_TOOL]))
    first = deltas[0].tool_calls[0]
    assert first.name == "get_weather" and first.id and first.id.startswith("call_")
    arguments = orjson.loads(arguments_of(deltas))
    assert arguments == {"location": "Montreal", "unit": "celsius", "days": 1}
    assert finish_of(deltas) == ["tool_calls"]
    assert len([d for d in deltas if d.tool_calls]) > 2  # streamed in pieces


async def test_tool_choice_names_the_function() -> None:
    """tool_choice naming a function calls that one; ``none`` answers with text instead."""
    named = {"type": "function", "function": {"name": "get_time"}}
    deltas = await run(completion_job("x", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=named))
    assert deltas[0].tool_calls[0].name == "get_time"
    assert orjson.loads(arguments_of(deltas)) == {"zone": "x"}
    deltas = await run(completion_job("plain text", tools=[WEATHER_TOOL], tool_choice="none"))
    assert text_of(deltas) == "plain text" and not any(d.tool_calls for d in deltas)


SQL_TOOL = {"type": "custom", "custom": {"name": "sql"}}


async def test_allowed_tools_calls_the_first_allowed_function() -> None:
    """tool_choice allowed_tools calls the first function it allows; one that allows no function is a
    text answer (mode auto) or the client's 400 (mode required): custom tools are never called."""
    allowed = {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]}
    choice = {"type": "allowed_tools", "allowed_tools": allowed}
    deltas = await run(completion_job("x", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice))
    assert deltas[0].tool_calls[0].name == "get_time"
    only_custom = {"mode": "auto", "tools": [{"type": "custom", "custom": {"name": "sql"}}]}
    choice = {"type": "allowed_tools", "allowed_tools": only_custom}
    deltas = await run(completion_job("plain text", tools=[WEATHER_TOOL, SQL_TOOL], tool_choice=choice))
    assert text_of(deltas) == "plain text" and finish_of(deltas) == ["stop"]
    choice = {"type": "allowed_tools", "allowed_tools": {**only_custom, "mode": "required"}}
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job("x", tools=[WEATHER_TOOL, SQL_TOOL], tool_choice=choice))


async def test_custom_tools_are_not_called() -> None:
    """Custom tools alone get a text answer; naming one, or requiring a call of none but them, is a 400."""
    deltas = await run(completion_job("plain text", tools=[SQL_TOOL]))
    assert text_of(deltas) == "plain text"
    named: dict[str, object] = {"type": "custom", "custom": {"name": "sql"}}
    for tools, choice in (([WEATHER_TOOL, SQL_TOOL], named), ([SQL_TOOL], "required")):
        with pytest.raises(UpstreamBadRequest) as caught:
            await run(completion_job("x", tools=tools, tool_choice=choice))
        assert caught.value.param == "tool_choice"


async def test_tool_choice_unknown_function_is_bad_request() -> None:
    """Naming a function that is not among the tools is the client's error."""
    with pytest.raises(UpstreamBadRequest):
        await run(
            completion_job(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "x"}})
        )


async def test_json_modes_produce_valid_json() -> None:
    """json_object and json_schema response formats produce parseable JSON matching the schema's shape."""
    deltas = await run(completion_job("hi there", response_format={"type": "json_object"}))
    assert orjson.loads(text_of(deltas)) == {"model": "echo", "text": "hi there"}
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["answer", "score", "tags"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    deltas = await run(completion_job("hi there", upstream_model="lorem", response_format=response_format))
    value = orjson.loads(text_of(deltas))
    assert set(value) == {"answer", "score", "tags"}
    assert isinstance(value["answer"], str) and isinstance(value["score"], float) and value["tags"]


async def test_unknown_model_is_bad_request() -> None:
    """An upstream model the simulated family does not have is refused."""
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job(upstream_model="gpt-nope"))


async def test_rate_paces_tokens() -> None:
    """At 20 tokens/s, five tokens take at least ~0.2 s (and nowhere near forever)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run(completion_job("a b c d e"), tokens_per_second=20)
    assert 0.2 <= loop.time() - started < 5


async def test_deterministic() -> None:
    """The same job gives the same deltas twice."""
    job = completion_job("same words", tools=[WEATHER_TOOL])
    assert await run(job) == await run(job)


def tool_with(parameters: object) -> dict[str, object]:
    return {"type": "function", "function": {"name": "f", "parameters": parameters}}


UNREADABLE_SCHEMAS = [
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": "x"}}},
    {"type": "object", "properties": {"n": {"type": "number", "minimum": "x"}}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1e308 * 10}}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1e20}}},  # past 64 bits
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": -1e20}}},
    {"type": "array", "minItems": "3"},
    {"type": "array", "minItems": -1},
    {"type": "object", "properties": ["a", "b"]},
    {"anyOf": {"type": "string"}},
    {"enum": "abc"},
]


@pytest.mark.parametrize("schema", UNREADABLE_SCHEMAS)
async def test_unreadable_tool_schema_is_bad_request(schema: object) -> None:
    """A tool schema the simulated provider cannot read is the client's 400, never a crash."""
    with pytest.raises(UpstreamBadRequest) as caught:
        await run(completion_job("x", tools=[tool_with(schema)]))
    assert caught.value.status == 400 and "JSON schema" in caught.value.message


@pytest.mark.parametrize("minimum", ["x", 1e20])
async def test_unreadable_response_format_schema_is_bad_request(minimum: object) -> None:
    """The same holds for a json_schema response format."""
    schema = {"type": "integer", "minimum": minimum}
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job("x", response_format=response_format))


async def test_fractional_minimum_gives_a_valid_integer() -> None:
    """An integer schema with a fractional minimum gets the next integer up."""
    deltas = await run(completion_job("x", tools=[tool_with({"type": "integer", "minimum": 1.5})]))
    assert orjson.loads(arguments_of(deltas)) == 2


def nested_min_items(levels: int, count: int) -> dict[str, object]:
    """An array schema whose items are arrays ``levels`` deep, each needing ``count`` items."""
    schema: dict[str, object] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "minItems": count, "items": schema}
    return schema


async def test_nested_min_items_is_refused_before_the_work() -> None:
    """The issue's ~330-byte request (minItems 100, three deep: 10^6 values) is a 400, not a busy loop."""
    job = completion_job("x", tools=[tool_with(nested_min_items(3, 100))])
    assert len(orjson.dumps(job.body)) < 400
    with pytest.raises(UpstreamBadRequest) as caught:
        await run(job)
    assert "example this large" in caught.value.message


async def test_huge_min_items_is_refused_at_once() -> None:
    """One minItems of 10^12 is refused before a single item is built."""
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job("x", tools=[tool_with(nested_min_items(1, 10**12))]))


async def test_self_referencing_fan_out_is_refused() -> None:
    """Properties that $ref the root fan out exponentially: refused once the value budget is spent."""
    schema = {"type": "object", "properties": {name: {"$ref": "#"} for name in "abcdefgh"}}
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job("x", tools=[tool_with(schema)]))


async def test_large_constants_count_against_the_size_budget() -> None:
    """A big const repeated through minItems is refused by size, not serialized over and over."""
    schema = {"type": "array", "minItems": 100, "items": {"const": "x" * 100_000}}
    with pytest.raises(UpstreamBadRequest):
        await run(completion_job("x", tools=[tool_with(schema)]))


async def test_a_schema_within_the_bounds_still_gets_its_example() -> None:
    """A large but reasonable schema (100 x 50 items) is answered in full."""
    deltas = await run(completion_job("x", tools=[tool_with(nested_min_items(2, 50))]))
    assert len(orjson.loads(arguments_of(deltas))) == 50


async def test_lorem_tokens_are_capped() -> None:
    """max_tokens beyond MAX_COMPLETION_TOKENS gets that many tokens and finish length."""
    job = completion_job(upstream_model="lorem", max_tokens=MAX_COMPLETION_TOKENS + 5, stream=False)
    deltas = await run(job)
    assert len([d for d in deltas if d.content]) == MAX_COMPLETION_TOKENS
    assert finish_of(deltas) == ["length"]


async def test_echo_of_a_huge_prompt_is_capped() -> None:
    """An echoed prompt longer than MAX_COMPLETION_TOKENS tokens is cut there, finish length."""
    deltas = await run(completion_job("a " * (MAX_COMPLETION_TOKENS + 10)))
    assert len([d for d in deltas if d.content]) == MAX_COMPLETION_TOKENS
    assert finish_of(deltas) == ["length"]


async def test_n_choices_share_the_token_bound() -> None:
    """n identical choices come back, each with its finish reason, and all n together stay within the
    provider's token bound."""
    provider = SimulatedProvider(ProviderSettings(name="simulated"))
    job = completion_job("hello there", upstream_model="lorem", n=4, max_tokens=MAX_COMPLETION_TOKENS)
    deltas = [d async for d in provider.stream(job)]
    finishes = sorted((d.index, d.finish_reason) for d in deltas if d.finish_reason)
    assert finishes == [(i, "length") for i in range(4)]
    usage = [d.usage for d in deltas if d.usage]
    assert usage[0] is not None and usage[0].completion_tokens <= MAX_COMPLETION_TOKENS
    assert sum(1 for d in deltas if d.content) == usage[0].completion_tokens
