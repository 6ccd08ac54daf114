"""Validation of a ``POST /v1/chat/completions`` body, before anything is enqueued.

Every failure is a 400 ``invalid_request`` whose ``param`` names the field (``messages[2].content``) and
whose ``code`` says what is wrong: ``invalid_json``, ``invalid_type``, ``missing_required_parameter``,
``invalid_value``, ``empty_array``, ``array_above_max_length`` or ``unsupported_value``.

Policy, where OpenAI leaves a choice:

* ``null`` for an optional parameter means "not set", as in OpenAI's schema (all are nullable).
* Booleans are not numbers: ``"temperature": true`` is ``invalid_type``.
* ``n`` is 1 to :data:`MAX_CHOICES` (OpenAI's own bound); every choice is reserved and billed.
* A ``tool_choice`` naming a tool (or ``allowed_tools`` listing one) that ``tools`` does not declare is
  ``invalid_value``.
* ``reasoning_effort`` is one of :data:`REASONING_EFFORTS`, the values OpenAI's SDK knows; a value OpenAI
  adds later is refused until this set learns it.
* ``service_tier``, ``verbosity`` and an image part's ``detail`` are checked as strings only: OpenAI
  adds values to them, and the upstream that serves the request knows its own.
* ``metadata`` is OpenAI's: at most :data:`MAX_METADATA_PAIRS` string values, keys of at most
  :data:`MAX_METADATA_KEY` characters, values of at most :data:`MAX_METADATA_VALUE`.
* JSON nested deeper than :data:`MAX_JSON_DEPTH` arrays and objects is refused (``invalid_json``): no
  chat request needs it, and the job serializer refuses much less than the parser accepts.
* Unknown top-level fields are accepted and passed through unchanged to the upstream (the body the worker
  receives is the client's body), so newer OpenAI parameters keep working without an ingress release.
  The one exception is ``provider`` (routing preferences, :mod:`ingress.provider_preferences`): ours,
  validated here and never sent upstream.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from ingress.provider_preferences import FIELD as PREFERENCES_FIELD
from ingress.provider_preferences import NO_PREFERENCES, ProviderPreferences, parse_provider_preferences
from shared.errors import InvalidRequest

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TOOL_CHOICE_MODES: Final = frozenset({"none", "auto", "required"})
TOOL_TYPES: Final = frozenset({"function", "custom"})
ALLOWED_TOOLS_MODES: Final = frozenset({"auto", "required"})
AUDIO_FORMATS: Final = frozenset({"wav", "mp3"})
GRAMMAR_SYNTAXES: Final = frozenset({"lark", "regex"})
REASONING_EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
MAX_TOP_LOGPROBS: Final = 20
RESPONSE_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
MAX_STOP_SEQUENCES: Final = 4
MODALITIES: Final = frozenset({"text", "audio"})
MAX_METADATA_PAIRS: Final = 16
MAX_METADATA_KEY: Final = 64  # characters
MAX_METADATA_VALUE: Final = 512  # characters
MAX_JSON_DEPTH: Final = 64  # arrays and objects inside each other, the body itself counting as one
_NAME_RE: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INT_KEY_RE: Final = re.compile(r"-?\d+")

# Content part types each role may send in an array `content`.
_PART_TYPES: Final[Mapping[str, frozenset[str]]] = {
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset(),  # a string (or null) only
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]  # the client's body, unchanged but for our own `provider` preferences
    model: str
    stream: bool
    include_usage: bool
    preferences: ProviderPreferences = NO_PREFERENCES


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            "We could not parse the JSON body of your request: it is not valid JSON.", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    if nests_too_deep(raw, body):
        raise InvalidRequest(
            f"The JSON body nests arrays and objects more than {MAX_JSON_DEPTH} deep.", code="invalid_json"
        )
    return body


def nests_too_deep(raw: bytes, value: Any) -> bool:
    """Whether ``value``, parsed from ``raw``, nests arrays and objects more than :data:`MAX_JSON_DEPTH`
    deep (cheap first: text with fewer opening brackets than the limit cannot)."""
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and nested_deeper_than(value, MAX_JSON_DEPTH)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` holds arrays and objects more than ``limit`` levels deep (``value`` is level 1)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def validate_chat_request(body: dict[str, Any]) -> ChatRequest:
    model = _required(body, "model")
    if not isinstance(model, str) or not model:
        raise _invalid_type("model", "a non-empty string")
    _messages(_required(body, "messages"))
    for name, check in _OPTIONAL_CHECKS.items():
        value = body.get(name)
        if value is not None:
            check(name, value)
    stream = body.get("stream") is True
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is true.",
            param="stream_options",
            code="invalid_value",
        )
    _tool_choice_matches_tools(body.get("tool_choice"), body.get("tools"))
    _top_logprobs_needs_logprobs(body.get("top_logprobs"), body.get("logprobs"))
    include_usage = bool(stream_options and stream_options.get("include_usage") is True)
    preferences = parse_provider_preferences(body.get(PREFERENCES_FIELD))
    if PREFERENCES_FIELD in body:
        body = {key: value for key, value in body.items() if key != PREFERENCES_FIELD}
    return ChatRequest(body, model, stream, include_usage, preferences)


# --- messages -------------------------------------------------------------------------------------


def _messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array")
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _message(f"messages[{index}]", message)


def _message(path: str, message: Any) -> None:
    if not isinstance(message, dict):
        raise _invalid_type(path, "an object")
    role = _required(message, "role", path)
    if not isinstance(role, str) or role not in ROLES:
        raise _invalid_value(f"{path}.role", f"one of {', '.join(sorted(ROLES))}")
    if message.get("name") is not None and not isinstance(message["name"], str):
        raise _invalid_type(f"{path}.name", "a string")
    content = message.get("content")
    if role == "function":  # the deprecated result of a `function_call`: a name, and a string or null
        _function_message(path, message)
        return
    if role == "assistant":
        says_more = _assistant_fields(path, message)
        if content is None:
            if not says_more:
                detail = "an assistant message needs 'content', 'tool_calls', 'refusal' or 'audio'"
                raise _missing(f"{path}.content", detail)
            return
    elif content is None:
        raise _missing(f"{path}.content")
    _content(f"{path}.content", content, _PART_TYPES[role])
    if role == "tool":
        tool_call_id = _required(message, "tool_call_id", path)
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise _invalid_type(f"{path}.tool_call_id", "a non-empty string")


def _assistant_fields(path: str, message: dict[str, Any]) -> bool:
    """Check what an assistant turn may hold beside ``content``: its calls (``tool_calls``, the deprecated
    ``function_call``), the ``refusal`` it answered with, and the ``audio`` it spoke (by the ``id`` of that
    answer).  Whether it holds any of them, which makes a null ``content`` valid."""
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        _tool_calls(f"{path}.tool_calls", tool_calls)
    function_call = message.get("function_call")
    if function_call is not None:  # the deprecated single call: an object with a name and arguments
        if not isinstance(function_call, dict):
            raise _invalid_type(f"{path}.function_call", "an object")
        for key in ("name", "arguments"):
            if not isinstance(_required(function_call, key, f"{path}.function_call"), str):
                raise _invalid_type(f"{path}.function_call.{key}", "a string")
    refusal = message.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise _invalid_type(f"{path}.refusal", "a string")
    audio = message.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise _invalid_type(f"{path}.audio", "an object with an 'id'")
        if not isinstance(_required(audio, "id", f"{path}.audio"), str):
            raise _invalid_type(f"{path}.audio.id", "a string")
    return bool(tool_calls) or any(v is not None for v in (function_call, refusal, audio))


def _function_message(path: str, message: dict[str, Any]) -> None:
    if not isinstance(_required(message, "name", path), str):
        raise _invalid_type(f"{path}.name", "a string")
    if "content" not in message:
        raise _missing(f"{path}.content", "a string or null")
    if message["content"] is not None and not isinstance(message["content"], str):
        raise _invalid_type(f"{path}.content", "a string or null")


def _content(path: str, content: Any, part_types: frozenset[str]) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid_type(path, "a string or an array of content parts")
    if not content:
        raise InvalidRequest(
            f"Invalid '{path}': empty array. Expected an array with minimum length 1.",
            param=path,
            code="empty_array",
        )
    for index, part in enumerate(content):
        _content_part(f"{path}[{index}]", part, part_types)


def _content_part(path: str, part: Any, part_types: frozenset[str]) -> None:
    if not isinstance(part, dict):
        raise _invalid_type(path, "an object")
    kind = _required(part, "type", path)
    if not isinstance(kind, str) or kind not in part_types:
        raise _invalid_value(f"{path}.type", f"one of {', '.join(sorted(part_types))} for this role")
    if kind == "image_url":
        image = _required_object(part, "image_url", path, "an object with a 'url'")
        url = _required(image, "url", f"{path}.image_url")
        if not isinstance(url, str) or not url:
            raise _invalid_type(f"{path}.image_url.url", "a non-empty string")
        if image.get("detail") is not None and not isinstance(image["detail"], str):
            raise _invalid_type(f"{path}.image_url.detail", "a string")
    elif kind == "input_audio":
        audio = _required_object(part, "input_audio", path, "an object with 'data' and 'format'")
        if not isinstance(_required(audio, "data", f"{path}.input_audio"), str):
            raise _invalid_type(f"{path}.input_audio.data", "a string (base64-encoded audio)")
        if not _one_of(_required(audio, "format", f"{path}.input_audio"), AUDIO_FORMATS):
            raise _invalid_value(f"{path}.input_audio.format", "'wav' or 'mp3'")
    elif kind == "file":
        file = _required_object(part, "file", path)
        for key in ("file_id", "file_data", "filename"):
            if file.get(key) is not None and not isinstance(file[key], str):
                raise _invalid_type(f"{path}.file.{key}", "a string")
    elif not isinstance(_required(part, kind, path), str):  # "text" or "refusal"
        raise _invalid_type(f"{path}.{kind}", "a string")


def _tool_calls(path: str, tool_calls: Any) -> None:
    if not isinstance(tool_calls, list):
        raise _invalid_type(path, "an array")
    for index, call in enumerate(tool_calls):
        item = f"{path}[{index}]"
        if not isinstance(call, dict):
            raise _invalid_type(item, "an object")
        call_id = _required(call, "id", item)
        if not isinstance(call_id, str) or not call_id:
            raise _invalid_type(f"{item}.id", "a non-empty string")
        kind = _required(call, "type", item)
        if not _one_of(kind, TOOL_TYPES):
            raise _invalid_value(f"{item}.type", "'function' or 'custom'")
        called = _required_object(call, kind, item)  # function: name and arguments; custom: name and input
        for key in ("name", "arguments" if kind == "function" else "input"):
            if not isinstance(_required(called, key, f"{item}.{kind}"), str):
                raise _invalid_type(f"{item}.{kind}.{key}", "a string")


# --- sampling and output parameters ---------------------------------------------------------------


def _number_between(low: float, high: float) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid_type(name, "a number")
        if not low <= value <= high:
            raise _invalid_value(name, f"a number between {low:g} and {high:g}", value)

    return check


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(name, "an integer")
    if value < 1:
        raise _invalid_value(name, "an integer of at least 1", value)


def _integer(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(name, "an integer")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _invalid_type(name, "a boolean")


def _string(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _invalid_type(name, "a string")


MAX_CHOICES: Final = 128


def _n(name: str, value: Any) -> None:
    _positive_int(name, value)
    if value > MAX_CHOICES:
        raise _invalid_value(name, f"an integer between 1 and {MAX_CHOICES}", value)


def _stop(name: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _invalid_type(name, "a string or an array of strings")
    if not value:
        raise InvalidRequest(f"Invalid '{name}': empty array.", param=name, code="empty_array")
    if len(value) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(
            f"Invalid '{name}': array too long. Expected at most {MAX_STOP_SEQUENCES} sequences.",
            param=name,
            code="array_above_max_length",
        )


def _stream_options(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(name, "an object")
    for key in ("include_usage", "include_obfuscation"):
        if value.get(key) is not None and not isinstance(value[key], bool):
            raise _invalid_type(f"{name}.{key}", "a boolean")


def _logit_bias(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(name, "an object mapping token ids to biases")
    for token, bias in value.items():
        if not _INT_KEY_RE.fullmatch(token):
            raise _invalid_value(f"{name}.{token}", "a token id (an integer)")
        if isinstance(bias, bool) or not isinstance(bias, int | float):
            raise _invalid_type(f"{name}.{token}", "a number")
        if not -100 <= bias <= 100:
            raise _invalid_value(f"{name}.{token}", "a number between -100 and 100", bias)


def _response_format(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(name, "an object")
    kind = _required(value, "type", name)
    if not isinstance(kind, str) or kind not in RESPONSE_FORMATS:
        raise _invalid_value(f"{name}.type", f"one of {', '.join(sorted(RESPONSE_FORMATS))}")
    if kind == "json_schema":
        spec = _required_object(value, "json_schema", name)
        schema_name = _required(spec, "name", f"{name}.json_schema")
        if not isinstance(schema_name, str) or not _NAME_RE.fullmatch(schema_name):
            raise _invalid_value(f"{name}.json_schema.name", "1-64 characters among a-z, A-Z, 0-9, _ and -")
        if not isinstance(_required(spec, "schema", f"{name}.json_schema"), dict):
            raise _invalid_type(f"{name}.json_schema.schema", "an object (a JSON Schema)")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise _invalid_type(f"{name}.json_schema.strict", "a boolean")


# --- tools ----------------------------------------------------------------------------------------


def _tools(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise _invalid_type(name, "an array")
    if not value:
        raise InvalidRequest(f"Invalid '{name}': empty array.", param=name, code="empty_array")
    for index, tool in enumerate(value):
        path = f"{name}[{index}]"
        if not isinstance(tool, dict):
            raise _invalid_type(path, "an object")
        if _required(tool, "type", path) == "custom":
            _custom_tool(f"{path}.custom", _required(tool, "custom", path))
            continue
        if tool["type"] != "function":
            raise _invalid_value(f"{path}.type", "'function' or 'custom'")
        function = _required_object(tool, "function", path)
        fname = _required(function, "name", f"{path}.function")
        if not isinstance(fname, str) or not _NAME_RE.fullmatch(fname):
            raise _invalid_value(f"{path}.function.name", "1-64 characters among a-z, A-Z, 0-9, _ and -")
        if function.get("description") is not None and not isinstance(function["description"], str):
            raise _invalid_type(f"{path}.function.description", "a string")
        if function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            raise _invalid_type(f"{path}.function.parameters", "an object (a JSON Schema)")
        if function.get("strict") is not None and not isinstance(function["strict"], bool):
            raise _invalid_type(f"{path}.function.strict", "a boolean")


def _custom_tool(path: str, custom: Any) -> None:
    """A custom tool: a name, and its input's format (free text, or a Lark or regex grammar)."""
    if not isinstance(custom, dict):
        raise _invalid_type(path, "an object")
    cname = _required(custom, "name", path)
    if not isinstance(cname, str) or not cname:
        raise _invalid_type(f"{path}.name", "a non-empty string")
    if custom.get("description") is not None and not isinstance(custom["description"], str):
        raise _invalid_type(f"{path}.description", "a string")
    form = custom.get("format")
    if form is None:
        return
    if not isinstance(form, dict):
        raise _invalid_type(f"{path}.format", "an object")
    kind = _required(form, "type", f"{path}.format")
    if kind == "grammar":
        grammar = _required_object(form, "grammar", f"{path}.format")
        if not isinstance(_required(grammar, "definition", f"{path}.format.grammar"), str):
            raise _invalid_type(f"{path}.format.grammar.definition", "a string")
        if not _one_of(_required(grammar, "syntax", f"{path}.format.grammar"), GRAMMAR_SYNTAXES):
            raise _invalid_value(f"{path}.format.grammar.syntax", "'lark' or 'regex'")
    elif kind != "text":
        raise _invalid_value(f"{path}.format.type", "'text' or 'grammar'")


