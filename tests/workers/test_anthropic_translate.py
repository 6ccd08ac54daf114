"""OpenAI chat requests to Anthropic Messages, and Anthropic messages and events back to OpenAI."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import InvalidRequest, UpstreamBadRequest, UpstreamError, UpstreamUnavailable
from workers.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    JSON_INSTRUCTION,
    StreamTranslator,
    message_deltas,
    message_to_completion,
    to_anthropic_request,
)
from workers.providers.base import Delta, ToolCallDelta, Usage

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_anthropic_request(body, "claude-x", stream=True)


def test_minimal_request_gets_model_stream_and_default_max_tokens() -> None:
    """A bare request names the upstream model, streams, and carries the required max_tokens."""
    assert translate() == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "stream": True,
    }
    assert translate(max_tokens=50)["max_tokens"] == 50
    assert translate(max_completion_tokens=70, max_tokens=50)["max_tokens"] == 70


def test_system_and_developer_messages_become_top_level_system() -> None:
    """system and developer messages (string or parts) join into `system`, out of the turns."""
    request = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "hi"},
        ]
    )
    assert request["system"] == "Be brief.\n\nUse French."
    assert [t["role"] for t in request["messages"]] == ["user"]


def test_blank_text_is_left_out_never_sent_as_an_empty_block() -> None:
    """Anthropic refuses a text block or a system prompt that is empty or whitespace only (400 "text content
    blocks must be non-empty"): blank system messages, user parts and assistant text are left out."""
    request = translate(
        messages=[
            {"role": "system", "content": ""},
            {"role": "developer", "content": [{"type": "text", "text": " \n"}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": " "},
            {"role": "user", "content": "  "},
            {"role": "assistant", "content": "Hello."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": ""},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {"type": "text", "text": "\t"},
                ],
            },
        ]
    )
    assert "system" not in request
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {
            "role": "user",
            "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}],
        },
    ]


def test_user_text_and_image_parts_become_blocks() -> None:
    """Text parts, data-URL images (base64) and remote images (url) become Anthropic blocks."""
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    request = translate(messages=[{"role": "user", "content": content}])
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_round_trip_becomes_tool_use_and_merged_tool_results() -> None:
    """Assistant tool_calls become tool_use blocks; consecutive tool messages merge into one user turn
    together with a following user message."""
    messages = [
        {"role": "user", "content": "Weather in Montreal and Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Montreal"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-5C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "12C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ]
    turns = translate(messages=messages)["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Montreal"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Paris"}},
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "-5C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "12C"},
        {"type": "text", "text": "Which is warmer?"},
    ]


def test_assistant_with_only_tool_calls_has_no_empty_text_block() -> None:
    """An assistant message with content null and tool calls yields only tool_use blocks."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}
    turns = translate(
        messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
    )
    assert turns["messages"][1]["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]


def test_an_assistant_refusal_is_sent_as_its_text_not_dropped() -> None:
    """An assistant turn made of a refusal (a part, or the field) keeps its place between the user turns:
    Anthropic has no refusal block, so its words go as text."""
    for assistant in (
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
        {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    ):
        turns = translate(
            messages=[{"role": "user", "content": "hello"}, assistant, {"role": "user", "content": "why"}]
        )
        assert [m["role"] for m in turns["messages"]] == ["user", "assistant", "user"]
        assert turns["messages"][1]["content"] == [{"type": "text", "text": "I can't help with that."}]


@pytest.mark.parametrize("arguments", ["[1, 2]", '"text"', "3"])
def test_tool_call_arguments_that_are_json_but_no_object_are_400(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    with pytest.raises(InvalidRequest) as refused:
        translate(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}])
    assert refused.value.param == "messages[1].tool_calls[0].function.arguments"


def test_bad_tool_arguments_and_unknown_roles_are_invalid_requests() -> None:
    """Unparseable tool-call arguments, unknown roles and parts, n > 1 and the legacy function_call (it
    has no id to pair with a result: dropping it would change the conversation) are the client's 400,
    each with an error code, not an upstream call."""
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    with pytest.raises(InvalidRequest) as bad_arguments:
        translate(messages=[{"role": "assistant", "content": None, "tool_calls": [call]}])
    assert bad_arguments.value.code == "invalid_value"
    legacy = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}
    refused = [
        {"messages": [{"role": "oracle", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        {"messages": [{"role": "user", "content": "x"}], "n": 2},
        {"messages": [{"role": "user", "content": "x"}, legacy]},
    ]
    for body in refused:
        with pytest.raises(InvalidRequest) as unsupported:
            translate(**body)
        assert unsupported.value.code == "unsupported_value", body


CUSTOM_TOOL = {"type": "custom", "custom": {"name": "sql"}}
NAMED_CUSTOM = {"type": "custom", "custom": {"name": "sql"}}
CUSTOM_CALL = {"id": "c", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "function", "name": "f", "content": "r"},
                ]
            },
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "listen"},
                            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                        ],
                    }
                ]
            },
            "messages[0].content[1].type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "audio": {"id": "audio_1"}},
                    {"role": "user", "content": "y"},
                ]
            },
            "messages[1].audio",
        ),
        ({"tools": [WEATHER_TOOL, CUSTOM_TOOL]}, "tools[1].type"),
        ({"tools": [WEATHER_TOOL], "tool_choice": CUSTOM_TOOL}, "tool_choice.type"),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [CUSTOM_TOOL]},
                },
            },
            "tool_choice.allowed_tools.tools[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": None, "tool_calls": [CUSTOM_CALL]},
                ]
            },
            "messages[1].tool_calls[0].type",
        ),
        ({"stop": ["END", "\n"]}, "stop"),
        ({"stop": " "}, "stop"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        (
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " "}]},
            "messages",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "  "},
                ]
            },
            "messages[2].content",
        ),
    ],
)
def test_shapes_without_an_anthropic_counterpart_are_400s_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    """Function messages, audio and file parts, an earlier spoken answer, custom tools and calls of them,
    log probabilities, audio output, a conversation of blank messages or ending on a blank user message,
    and stop sequences of whitespace only (Anthropic's 400 "each stop sequence must contain
    non-whitespace") are refused as the client's 400 unsupported_value naming the field, never dropped
    nor sent broken."""
    with pytest.raises(InvalidRequest) as refused:
        translate(**body)
    assert (refused.value.status, refused.value.code, refused.value.param) == (
        400,
        "unsupported_value",
        param,
    )
    assert "Anthropic" in refused.value.message


def test_allowed_tools_sends_only_the_allowed_ones() -> None:
    """tool_choice allowed_tools keeps the tools it lists, as auto (mode auto) or any (mode required)."""
    bare = {"type": "function", "function": {"name": "now"}}
    for mode, kind in (("auto", "auto"), ("required", "any")):
        allowed = {"mode": mode, "tools": [{"type": "function", "function": {"name": "now"}}]}
        request = translate(
            tools=[WEATHER_TOOL, bare], tool_choice={"type": "allowed_tools", "allowed_tools": allowed}
        )
        assert [tool["name"] for tool in request["tools"]] == ["now"]
        assert request["tool_choice"] == {"type": kind}
    nothing = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": []}}
    request = translate(tools=[WEATHER_TOOL], tool_choice=nothing)
    assert [tool["name"] for tool in request["tools"]] == ["get_weather"]
    assert request["tool_choice"] == {"type": "none"}


def test_tools_become_input_schemas() -> None:
    """Function tools become Anthropic tools with input_schema (an empty object schema when absent)."""
    bare = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[WEATHER_TOOL, bare])["tools"] == [
        {
            "name": "get_weather",
            "description": "Get current weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice_maps_to_anthropic(choice: Any, parallel: Any, expected: Any) -> None:
    """auto/none/required/named and parallel_tool_calls=false map to Anthropic's tool_choice."""
    body: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(**body).get("tool_choice") == expected


def test_sampling_stop_and_user_parameters() -> None:
    """temperature (clamped to Anthropic's 0..1), top_p, stop (string or list) and user carry over."""
    request = translate(temperature=1.7, top_p=0.9, stop="END", user="u-42")
    assert (request["temperature"], request["top_p"], request["stop_sequences"]) == (1.0, 0.9, ["END"])
    assert request["metadata"] == {"user_id": "u-42"}
    assert translate(temperature=0.2, stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "temperature" not in translate()


def test_top_p_of_one_is_not_sent() -> None:
    """top_p 1 keeps every token, which is Anthropic's default: it is not sent, so a client that sends it
    beside temperature (as many do by default) is not refused by the Claude models that take only one of
    the two; a top_p below 1 is sent as given."""
    request = translate(temperature=0.5, top_p=1)
    assert (request["temperature"], "top_p" in request) == (0.5, False)
    assert "top_p" not in translate(top_p=1.0)
    assert translate(top_p=0.95)["top_p"] == 0.95


def test_json_response_format_becomes_a_system_instruction() -> None:
    """json_object and json_schema response formats add a JSON-only instruction to the system prompt."""
    request = translate(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}],
        response_format={"type": "json_object"},
    )
    assert request["system"] == "Be brief.\n\n" + JSON_INSTRUCTION
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    request = translate(
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    )
    assert request["system"].startswith(JSON_INSTRUCTION) and '"a":{"type":"integer"}' in request["system"]
    assert "system" not in translate(response_format={"type": "text"})


def feed_all(events: list[dict[str, Any]]) -> tuple[list[Delta], StreamTranslator]:
    translator = StreamTranslator()
    return [d for e in events for d in translator.feed(e)], translator


def test_stream_of_text_events_becomes_content_deltas_finish_and_usage() -> None:
    """message_start/ping/text deltas/message_delta/message_stop become content, stop and usage."""
    deltas, translator = feed_all(
        [
            {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
            {"type": "message_stop"},
        ]
    )
    assert deltas == [
        Delta(content="Hello"),
        Delta(content=" there"),
        Delta(finish_reason="stop"),
        Delta(usage=Usage(12, 7)),
    ]
    assert translator.finished


def test_stream_of_tool_use_becomes_tool_call_deltas() -> None:
    """tool_use blocks become tool calls numbered from 0 (text blocks aside); JSON pieces are arguments."""
    deltas, _ = feed_all(
        [
            {
                "type": "message_start",
                "message": {"usage": {"input_tokens": 3, "cache_read_input_tokens": 2}},
            },
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Let me"}},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"loc'},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'ation":"X"}'},
            },
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            },
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}},
            {"type": "message_stop"},
        ]
    )
    assert deltas == [
        Delta(content="Let me"),
        Delta(tool_calls=(ToolCallDelta(index=0, id="toolu_1", name="get_weather"),)),
        Delta(tool_calls=(ToolCallDelta(index=0, arguments='{"loc'),)),
        Delta(tool_calls=(ToolCallDelta(index=0, arguments='ation":"X"}'),)),
        Delta(tool_calls=(ToolCallDelta(index=1, id="toolu_2", name="now"),)),
        Delta(finish_reason="tool_calls"),
        Delta(usage=Usage(5, 20, cached_tokens=2)),
    ]


