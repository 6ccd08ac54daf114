"""Request validation: every rule answers 400 invalid_request naming the field and a precise code; valid
bodies pass unchanged (unknown fields included); body size, JSON and Content-Type are checked first."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from ingress.validation import MAX_JSON_DEPTH, parse_json_object, validate_chat_request
from shared.errors import InvalidRequest
from tests.ingress.conftest import MESSAGES, MODEL, Ingress, IngressFactory, asgi_chat
from tests.ingress.test_app import assert_error

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
MISSING = "missing_required_parameter"


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"messages": MESSAGES}, "model", MISSING),
    (body(model=5), "model", "invalid_type"),
    (body(model=""), "model", "invalid_type"),
    ({"model": MODEL}, "messages", MISSING),
    (body(messages="hi"), "messages", "invalid_type"),
    (body(messages=[]), "messages", "empty_array"),
    (body(messages=["hi"]), "messages[0]", "invalid_type"),
    (body(messages=[{"content": "x"}]), "messages[0].role", MISSING),
    (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "invalid_value"),
    (body(messages=[{"role": ["user"], "content": "x"}]), "messages[0].role", "invalid_value"),
    (body(messages=[{"role": "user"}]), "messages[0].content", MISSING),
    (body(messages=[user(5)]), "messages[0].content", "invalid_type"),
    (body(messages=[user([])]), "messages[0].content", "empty_array"),
    (body(messages=[user(["x"])]), "messages[0].content[0]", "invalid_type"),
    (body(messages=[user([{"type": "audio"}])]), "messages[0].content[0].type", "invalid_value"),
    (body(messages=[user([{"type": "text"}])]), "messages[0].content[0].text", MISSING),
    (body(messages=[user([{"type": "text", "text": 1}])]), "messages[0].content[0].text", "invalid_type"),
    (body(messages=[user([{"type": "image_url"}])]), "messages[0].content[0].image_url", MISSING),
    (
        body(messages=[user([{"type": "image_url", "image_url": {"url": 3}}])]),
        "messages[0].content[0].image_url.url",
        "invalid_type",
    ),
    (
        body(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        body(messages=[user("a"), {"role": "user", "content": "b", "name": 3}]),
        "messages[1].name",
        "invalid_type",
    ),
    (body(messages=[{"role": "assistant"}]), "messages[0].content", MISSING),
    (body(messages=[{"role": "assistant", "refusal": 5}]), "messages[0].refusal", "invalid_type"),
    (body(messages=[{"role": "assistant", "audio": "audio_1"}]), "messages[0].audio", "invalid_type"),
    (body(messages=[{"role": "assistant", "audio": {}}]), "messages[0].audio.id", MISSING),
    (body(messages=[{"role": "assistant", "audio": {"id": 1}}]), "messages[0].audio.id", "invalid_type"),
    (
        body(messages=[{"role": "assistant", "content": None, "function_call": "x"}]),
        "messages[0].function_call",
        "invalid_type",
    ),
    (
        body(messages=[{"role": "assistant", "content": None, "function_call": {"name": "f"}}]),
        "messages[0].function_call.arguments",
        MISSING,
    ),
    (
        body(messages=[{"role": "assistant", "content": None, "tool_calls": "x"}]),
        "messages[0].tool_calls",
        "invalid_type",
    ),
    (
        body(messages=[{"role": "assistant", "content": None, "tool_calls": [{"type": "function"}]}]),
        "messages[0].tool_calls[0].id",
        MISSING,
    ),
    (
        body(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "x", "function": {}}]}]),
        "messages[0].tool_calls[0].type",
        "invalid_value",
    ),
    (
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        MISSING,
    ),
    (
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
        "invalid_type",
    ),
    (body(messages=[{"role": "tool", "content": "42"}]), "messages[0].tool_call_id", MISSING),
    (
        body(messages=[{"role": "tool", "content": "42", "tool_call_id": 7}]),
        "messages[0].tool_call_id",
        "invalid_type",
    ),
    (body(temperature=2.5), "temperature", "invalid_value"),
    (body(temperature=-0.1), "temperature", "invalid_value"),
    (body(temperature=True), "temperature", "invalid_type"),
    (body(temperature="1"), "temperature", "invalid_type"),
    (body(top_p=1.5), "top_p", "invalid_value"),
    (body(top_p=False), "top_p", "invalid_type"),
    (body(max_tokens=0), "max_tokens", "invalid_value"),
    (body(max_tokens=1.5), "max_tokens", "invalid_type"),
    (body(max_tokens=True), "max_tokens", "invalid_type"),
    (body(max_completion_tokens=-3), "max_completion_tokens", "invalid_value"),
    (body(stop=5), "stop", "invalid_type"),
    (body(stop=["a", 1]), "stop", "invalid_type"),
    (body(stop=[]), "stop", "empty_array"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop", "array_above_max_length"),
    (body(stream="yes"), "stream", "invalid_type"),
    (body(stream=1), "stream", "invalid_type"),
    (body(stream=True, stream_options=[]), "stream_options", "invalid_type"),
    (
        body(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        "invalid_type",
    ),
    (body(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    (body(stream=False, stream_options={"include_usage": True}), "stream_options", "invalid_value"),
    (body(tools={}), "tools", "invalid_type"),
    (body(tools=[]), "tools", "empty_array"),
    (body(tools=[{"type": "code", "function": {"name": "f"}}]), "tools[0].type", "invalid_value"),
    (body(tools=[{"type": "function"}]), "tools[0].function", MISSING),
    (body(tools=[{"type": "function", "function": {}}]), "tools[0].function.name", MISSING),
    (
        body(tools=[{"type": "function", "function": {"name": "has space"}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "x" * 65}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f\n"}}]),
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "description": 1}}]),
        "tools[0].function.description",
        "invalid_type",
    ),
    (
        body(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
        "tools[0].function.parameters",
        "invalid_type",
    ),
    (body(tools=[TOOL], tool_choice="always"), "tool_choice", "invalid_value"),
    (body(tools=[TOOL], tool_choice=1), "tool_choice", "invalid_type"),
    (
        body(tools=[TOOL], tool_choice={"type": "tool", "function": {"name": "get_weather"}}),
        "tool_choice.type",
        "invalid_value",
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "function", "function": {}}),
        "tool_choice.function",
        "invalid_type",
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "other"}}),
        "tool_choice.function.name",
        "invalid_value",
    ),
    (body(tool_choice="auto"), "tool_choice", "invalid_value"),
    (body(tool_choice="required"), "tool_choice", "invalid_value"),
    (body(tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice", "invalid_value"),
    (body(response_format="json"), "response_format", "invalid_type"),
    (body(response_format={}), "response_format.type", MISSING),
    (body(response_format={"type": "yaml"}), "response_format.type", "invalid_value"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema", MISSING),
    (
        body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name",
        MISSING,
    ),
    (
        body(response_format={"type": "json_schema", "json_schema": {"name": "bad name", "schema": {}}}),
        "response_format.json_schema.name",
        "invalid_value",
    ),
    (
        body(response_format={"type": "json_schema", "json_schema": {"name": "n"}}),
        "response_format.json_schema.schema",
        MISSING,
    ),
    (
        body(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": []}}),
        "response_format.json_schema.schema",
        "invalid_type",
    ),
    (body(n=129), "n", "invalid_value"),
    (body(n=0), "n", "invalid_value"),
    (body(n=1.0), "n", "invalid_type"),
    (body(seed=1.5), "seed", "invalid_type"),
    (body(seed=True), "seed", "invalid_type"),
    (body(user=5), "user", "invalid_type"),
    (body(presence_penalty=2.1), "presence_penalty", "invalid_value"),
    (body(frequency_penalty=-2.1), "frequency_penalty", "invalid_value"),
    (body(frequency_penalty=True), "frequency_penalty", "invalid_type"),
    (body(logit_bias=[1]), "logit_bias", "invalid_type"),
    (body(logit_bias={"abc": 1}), "logit_bias.abc", "invalid_value"),
    (body(logit_bias={"50256": 101}), "logit_bias.50256", "invalid_value"),
    (body(logit_bias={"50256": "1"}), "logit_bias.50256", "invalid_type"),
    (body(logit_bias={"50256": True}), "logit_bias.50256", "invalid_type"),
    (body(parallel_tool_calls="true"), "parallel_tool_calls", "invalid_type"),
    (body(messages=[{"role": "function", "content": "r"}]), "messages[0].name", MISSING),
    (body(messages=[{"role": "function", "name": "f"}]), "messages[0].content", MISSING),
    (
        body(messages=[{"role": "function", "name": "f", "content": [{"type": "text", "text": "r"}]}]),
        "messages[0].content",
        "invalid_type",
    ),
    (body(messages=[user([{"type": "input_audio"}])]), "messages[0].content[0].input_audio", MISSING),
    (
        body(messages=[user([{"type": "input_audio", "input_audio": {"format": "wav"}}])]),
        "messages[0].content[0].input_audio.data",
        MISSING,
    ),
    (
        body(messages=[user([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}])]),
        "messages[0].content[0].input_audio.format",
        "invalid_value",
    ),
    (body(messages=[user([{"type": "file", "file": "f"}])]), "messages[0].content[0].file", "invalid_type"),
    (
        body(messages=[user([{"type": "file", "file": {"file_id": 7}}])]),
        "messages[0].content[0].file.file_id",
        "invalid_type",
    ),
    (
        body(messages=[{"role": "system", "content": [{"type": "file", "file": {"file_id": "f"}}]}]),
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        body(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]),
        "messages[0].tool_calls[0].custom.name",
        MISSING,
    ),
    (
        body(
            messages=[
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "g"}}]}
            ]
        ),
        "messages[0].tool_calls[0].custom.input",
        MISSING,
    ),
    (body(tools=[{"type": "custom"}]), "tools[0].custom", MISSING),
    (body(tools=[{"type": "custom", "custom": {"name": ""}}]), "tools[0].custom.name", "invalid_type"),
    (
        body(tools=[{"type": "custom", "custom": {"name": "g", "format": {"type": "yaml"}}}]),
        "tools[0].custom.format.type",
        "invalid_value",
    ),
    (
        body(
            tools=[
                {
                    "type": "custom",
                    "custom": {"name": "g", "format": {"type": "grammar", "grammar": {"definition": "x"}}},
                }
            ]
        ),
        "tools[0].custom.format.grammar.syntax",
        MISSING,
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "custom", "custom": {"name": "get_weather"}}),
        "tool_choice.custom.name",
        "invalid_value",
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "allowed_tools", "allowed_tools": {"tools": []}}),
        "tool_choice.allowed_tools.mode",
        MISSING,
    ),
    (
        body(
            tools=[TOOL],
            tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "always", "tools": []}},
        ),
        "tool_choice.allowed_tools.mode",
        "invalid_value",
    ),
    (
        body(tools=[TOOL], tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto"}}),
        "tool_choice.allowed_tools.tools",
        MISSING,
    ),
    (
        body(
            tools=[TOOL],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "x"}]},
            },
        ),
        "tool_choice.allowed_tools.tools[0].type",
        "invalid_value",
    ),
    (
        body(
            tools=[TOOL],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]},
            },
        ),
        "tool_choice.allowed_tools.tools[0].function.name",
        "invalid_value",
    ),
    (body(logprobs="yes"), "logprobs", "invalid_type"),
    (body(logprobs=1), "logprobs", "invalid_type"),
    (body(logprobs=True, top_logprobs=21), "top_logprobs", "invalid_value"),
    (body(logprobs=True, top_logprobs=-1), "top_logprobs", "invalid_value"),
    (body(logprobs=True, top_logprobs=2.0), "top_logprobs", "invalid_type"),
    (body(top_logprobs=2), "top_logprobs", "invalid_value"),
    (body(logprobs=False, top_logprobs=0), "top_logprobs", "invalid_value"),
    (body(reasoning_effort="extreme"), "reasoning_effort", "invalid_value"),
    (body(reasoning_effort=1), "reasoning_effort", "invalid_type"),
    (body(store="yes"), "store", "invalid_type"),
    (body(metadata=["a"]), "metadata", "invalid_type"),
    (body(metadata={"a": 1}), "metadata.a", "invalid_type"),
    (body(metadata={"k": "v" * 513}), "metadata.k", "invalid_value"),
    (body(metadata={"k" * 65: "v"}), f"metadata.{'k' * 65}", "invalid_value"),
    (body(metadata={str(n): "v" for n in range(17)}), "metadata", "invalid_value"),
    (body(modalities="text"), "modalities", "invalid_type"),
    (body(modalities=["text", "video"]), "modalities[1]", "invalid_value"),
    (body(service_tier=1), "service_tier", "invalid_type"),
    (body(verbosity=["low"]), "verbosity", "invalid_type"),
    (body(safety_identifier=7), "safety_identifier", "invalid_type"),
    (body(prompt_cache_key={}), "prompt_cache_key", "invalid_type"),
    (body(prediction="draft"), "prediction", "invalid_type"),
    (body(prediction={"type": "diff", "content": "x"}), "prediction.type", "invalid_value"),
    (body(prediction={"type": "content"}), "prediction.content", MISSING),
    (body(prediction={"type": "content", "content": 3}), "prediction.content", "invalid_type"),
    (
        body(
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": 1}}
        ),
        "response_format.json_schema.strict",
        "invalid_type",
    ),
    (
        body(messages=[user([{"type": "image_url", "image_url": {"url": "u", "detail": 1}}])]),
        "messages[0].content[0].image_url.detail",
        "invalid_type",
    ),
]


@pytest.mark.parametrize(("request_body", "param", "code"), INVALID, ids=[f"{p}:{c}" for _, p, c in INVALID])
def test_invalid_body_names_the_field_and_the_problem(
    request_body: dict[str, Any], param: str, code: str
) -> None:
    """Each invalid field is a 400 invalid_request with this param and code."""
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(request_body)
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, param, code)
    assert caught.value.message


VALID: list[dict[str, Any]] = [
    body(),
    body(temperature=0, top_p=1, max_tokens=16, max_completion_tokens=8, seed=-4, user="u", n=1),
    body(n=3),
    body(temperature=2.0, presence_penalty=-2, frequency_penalty=2, logit_bias={"50256": -100, "-1": 0.5}),
    body(temperature=None, top_p=None, stop=None, n=None, stream=None, tools=None, tool_choice=None),
    body(stop="END"),
    body(stop=["a", "b", "c", "d"]),
    body(stream=True, stream_options={"include_usage": True}),
    body(stream=True, stream_options=None),
    body(tools=[TOOL], tool_choice="required", parallel_tool_calls=False),
    body(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    body(tool_choice="none"),
    body(response_format={"type": "text"}),
    body(response_format={"type": "json_object"}),
    body(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}},
        }
    ),
    body(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "system", "content": "sys"},
            user(
                [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:x"}},
                ]
            ),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant", "content": "", "name": "bot"},
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
            {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            {"role": "assistant", "audio": {"id": "audio_abc"}},
        ]
    ),
    body(metadata={"a": "b"}, reasoning_effort="low", some_future_field=[1, 2]),
    body(
        store=True,
        metadata={str(n): "v" * 512 for n in range(16)},
        modalities=["text", "audio"],
        service_tier="flex",
        verbosity="low",
        safety_identifier="user-1",
        prompt_cache_key="k",
        prediction={"type": "content", "content": [{"type": "text", "text": "draft"}]},
    ),
    body(
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": True}},
        messages=[user([{"type": "image_url", "image_url": {"url": "u", "detail": "high"}}])],
    ),
    body(logprobs=True, top_logprobs=20),
    body(logprobs=False, top_logprobs=None),
    *(body(reasoning_effort=effort) for effort in ("none", "minimal", "medium", "high", "xhigh", "max")),
    body(
        messages=[
            user(
                [
                    {"type": "text", "text": "transcribe and summarize"},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}},
                    {"type": "file", "file": {"file_id": "file-abc"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
                    },
                ]
            ),
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "lookup", "arguments": "{}"},
            },
            {"role": "function", "name": "lookup", "content": "42"},
            {"role": "function", "name": "lookup", "content": None},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "1"},
        ]
    ),
    body(
        tools=[
            TOOL,
            {"type": "custom", "custom": {"name": "sql", "description": "Runs a query"}},
            {"type": "custom", "custom": {"name": "free", "format": {"type": "text"}}},
            {
                "type": "custom",
                "custom": {
                    "name": "digits",
                    "format": {"type": "grammar", "grammar": {"definition": "^[0-9]+$", "syntax": "regex"}},
                },
            },
        ],
        tool_choice={"type": "custom", "custom": {"name": "sql"}},
    ),
    body(
        tools=[TOOL, {"type": "custom", "custom": {"name": "sql"}}],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [
                    {"type": "function", "function": {"name": "get_weather"}},
                    {"type": "custom", "custom": {"name": "sql"}},
                ],
            },
        },
    ),
    body(
        tools=[TOOL],
        tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
    ),
]


@pytest.mark.parametrize("request_body", VALID)
def test_valid_body_passes_unchanged(request_body: dict[str, Any]) -> None:
    """A valid body is accepted and kept as sent, unknown fields included."""
    snapshot = repr(request_body)
    request = validate_chat_request(request_body)
    assert request.body is request_body and repr(request.body) == snapshot
    assert request.model == MODEL


def test_stream_flags() -> None:
    """stream and stream_options.include_usage become the job's flags."""
    request = validate_chat_request(body(stream=True, stream_options={"include_usage": True}))
    assert (request.stream, request.include_usage) == (True, True)
    request = validate_chat_request(body())
    assert (request.stream, request.include_usage) == (False, False)


