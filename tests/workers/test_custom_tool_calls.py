"""A call of a custom tool comes back as a custom call (``type: custom``, ``custom.name``, ``custom.input``),
streamed or whole, through the OpenAI adapter and the worker's chunk writer and assembler; a function
call beside it keeps its own shape.  The upstream is a scripted server on a real socket, sending what an
OpenAI-compatible upstream sends."""

from __future__ import annotations

from typing import Any

import orjson

from shared.events import Frame
from shared.settings import UpstreamStream
from tests.openai_spec import chunk_violations, completion_violations
from tests.workers.raw_server import answer, chunked, start_raw_server
from tests.workers.test_faithful_relay import stream_chunks
from tests.workers.test_openai_compatible import deltas_of, run_complete, sim_job
from tests.workers.test_openai_json_calls import provider_for
from workers.providers.base import ToolCallDelta

SQL_TOOL = {"type": "custom", "custom": {"name": "run_sql", "description": "Run one SQL query"}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
FUNCTION_CALL = {"id": "call_f", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
CUSTOM_CALL = {"id": "call_c", "type": "custom", "custom": {"name": "run_sql", "input": ""}}
ARGUMENTS = ['{"location": ', '"Paris"}']
INPUT = ["SELECT city ", "FROM towns ", "WHERE rain > 3"]


def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    chunk = {"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


UPSTREAM_STREAM = chunked(
    event({"role": "assistant", "content": None, "tool_calls": [{"index": 0, **FUNCTION_CALL}]}),
    *(event({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in ARGUMENTS),
    event({"tool_calls": [{"index": 1, **CUSTOM_CALL}]}),
    *(event({"tool_calls": [{"index": 1, "custom": {"input": part}}]}) for part in INPUT),
    event({}, "tool_calls"),
    b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 12}}\n\n',
    b"data: [DONE]\n\n",
)
WHOLE_CALLS = [
    {**FUNCTION_CALL, "function": {"name": "get_weather", "arguments": "".join(ARGUMENTS)}},
    {**CUSTOM_CALL, "custom": {"name": "run_sql", "input": "".join(INPUT)}},
]
STREAM_SCHEMA_GAP = "$.choices[0].delta.tool_calls[0].type: 'custom' not in ['function']"
"""How a custom call's first piece breaks OpenAI's published chunk schema, whose tool-call piece knows
only function calls; every other part of that chunk is checked against it."""


async def answer_to(
    upstream_answer: bytes, *, stream: bool, upstream_stream: UpstreamStream = "always"
) -> list[Frame]:
    """The frames the worker publishes for a job whose upstream answers ``upstream_answer``."""
    server = await start_raw_server(lambda connection, request: [upstream_answer])
    try:
        job = sim_job("raw", stream=stream, tools=[WEATHER, SQL_TOOL], include_usage=stream)
        return await run_complete(job, provider_for(server.base_url, upstream_stream))
    finally:
        await server.close()


async def test_a_streamed_custom_call_is_relayed_as_custom_pieces() -> None:
    """Streamed: the custom call's first piece has its id, ``type: custom`` and ``custom.name``, the later
    ones ``index`` and ``custom.input`` only, each piece as the upstream cut it; the function call before
    it is relayed exactly as before (``function.name``, then ``function.arguments`` pieces)."""
    chunks = stream_chunks(await answer_to(UPSTREAM_STREAM, stream=True))
    pieces = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert pieces == [
        {"index": 0, **FUNCTION_CALL},
        *({"index": 0, "function": {"arguments": part}} for part in ARGUMENTS),
        {"index": 1, **CUSTOM_CALL},
        *({"index": 1, "custom": {"input": part}} for part in INPUT),
    ]
    for chunk in chunks:
        first_custom_piece = chunk["choices"] and chunk["choices"][0]["delta"].get("tool_calls") == [
            {"index": 1, **CUSTOM_CALL}
        ]
        assert chunk_violations(chunk) == ([STREAM_SCHEMA_GAP] if first_custom_piece else [])
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]].count("tool_calls") == 1


async def test_a_streamed_custom_call_is_whole_in_a_non_stream_answer() -> None:
    """Not streamed: the custom call's input pieces are joined into ``custom.input`` under its id and
    name, beside the function call with its joined arguments; the body is schema-valid."""
    frames = await answer_to(UPSTREAM_STREAM, stream=False)
    body = orjson.loads(frames[-1].payload)
    assert completion_violations(body) == []
    message = body["choices"][0]["message"]
    assert message["tool_calls"] == WHOLE_CALLS and message["content"] is None
    assert body["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_custom_call_in_a_json_answer_is_relayed_whole() -> None:
    """An upstream asked for one JSON answer (``upstream_stream = "as_requested"``) that calls a custom tool:
    the caller's answer holds that call as the upstream gave it, beside the function call."""
    message = {"role": "assistant", "content": None, "tool_calls": WHOLE_CALLS}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    upstream = {"id": "up", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
    data = orjson.dumps({**upstream, "usage": usage})
    json_answer = answer(body=data, headers="content-type: application/json\r\n")
    frames = await answer_to(json_answer, stream=False, upstream_stream="as_requested")
    body = orjson.loads(frames[-1].payload)
    assert completion_violations(body) == []
    assert body["choices"][0]["message"]["tool_calls"] == WHOLE_CALLS


async def test_a_piece_is_custom_by_its_type_or_by_a_custom_object_alone() -> None:
    """A piece is a custom call's when its ``type`` is ``custom``, or, naming no type, when it carries
    ``custom`` and no ``function``; a function call whose pieces also carry an empty ``custom`` (as some
    gateways echo) stays a function call with its arguments."""
    deltas = await deltas_of(
        [
            chunked(
                event({"tool_calls": [{"index": 0, **FUNCTION_CALL, "custom": {}}]}),
                event({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}, "custom": {}}]}),
                event({"tool_calls": [{"index": 1, **CUSTOM_CALL}]}),
                event({"tool_calls": [{"index": 1, "custom": {"input": "y"}}]}),
                event({}, "tool_calls"),
                b"data: [DONE]\n\n",
            )
        ]
    )
    assert [call for delta in deltas for call in delta.tool_calls] == [
        ToolCallDelta(0, "call_f", "get_weather", "", custom=False),
        ToolCallDelta(0, None, None, "{}", custom=False),
        ToolCallDelta(1, "call_c", "run_sql", "", custom=True),
        ToolCallDelta(1, None, None, "y", custom=True),
    ]