def _tool_choice(name: str, value: Any) -> None:
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            raise _invalid_value(name, "'none', 'auto', 'required' or an object")
        return
    if not isinstance(value, dict):
        raise _invalid_type(name, "a string or an object")
    kind = _required(value, "type", name)
    if kind == "allowed_tools":
        allowed = _required_object(value, "allowed_tools", name, "an object with 'mode' and 'tools'")
        if not _one_of(_required(allowed, "mode", f"{name}.allowed_tools"), ALLOWED_TOOLS_MODES):
            raise _invalid_value(f"{name}.allowed_tools.mode", "'auto' or 'required'")
        tools = _required(allowed, "tools", f"{name}.allowed_tools")
        if not isinstance(tools, list):
            raise _invalid_type(f"{name}.allowed_tools.tools", "an array")
        for index, tool in enumerate(tools):
            _tool_reference(f"{name}.allowed_tools.tools[{index}]", tool)
    elif _one_of(kind, TOOL_TYPES):
        _tool_reference(name, value)
    else:
        raise _invalid_value(f"{name}.type", "'function', 'custom' or 'allowed_tools'")


def _tool_reference(path: str, value: Any) -> None:
    """``{"type": "function", "function": {"name": ...}}`` or the same of a custom tool."""
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object")
    kind = _required(value, "type", path)
    if not _one_of(kind, TOOL_TYPES):
        raise _invalid_value(f"{path}.type", "'function' or 'custom'")
    named = _required(value, kind, path)
    if not isinstance(named, dict) or not isinstance(named.get("name"), str):
        raise _invalid_type(f"{path}.{kind}", "an object with a string 'name'")


