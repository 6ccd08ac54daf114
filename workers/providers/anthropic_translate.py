"""OpenAI chat completions <-> Anthropic Messages API, as pure functions (no I/O).

Request (:func:`to_anthropic_request`): ``system``/``developer`` messages become the top-level ``system``;
user and assistant text and images become content blocks; assistant ``tool_calls`` become ``tool_use``
blocks and ``tool`` messages ``tool_result`` blocks of a user turn (consecutive turns of one role are
merged, as Anthropic wants strict alternation; blank text, which it refuses, is left out);
``tools``/``tool_choice`` map to Anthropic's; ``max_tokens`` is required there (``default_max_tokens``
when absent); ``stop`` becomes ``stop_sequences``; ``response_format`` JSON becomes a system instruction;
``tool_choice`` ``allowed_tools`` sends only the allowed tools (``auto`` or ``any`` of them).

What the Messages API has no counterpart for is the client's 400 ``unsupported_value`` naming the field,
never dropped and never sent broken: ``n`` above 1, ``function`` messages and an assistant's legacy
``function_call`` and ``audio``, ``input_audio`` and ``file`` content parts, ``custom`` tools and calls of
them, ``logprobs``, audio output, stop sequences of whitespace only, a conversation of blank messages only,
a blank last user message after an assistant turn (left out, it would turn the assistant's text into a
prefill that the model continues).

Response: :class:`StreamTranslator` turns streaming events into :class:`Delta` objects;
:func:`message_deltas` and :func:`message_to_completion` handle a non-streamed message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import (
    AIORouterError,
    InvalidRequest,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamUnavailable,
)
from workers.providers.base import Delta, ToolCallDelta, Usage, text_or_none, token_count

DEFAULT_MAX_TOKENS = 4096
JSON_INSTRUCTION = "Respond only with a single valid JSON object, without any text before or after it."

FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


# --- request --------------------------------------------------------------------------------------


def to_anthropic_request(
    body: Mapping[str, Any],
    upstream_model: str,
    *,
    stream: bool,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat completion request ``body``."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:  # the Messages API has one answer per request
        raise InvalidRequest(
            "This model's provider (Anthropic) returns one choice per request: use n=1.",
            param="n",
            code="unsupported_value",
        )
    if body.get("logprobs") is True:  # the answer's shape would lack what the client asked for
        raise unsupported("logprobs", "'logprobs': it returns no log probabilities")
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise unsupported("modalities", "audio output")
    if body.get("audio") is not None:
        raise unsupported("audio", "audio output")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    last_user: int | None = None  # the last user message, unless an assistant turn follows it
    for index, message in enumerate(body.get("messages") or ()):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "user":
            _append(turns, "user", _user_blocks(f"messages[{index}]", message.get("content")))
            last_user = index
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(f"messages[{index}]", message))
            last_user = None
        elif role == "tool":
            _append(turns, "user", [_tool_result(message)])
        elif role == "function":
            raise unsupported(
                f"messages[{index}].role",
                "'function' messages (legacy function calling): use 'tool' messages",
            )
        else:
            raise InvalidRequest(
                f"Unsupported message role {role!r}.",
                param=f"messages[{index}].role",
                code="unsupported_value",
            )
    if not turns:  # blank text is left out, and Anthropic refuses a request without messages
        raise unsupported("messages", "a conversation whose every message is blank")
    if last_user is not None and turns[-1]["role"] == "assistant":  # it would continue the assistant's text
        raise unsupported(
            f"messages[{last_user}].content", "a blank last user message after an assistant turn"
        )
    request: dict[str, Any] = {
        "model": upstream_model,
        "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens,
        "stream": stream,
    }
    instruction = _format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    prompt = "\n\n".join(s for s in system if s.strip())
    if prompt:
        request["system"] = prompt
    if body.get("temperature") is not None:
        request["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range is 0..1
    # top_p 1 keeps every token, Anthropic's default: not sent, as newer models refuse it beside temperature
    if body.get("top_p") is not None and body["top_p"] < 1:
        request["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        sequences = [stop] if isinstance(stop, str) else list(stop)
        if not all(sequence.strip() for sequence in sequences):
            raise unsupported("stop", "stop sequences that are empty or whitespace only")
        request["stop_sequences"] = sequences
    if body.get("tools"):
        tools = [_tool(f"tools[{index}]", tool) for index, tool in enumerate(body["tools"])]
        allowed = _allowed(tools, body.get("tool_choice"))
        request["tools"] = allowed or tools  # an empty allowed list: the tools stay, none may be called
        choice = _tool_choice(body.get("tool_choice") if allowed else "none", body.get("parallel_tool_calls"))
        if choice:
            request["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    return request


def unsupported(param: str, what: str) -> InvalidRequest:
    """The client's 400 for ``what``, which the Messages API has no counterpart for."""
    return InvalidRequest(
        f"This model's provider (Anthropic) does not take {what}.", param=param, code="unsupported_value"
    )


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or () if p.get("type") == "text")