THOUGHT = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
"""What Gemini's OpenAI-compatible API puts beside a call (``extra_content``): the next turn must send it
back with that call, or a Gemini 3 model refuses the request."""
SIGNED_STREAM = chunked(
    event(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"index": 0, **FUNCTION_CALL, "extra_content": THOUGHT}],
        }
    ),
    *(event({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in ARGUMENTS),
    event({"tool_calls": [{"index": 1, **CUSTOM_CALL, "extra_content": THOUGHT}]}),
    event({}, "tool_calls"),
    b"data: [DONE]\n\n",
)


async def test_a_calls_own_extra_fields_are_relayed_streamed_and_whole() -> None:
    """A field of a call beyond ``index``, ``id``, ``type``, ``function`` and ``custom`` (Gemini's
    ``extra_content`` with the thought signature) reaches the caller on the piece that carried it, and on
    the whole call of a non-stream answer, of a function call and of a custom one."""
    chunks = stream_chunks(await answer_to(SIGNED_STREAM, stream=True))
    pieces = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert [piece.get("extra_content") for piece in pieces] == [THOUGHT, None, None, THOUGHT]
    body = orjson.loads((await answer_to(SIGNED_STREAM, stream=False))[-1].payload)
    assert completion_violations(body) == []
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [call["extra_content"] for call in calls] == [THOUGHT, THOUGHT]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": "".join(ARGUMENTS)}


async def test_a_piece_whose_function_is_null_is_read_by_its_custom_object() -> None:
    """An upstream that writes every field of a piece, null when unset (a server dumping its models whole),
    sends ``"function": null`` beside a custom call's input: that piece is custom, its input kept."""
    deltas = await deltas_of(
        [
            chunked(
                event({"tool_calls": [{"index": 0, **CUSTOM_CALL, "function": None}]}),
                event(
                    {
                        "tool_calls": [
                            {"index": 0, "id": None, "type": None, "function": None, "custom": {"input": "y"}}
                        ]
                    }
                ),
                event({}, "tool_calls"),
                b"data: [DONE]\n\n",
            )
        ]
    )
    assert [call for delta in deltas for call in delta.tool_calls] == [
        ToolCallDelta(0, "call_c", "run_sql", "", custom=True),
        ToolCallDelta(0, None, None, "y", custom=True),
    ]