def _tool_choice_matches_tools(tool_choice: Any, tools: Any) -> None:
    if tool_choice is None or tool_choice == "none":
        return
    if not tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
            param="tool_choice",
            code="invalid_value",
        )
    if not isinstance(tool_choice, dict):
        return
    declared = {(tool["type"], tool[tool["type"]]["name"]) for tool in tools}
    if tool_choice["type"] != "allowed_tools":
        _declared(declared, "tool_choice", tool_choice)
        return
    for index, tool in enumerate(tool_choice["allowed_tools"]["tools"]):
        _declared(declared, f"tool_choice.allowed_tools.tools[{index}]", tool)


def _declared(declared: set[tuple[str, str]], path: str, reference: dict[str, Any]) -> None:
    kind = reference["type"]
    wanted = reference[kind]["name"]
    if (kind, wanted) not in declared:
        raise InvalidRequest(
            f"Invalid value for '{path}': no {kind} tool named '{wanted}' in 'tools'.",
            param=f"{path}.{kind}.name",
            code="invalid_value",
        )


def _reasoning_effort(name: str, value: Any) -> None:
    _string(name, value)
    if value not in REASONING_EFFORTS:
        raise _invalid_value(name, "'none', 'minimal', 'low', 'medium', 'high', 'xhigh' or 'max'", value)