def test_a_streamed_tool_call_without_input_has_empty_object_arguments() -> None:
    """A call of a tool that takes nothing streams no JSON pieces (or only empty ones): its arguments are
    "{}" by the block's end, as the whole message gives them, never "" that no JSON parser reads."""
    deltas, _ = feed_all(
        [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"location":"X"}'},
            },
            {"type": "content_block_stop", "index": 1},
        ]
    )
    arguments: dict[int, str] = {}
    for delta in deltas:
        for call in delta.tool_calls:
            arguments[call.index] = arguments.get(call.index, "") + call.arguments
    assert arguments == {0: "{}", 1: '{"location":"X"}'}
    whole = message_deltas({"content": [{"type": "tool_use", "id": "t", "name": "now", "input": {}}]})
    assert whole[0].tool_calls[0].arguments == "{}"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        (None, "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str | None, finish: str) -> None:
    """Anthropic stop reasons map to OpenAI finish reasons."""
    deltas, _ = feed_all([{"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {}}])
    assert deltas == [Delta(finish_reason=finish)]


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        ("overloaded_error", UpstreamUnavailable),
        ("rate_limit_error", UpstreamUnavailable),
        ("api_error", UpstreamUnavailable),
        ("invalid_request_error", UpstreamBadRequest),
        ("permission_error", UpstreamError),
    ],
)
def test_error_events_raise_our_errors(kind: str, error_class: type[Exception]) -> None:
    """An error event in the stream raises the matching error of our hierarchy, with its message."""
    with pytest.raises(error_class, match="upstream says no"):
        feed_all([{"type": "error", "error": {"type": kind, "message": "upstream says no"}}])


def test_thinking_becomes_reasoning_content() -> None:
    """Extended thinking streams as the delta's reasoning_content (as DeepSeek's reasoners send it);
    signature deltas have no OpenAI counterpart and produce nothing."""
    deltas, _ = feed_all(
        [
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hmm"},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "s"},
            },
        ]
    )
    assert deltas == [Delta(extra={"reasoning_content": "hmm"})]


def test_stop_sequence_and_cache_reads_are_mapped() -> None:
    """The stop sequence that ended the message rides on the finish delta; cache reads are cached tokens,
    cache writes count as prompt tokens."""
    deltas, translator = feed_all(
        [
            {
                "type": "message_start",
                "message": {
                    "usage": {
                        "input_tokens": 3,
                        "cache_read_input_tokens": 50,
                        "cache_creation_input_tokens": 7,
                    }
                },
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                "usage": {"output_tokens": 4},
            },
        ]
    )
    assert deltas == [Delta(finish_reason="stop", choice_extra={"stop_sequence": "END"})]
    assert translator.usage == Usage(60, 4, 50)
    assert translator.usage.to_dict()["prompt_tokens_details"] == {"cached_tokens": 50}


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Montreal"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 9, "output_tokens": 15},
}


def test_whole_message_becomes_the_deltas_of_its_stream() -> None:
    """A non-streamed message yields the same kind of deltas a stream would."""
    assert message_deltas(MESSAGE) == [
        Delta(content="Let me check."),
        Delta(
            tool_calls=(
                ToolCallDelta(index=0, id="toolu_1", name="get_weather", arguments='{"location":"Montreal"}'),
            )
        ),
        Delta(finish_reason="tool_calls"),
        Delta(usage=Usage(9, 15)),
    ]


def test_whole_message_becomes_a_chat_completion() -> None:
    """A non-streamed message becomes an OpenAI chat.completion with tool_calls, finish_reason and usage."""
    body = message_to_completion(
        MESSAGE, model="claude-public", completion_id="chatcmpl-1", created=1700000000
    )
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-public",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Montreal"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 15, "total_tokens": 24},
    }
    plain = {
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    completion = message_to_completion(plain, model="m", completion_id="c", created=1)
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hi", "refusal": None}
    assert completion["choices"][0]["finish_reason"] == "length"