async def test_app_validation_error_is_400_envelope(ingress: Ingress) -> None:
    """Through the app a validation failure is a 400 envelope with param and code, and nothing is queued."""
    response = await ingress.chat(body(temperature=3))
    assert_error(response, 400, "invalid_request", "invalid_value", "temperature")
    assert await ingress.redis.llen("rq:queue:simulated") == 0


async def test_malformed_json_is_400(ingress: Ingress) -> None:
    """A body that is not JSON is 400 invalid_json."""
    response = await ingress.client.post("/v1/chat/completions", content=b"{nope", headers=ingress.headers())
    assert_error(response, 400, "invalid_request", "invalid_json")


async def test_non_object_json_is_400(ingress: Ingress) -> None:
    """A JSON body that is not an object is 400 invalid_type."""
    response = await ingress.client.post("/v1/chat/completions", content=b"[1, 2]", headers=ingress.headers())
    assert_error(response, 400, "invalid_request", "invalid_type")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_content_type_is_400(ingress: Ingress, content_type: str | None) -> None:
    """A body not declared as application/json is 400 unsupported_content_type (the API lists no 415)."""
    headers = {"Authorization": f"Bearer {ingress.api_key}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = await ingress.client.post("/v1/chat/completions", content=b"{}", headers=headers)
    assert_error(response, 400, "invalid_request", "unsupported_content_type")


async def test_json_content_type_with_charset_is_accepted(ingress: Ingress) -> None:
    """`application/json; charset=utf-8` is JSON."""
    headers = ingress.headers({"Content-Type": "Application/JSON; charset=utf-8"})
    response = await ingress.client.post("/v1/chat/completions", content=b"[]", headers=headers)
    assert_error(response, 400, "invalid_request", "invalid_type")


@pytest.mark.parametrize(
    ("path", "coding"),
    [
        ("/v1/chat/completions", {"Content-Encoding": "gzip"}),
        ("/v1/chat/completions", {"Content-Encoding": "identity, br"}),
        ("/v1/chat/completions", {"Transfer-Encoding": "gzip, chunked"}),
        ("/v1/batches", {"Content-Encoding": "deflate"}),
        ("/v1/files", {"Content-Encoding": "gzip"}),
    ],
)
async def test_a_coded_body_is_400_unsupported_content_encoding(
    ingress: Ingress, path: str, coding: dict[str, str]
) -> None:
    """A body sent compressed (a content or transfer coding other than chunked) is 400
    unsupported_content_encoding, never parsed as what it is not, and nothing is queued."""
    raw = orjson.dumps(body())
    headers = ingress.headers(coding)
    response = await ingress.client.post(path, content=gzip.compress(raw), headers=headers)
    assert_error(response, 400, "invalid_request", "unsupported_content_encoding")
    assert response.headers["accept-encoding"] == "identity"
    assert await ingress.redis.llen("rq:queue:simulated") == 0


async def test_an_identity_content_encoding_is_the_body_as_it_is(ingress: Ingress) -> None:
    """`Content-Encoding: identity` is no coding: the body is read as it came."""
    headers = ingress.headers({"Content-Encoding": "Identity"})
    response = await ingress.client.post("/v1/chat/completions", content=b"[]", headers=headers)
    assert_error(response, 400, "invalid_request", "invalid_type")


async def test_unknown_model_is_404(ingress: Ingress) -> None:
    """A model id not in the catalog is 404 model_not_found with param model."""
    response = await ingress.chat(body(model="nobody/nothing"))
    assert_error(response, 404, "invalid_request", "model_not_found", "model")


async def test_declared_oversized_body_is_413(ingress_factory: IngressFactory) -> None:
    """A Content-Length above max_body_bytes is a 413 envelope."""
    async with ingress_factory(max_body_bytes=1000) as ingress:
        response = await ingress.chat(body(messages=[user("x" * 2000)]))
        assert_error(response, 413, "invalid_request", "payload_too_large")


async def test_streamed_oversized_body_is_413(ingress_factory: IngressFactory) -> None:
    """A body without Content-Length that grows past max_body_bytes is cut off with a 413."""
    async with ingress_factory(max_body_bytes=1000) as ingress:
        call = asgi_chat(ingress, body(messages=[user("x" * 2000)]), chunk_size=300)
        await call.run()
        assert call.status == 413
        assert b"payload_too_large" in call.body
        headers = dict(call.sent[0]["headers"])
        assert b"x-request-id" in headers and b"api-version" in headers


async def test_unknown_fields_reach_the_job_unchanged(ingress: Ingress) -> None:
    """Fields the ingress does not know are passed through to the worker in the job body."""
    sent = body(some_future_field={"nested": [1, 2]}, metadata={"k": "v"}, stream=True)
    request = ingress.chat_task(sent)
    taken = await ingress.worker.take()
    assert taken.job.body == sent
    await ingress.worker.start(taken)
    await ingress.worker.done(taken)
    assert (await request).status_code == 200


async def test_invalid_content_length_is_400(ingress: Ingress) -> None:
    """A Content-Length that is not a number is a 400 envelope, not a crash."""
    call = asgi_chat(ingress, body())
    call.headers.append((b"content-length", b"lots"))
    await call.run()
    assert call.status == 400
    assert b'"code":"invalid_value"' in call.body


async def test_include_usage_reaches_the_job(ingress: Ingress) -> None:
    """stream_options.include_usage becomes the job's include_usage flag."""
    request = ingress.chat_task(body(stream=True, stream_options={"include_usage": True}))
    taken = await ingress.worker.take()
    assert (taken.job.stream, taken.job.include_usage) == (True, True)
    await ingress.worker.start(taken)
    await ingress.worker.done(taken)
    assert (await request).status_code == 200


def nested(depth: int) -> Any:
    """A JSON value of ``depth`` arrays and objects inside each other."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_json_nested_up_to_the_limit_is_accepted() -> None:
    """A body whose nesting (the body itself counting as one) is exactly MAX_JSON_DEPTH parses."""
    raw = orjson.dumps(body(extra=nested(MAX_JSON_DEPTH - 1)))
    assert parse_json_object(raw)["extra"] == nested(MAX_JSON_DEPTH - 1)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 254, 600, 1000])
def test_json_nested_beyond_the_limit_is_invalid_json(depth: int) -> None:
    """Nesting beyond MAX_JSON_DEPTH, up to what the parser itself accepts, is 400 invalid_json."""
    raw = orjson.dumps(body(extra=nested(min(depth, 250))))
    if depth > 250:  # deeper than orjson may serialize: build the text by hand
        raw = b'{"model":"m","messages":[],"extra":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(raw)
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("depth", [300, 1000])
async def test_deeply_nested_tool_schema_is_400_through_the_app(ingress: Ingress, depth: int) -> None:
    """A tool schema nested 300-1000 deep (parsed fine, unserializable) is a 400 envelope, nothing queued."""
    schema = b'{"type":"object","properties":{"a":' + b"[" * depth + b"]" * depth + b"}}"
    raw = (
        b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",'
        b'"function":{"name":"f","parameters":%s}}]}' % (MODEL.encode(), schema)
    )
    response = await ingress.client.post("/v1/chat/completions", content=raw, headers=ingress.headers())
    assert_error(response, 400, "invalid_request", "invalid_json")
    assert await ingress.redis.llen("rq:queue:simulated") == 0