def _top_logprobs(name: str, value: Any) -> None:
    _integer(name, value)
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise _invalid_value(name, f"an integer between 0 and {MAX_TOP_LOGPROBS}", value)


def _top_logprobs_needs_logprobs(top_logprobs: Any, logprobs: Any) -> None:
    if top_logprobs is not None and logprobs is not True:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is set.",
            param="top_logprobs",
            code="invalid_value",
        )


def _metadata(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(name, "an object of string values")
    if len(value) > MAX_METADATA_PAIRS:
        raise _invalid_value(name, f"at most {MAX_METADATA_PAIRS} key-value pairs")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise _invalid_value(f"{name}.{key}", f"a key of at most {MAX_METADATA_KEY} characters")
        if not isinstance(item, str):
            raise _invalid_type(f"{name}.{key}", "a string")
        if len(item) > MAX_METADATA_VALUE:
            raise _invalid_value(f"{name}.{key}", f"a string of at most {MAX_METADATA_VALUE} characters")


def _modalities(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise _invalid_type(name, "an array")
    for index, modality in enumerate(value):
        if not _one_of(modality, MODALITIES):
            raise _invalid_value(f"{name}[{index}]", "'text' or 'audio'")


def _prediction(name: str, value: Any) -> None:
    """Predicted output: ``{"type": "content", "content": ...}``, a string or an array of text parts."""
    if not isinstance(value, dict):
        raise _invalid_type(name, "an object")
    if _required(value, "type", name) != "content":
        raise _invalid_value(f"{name}.type", "'content'")
    _content(f"{name}.content", _required(value, "content", name), frozenset({"text"}))


_OPTIONAL_CHECKS: Final[Mapping[str, Callable[[str, Any], None]]] = {
    "temperature": _number_between(0, 2),
    "top_p": _number_between(0, 1),
    "presence_penalty": _number_between(-2, 2),
    "frequency_penalty": _number_between(-2, 2),
    "max_tokens": _positive_int,
    "max_completion_tokens": _positive_int,
    "n": _n,
    "seed": _integer,
    "stop": _stop,
    "stream": _boolean,
    "stream_options": _stream_options,
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,
    "service_tier": _string,
    "verbosity": _string,
    "store": _boolean,
    "metadata": _metadata,
    "modalities": _modalities,
    "prediction": _prediction,
    "logit_bias": _logit_bias,
    "parallel_tool_calls": _boolean,
    "logprobs": _boolean,
    "top_logprobs": _top_logprobs,
    "reasoning_effort": _reasoning_effort,
    "response_format": _response_format,
    "tools": _tools,
    "tool_choice": _tool_choice,
}


# --- error builders -------------------------------------------------------------------------------


def _one_of(value: Any, choices: frozenset[str]) -> bool:
    return isinstance(value, str) and value in choices


def _required(obj: dict[str, Any], key: str, parent: str = "") -> Any:
    value = obj.get(key)
    if value is None:
        raise _missing(f"{parent}.{key}" if parent else key)
    return value


def _required_object(
    obj: dict[str, Any], key: str, parent: str, expected: str = "an object"
) -> dict[str, Any]:
    """``obj[key]``, which must be there and be an object (a 400 naming ``parent.key`` otherwise)."""
    value = _required(obj, key, parent)
    if not isinstance(value, dict):
        raise _invalid_type(f"{parent}.{key}", expected)
    return value


def _missing(param: str, detail: str = "") -> InvalidRequest:
    return InvalidRequest(
        f"Missing required parameter: '{param}'." + (f" ({detail})" if detail else ""),
        param=param,
        code="missing_required_parameter",
    )


def _invalid_type(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


def _invalid_value(param: str, expected: str, got: Any = None) -> InvalidRequest:
    shown = f", got {got!r}" if got is not None else ""
    return InvalidRequest(
        f"Invalid value for '{param}': expected {expected}{shown}.", param=param, code="invalid_value"
    )
