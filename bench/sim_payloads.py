"""OpenAI wire payloads of the simulated upstream, built as bytes ready to write.

Streams reuse one per-request prefix, so each chunk costs a bytes concatenation, not a JSON encoding.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

TOOL_NAME = "get_weather"
TOOL_ARGUMENTS = '{"location": "Paris, France", "unit": "celsius", "days": 3}'
TOOL_INPUT = "SELECT city FROM towns WHERE rain > 3"
TOOL_ARGUMENT_PIECE = 12
DONE_EVENT = b"data: [DONE]\n\n"

_ERROR_KINDS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The simulated upstream refused the request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def token_text(index: int) -> str:
    """The text of content token ``index``; a load generator can check order with it."""
    return f"w{index} "


def expected_content(tokens: int) -> str:
    """The whole content of an answer of ``tokens`` tokens."""
    return "".join(token_text(i) for i in range(tokens))


@dataclass(frozen=True, slots=True)
class CalledTool:
    """The tool a ``tools`` answer calls: a function (its call carries ``function.arguments``, JSON) or a
    custom tool (``custom.input``, free text)."""

    name: str = TOOL_NAME
    custom: bool = False

    @property
    def kind(self) -> str:
        """The call's ``type``, and the field holding its name and text."""
        return "custom" if self.custom else "function"

    @property
    def text_field(self) -> str:
        return "input" if self.custom else "arguments"

    @property
    def text(self) -> str:
        """The call's whole text."""
        return TOOL_INPUT if self.custom else TOOL_ARGUMENTS

    def pieces(self) -> list[str]:
        """The call's text, split the way a stream sends it."""
        text, step = self.text, TOOL_ARGUMENT_PIECE
        return [text[i : i + step] for i in range(0, len(text), step)]

    def call(self, text: str) -> dict[str, Any]:
        """The whole call, or a stream's first piece of it (``text`` empty), with a new id."""
        called = {"name": self.name, self.text_field: text}
        return {"id": "call_" + secrets.token_hex(8), "type": self.kind, self.kind: called}


def new_completion_id() -> str:
    return "chatcmpl-sim" + secrets.token_hex(10)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def count_prompt_tokens(messages: Any) -> int:
    """A deterministic stand-in for a tokenizer: whitespace-separated words of string contents."""
    if not isinstance(messages, list):
        return 0
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
    return words


def error_body(status: int, message: str | None = None) -> bytes:
    """An OpenAI error envelope for ``status``."""
    fallback = ("server_error", None, f"Simulated HTTP {status}.")
    kind, code, default_message = _ERROR_KINDS.get(status, fallback)
    error = {"message": message or default_message, "type": kind, "param": None, "code": code}
    return orjson.dumps({"error": error})


def models_body(model_ids: list[str]) -> bytes:
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "sim"} for m in model_ids]
    return orjson.dumps({"object": "list", "data": data})


def completion_body(model: str, tokens: int, prompt_tokens: int, tool: CalledTool | None) -> bytes:
    """A whole ``chat.completion`` object: ``tokens`` of text, or a call of ``tool``."""
    if tool is not None:
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [tool.call(tool.text)]}
        finish, completion_tokens = "tool_calls", len(tool.pieces())
    else:
        message = {"role": "assistant", "content": expected_content(tokens), "refusal": None}
        finish, completion_tokens = "stop", tokens
    body = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }
    return orjson.dumps(body)


_OPEN_CHOICE_END = b'"},"logprobs":null,"finish_reason":null}'


def _choice(delta: dict[str, Any]) -> bytes:
    return orjson.dumps({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})


class ChunkWriter:
    """Builds the SSE events of one ``chat.completion.chunk`` stream."""

    __slots__ = ("_head", "_tail")

    def __init__(self, model: str, include_usage: bool) -> None:
        head = {"id": new_completion_id(), "object": "chat.completion.chunk", "created": int(time.time())}
        encoded = orjson.dumps({**head, "model": model, "system_fingerprint": None})
        self._head = b"data: " + encoded[:-1] + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def _event(self, choice: bytes) -> bytes:
        return self._head + choice + self._tail

    def role(self) -> bytes:
        return self._event(
            b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            b'"logprobs":null,"finish_reason":null}'
        )

    def content(self, index: int) -> bytes:
        text = token_text(index).encode()
        return self._event(b'{"index":0,"delta":{"content":"' + text + _OPEN_CHOICE_END)

    def malformed(self) -> bytes:
        return self._head + b'{"index":0,"delta":{"content":"broken\n\n'

    def tool_call_start(self, tool: CalledTool) -> bytes:
        delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **tool.call("")}]}
        return self._event(_choice(delta))

    def tool_call_piece(self, tool: CalledTool, piece: str) -> bytes:
        call = {"index": 0, tool.kind: {tool.text_field: piece}}
        delta = {"tool_calls": [call]}
        return self._event(_choice(delta))

    def finish(self, reason: str) -> bytes:
        return self._event(b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}' % reason.encode())

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage(prompt_tokens, completion_tokens)) + b"}\n\n"