def _assistant_text_of(message: Mapping[str, Any]) -> str:
    """An assistant turn's words: its text parts, and its refusal (a ``refusal`` part or field), which
    Anthropic has no block for: sent as the text it is, never dropped with the turn."""
    content = message.get("content")
    if isinstance(content, str):
        pieces = [content]
    else:
        pieces = [
            p.get("text", "") if p.get("type") == "text" else p.get("refusal", "")
            for p in content or ()
            if p.get("type") in ("text", "refusal")
        ]
    if isinstance(message.get("refusal"), str):
        pieces.append(message["refusal"])
    return "\n".join(piece for piece in pieces if piece)


def _text_blocks(text: str) -> list[dict[str, Any]]:
    """``text`` as a text block, or none when it is blank: Anthropic refuses an empty or whitespace-only
    one (400 "text content blocks must be non-empty")."""
    return [{"type": "text", "text": text}] if text.strip() else []


def _user_blocks(path: str, content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return _text_blocks(content)
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            blocks += _text_blocks(part.get("text", ""))
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}))
        elif kind in ("input_audio", "file"):
            raise unsupported(f"{path}.content[{index}].type", f"'{kind}' content parts")
        else:
            raise InvalidRequest(
                f"Unsupported content part {kind!r}.",
                param=f"{path}.content[{index}].type",
                code="unsupported_value",
            )
    return blocks


def _image(image_url: Any) -> dict[str, Any]:
    url = image_url if isinstance(image_url, str) else str(image_url.get("url", ""))
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:") :].split(";")[0]
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(path: str, message: Mapping[str, Any]) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:  # no id to pair it with a result: refuse, never drop it
        raise unsupported(f"{path}.function_call", "the legacy 'function_call': use 'tool_calls'")
    if message.get("audio") is not None:  # an earlier answer OpenAI spoke, known to OpenAI by its id only
        raise unsupported(f"{path}.audio", "an assistant turn's 'audio' (an earlier spoken answer)")
    blocks = _text_blocks(_assistant_text_of(message))
    for index, call in enumerate(message.get("tool_calls") or ()):
        if call.get("type", "function") != "function":
            raise unsupported(f"{path}.tool_calls[{index}].type", "calls of custom tools")
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):  # Anthropic's tool_use input is an object
            raise InvalidRequest(
                "Tool call arguments must be a JSON object.",
                param=f"{path}.tool_calls[{index}].function.arguments",
                code="invalid_value",
            )
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": arguments}
        )
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id"),
        "content": _text_of(message.get("content")),
    }


def _tool(path: str, tool: Mapping[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function":
        raise unsupported(f"{path}.type", "custom tools: use function tools")
    function = tool.get("function") or {}
    converted: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _allowed(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    """The tools the model may call: those an ``allowed_tools`` choice lists, else all of them."""
    if not isinstance(choice, Mapping) or choice.get("type") != "allowed_tools":
        return tools
    listed = (choice.get("allowed_tools") or {}).get("tools") or ()
    for index, tool in enumerate(listed):
        if tool.get("type", "function") != "function":
            raise unsupported(f"tool_choice.allowed_tools.tools[{index}].type", "custom tools")
    names = {(tool.get("function") or {}).get("name") for tool in listed}
    return [tool for tool in tools if tool["name"] in names]


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        converted: dict[str, Any] = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        mode = (choice.get("allowed_tools") or {}).get("mode")
        converted = {"type": "any" if mode == "required" else "auto"}
    elif isinstance(choice, Mapping):
        if choice.get("type", "function") != "function":
            raise unsupported("tool_choice.type", "custom tools: use function tools")
        converted = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        converted = {"type": "auto"}
    if parallel is False:
        converted["disable_parallel_tool_use"] = True
    return converted


def _format_instruction(response_format: Any) -> str:
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_object":
        return JSON_INSTRUCTION
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            return f"{JSON_INSTRUCTION} It must conform to this JSON schema: {orjson.dumps(schema).decode()}"
        return JSON_INSTRUCTION
    return ""


# --- response -------------------------------------------------------------------------------------


def error_from_anthropic(error: Mapping[str, Any], status: int | None = None) -> AIORouterError:
    """Our error for an Anthropic ``{"type": ..., "message": ...}`` error (a body or a stream event)."""
    kind = str(error.get("type", ""))
    message = str(error.get("message") or "The upstream provider returned an error.")
    if kind == "invalid_request_error" or status == 400:
        return UpstreamBadRequest(message)
    if kind in ("overloaded_error", "rate_limit_error", "api_error", "timeout_error") or (status or 0) >= 429:
        return UpstreamUnavailable(message)
    return UpstreamError(message)


def read_usage(usage: Mapping[str, Any], current: Usage) -> Usage:
    """Anthropic usage (input tokens, cache reads and writes, output tokens so far) over ``current``.
    OpenAI's ``prompt_tokens`` counts every prompt token, so cache reads and writes are added to Anthropic's
    ``input_tokens``; cache reads are the ``cached_tokens`` (priced as cached input); thinking tokens are
    part of ``output_tokens`` already."""
    prompt, completion, cached = current.prompt_tokens, current.completion_tokens, current.cached_tokens
    if usage.get("input_tokens") is not None:
        cached = token_count(usage.get("cache_read_input_tokens") or 0)
        created = token_count(usage.get("cache_creation_input_tokens") or 0)
        prompt = token_count(token_count(usage["input_tokens"]) + cached + created)
    if usage.get("output_tokens") is not None:
        completion = token_count(usage["output_tokens"])  # cumulative in every event that carries it
    return Usage(prompt, completion, cached)


REASONING = "reasoning_content"  # where thinking goes: the field OpenAI-compatible reasoners (DeepSeek) use


def _finish(stop_reason: Any, stop_sequence: Any) -> Delta:
    """The finish delta; the stop sequence that ended the message, if one did, rides along as the
    choice's ``stop_sequence``."""
    extra = {"stop_sequence": stop_sequence} if isinstance(stop_sequence, str) and stop_sequence else None
    return Delta(finish_reason=finish_reason(stop_reason), choice_extra=extra)


@dataclass(slots=True)
class StreamTranslator:
    """Anthropic streaming events, fed one by one, to deltas.  ``finished`` once ``message_stop`` came."""

    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    finished: bool = False
    _tool_index: dict[int, int] = field(default_factory=dict)  # content block index -> OpenAI tool index
    # Tool blocks no JSON piece came for yet -> their arguments if none comes: the start's input ("{}")
    _unstreamed_input: dict[int, str] = field(default_factory=dict)

    def feed(self, event: Mapping[str, Any]) -> list[Delta]:
        kind = event.get("type")
        if kind == "message_start":
            self.usage = read_usage((event.get("message") or {}).get("usage") or {}, self.usage)
        elif kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop":
            return self._block_stop(int(event.get("index", 0)))
        elif kind == "message_delta":
            self.usage = read_usage(event.get("usage") or {}, self.usage)
            delta = event.get("delta") or {}
            return [_finish(delta.get("stop_reason"), delta.get("stop_sequence"))]
        elif kind == "message_stop":
            self.finished = True
            return [Delta(usage=self.usage)]
        elif kind == "error":
            raise error_from_anthropic(event.get("error") or {})
        return []  # ping, and event types added later

    def _block_start(self, index: int, block: Mapping[str, Any]) -> list[Delta]:
        if block.get("type") == "tool_use":
            tool_index = self._tool_index[index] = len(self._tool_index)
            self._unstreamed_input[index] = orjson.dumps(block.get("input") or {}).decode()
            call = ToolCallDelta(
                index=tool_index, id=text_or_none(block.get("id")), name=text_or_none(block.get("name"))
            )
            return [Delta(tool_calls=(call,))]
        if block.get("type") == "text" and block.get("text"):
            return [Delta(content=text_or_none(block["text"]))]
        if block.get("type") == "thinking" and block.get("thinking"):
            return [Delta(extra={REASONING: text_or_none(block["thinking"])})]
        return []

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> list[Delta]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [Delta(content=text_or_none(delta["text"]))]
        if (
            delta.get("type") == "input_json_delta"
            and delta.get("partial_json")
            and index in self._tool_index
        ):
            arguments = text_or_none(delta["partial_json"]) or ""
            self._unstreamed_input.pop(index, None)
            return [Delta(tool_calls=(ToolCallDelta(index=self._tool_index[index], arguments=arguments),))]
        if delta.get("type") == "thinking_delta" and delta.get("thinking"):
            return [Delta(extra={REASONING: text_or_none(delta["thinking"])})]
        return []  # signature deltas have no OpenAI counterpart

    def _block_stop(self, index: int) -> list[Delta]:
        """A tool block's end: a call of a tool that takes nothing streamed no JSON, and its arguments are
        the start's input (``{}``), as a whole message gives them: never "", which no JSON parser reads."""
        arguments = self._unstreamed_input.pop(index, None)
        if arguments is None:
            return []
        return [Delta(tool_calls=(ToolCallDelta(index=self._tool_index[index], arguments=arguments),))]


def message_deltas(message: Mapping[str, Any]) -> list[Delta]:
    """A whole (non-streamed) Anthropic message as the deltas a stream of it would have produced."""
    deltas: list[Delta] = []
    tools = 0
    for block in message.get("content") or ():
        if block.get("type") == "text" and block.get("text"):
            deltas.append(Delta(content=block["text"]))
        elif block.get("type") == "thinking" and block.get("thinking"):
            deltas.append(Delta(extra={REASONING: block["thinking"]}))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call = ToolCallDelta(index=tools, id=block.get("id"), name=block.get("name"), arguments=arguments)
            deltas.append(Delta(tool_calls=(call,)))
            tools += 1
    deltas.append(_finish(message.get("stop_reason"), message.get("stop_sequence")))
    deltas.append(Delta(usage=read_usage(message.get("usage") or {}, Usage(0, 0))))
    return deltas


def message_to_completion(
    message: Mapping[str, Any], *, model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """A whole Anthropic message as an OpenAI ``chat.completion`` body."""
    content: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish, usage = "stop", Usage(0, 0)
    for delta in message_deltas(message):
        if delta.content:
            content.append(delta.content)
        for call in delta.tool_calls:
            function = {"name": call.name, "arguments": call.arguments}
            tool_calls.append({"id": call.id, "type": "function", "function": function})
        finish = delta.finish_reason or finish
        usage = delta.usage or usage
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": usage.to_dict(),
    }
