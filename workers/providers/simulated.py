"""The built-in simulated model family: deterministic completions, no network.

``upstream_model`` picks the text: ``echo`` repeats the last user message, ``lorem`` writes lorem ipsum.
Either honours ``max_tokens``/``max_completion_tokens`` (finish ``length``), ``stop`` sequences, tools
(one call to the named or first tool, arguments built from its JSON schema), ``response_format`` (valid
JSON content) and ``n`` (that many identical choices, each billed), and streams at
:attr:`ProviderSettings.tokens_per_second` (0 = as fast as possible).

The work per request is bounded: an answer has at most :data:`MAX_COMPLETION_TOKENS` tokens over all its
choices (more are cut, finish ``length``, whatever ``max_tokens`` asks or the prompt holds), and schema
examples have their own bounds (:mod:`workers.providers.schema_example`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import UpstreamBadRequest
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings
from workers.providers.base import Delta, ToolCallDelta, Usage, count_prompt_tokens, message_text
from workers.providers.schema_example import example_value

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore "
    "eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia "
    "deserunt mollit anim id est laborum."
).split()
LOREM_DEFAULT_TOKENS = 40
MAX_COMPLETION_TOKENS = 131_072  # tokens of one simulated answer, at most
MODELS = ("echo", "lorem")
_TOKEN = re.compile(r"\s*\S{1,8}|\s+$")


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything the simulated model will say, decided before the first token."""

    pieces: tuple[Delta, ...]
    finish_reason: str
    prompt_tokens: int


class SimulatedProvider:
    def __init__(self, provider: ProviderSettings) -> None:
        self._interval = 1.0 / provider.tokens_per_second if provider.tokens_per_second > 0 else 0.0

    def streams(self, job: CompletionJob) -> bool:
        return True  # its tokens come one by one, as a stream's

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        plan = plan_completion(job)
        loop = asyncio.get_running_loop()
        started = loop.time()
        choices = _choices(job)
        for emitted, piece in enumerate(plan.pieces, start=1):
            await asyncio.sleep(max(0.0, started + emitted * self._interval - loop.time()))
            yield piece
            for index in range(1, choices):  # every choice says the same, as a seeded model would
                yield dataclasses.replace(piece, index=index)
        for index in range(choices):
            yield Delta(finish_reason=plan.finish_reason, index=index)
        yield Delta(
            usage=Usage(prompt_tokens=plan.prompt_tokens, completion_tokens=len(plan.pieces) * choices)
        )

    async def aclose(self) -> None:
        return None


def _choices(job: CompletionJob) -> int:
    n = job.body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def plan_completion(job: CompletionJob) -> _Plan:
    body = job.body
    if job.upstream_model not in MODELS:
        raise UpstreamBadRequest(
            f"The simulated provider has no model {job.upstream_model!r} (it serves {', '.join(MODELS)}).",
            param="model",
        )
    prompt_tokens = count_prompt_tokens(body)
    tool = _chosen_tool(body)
    if tool is not None:
        return _Plan(_tool_call_pieces(job, tool), "tool_calls", prompt_tokens)
    text = _base_text(job)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        text = orjson.dumps({"model": job.upstream_model, "text": text}).decode()
    elif response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        text = orjson.dumps(example_value(schema, _few_words(text))).decode()
    finish_reason = "stop"
    text = _cut_at_stop(text, body.get("stop"))
    asked = _max_tokens(body)
    per_choice = MAX_COMPLETION_TOKENS // _choices(job)  # the bound holds for all n choices together
    limit = per_choice if asked is None else min(asked, per_choice)
    tokens = [match.group() for match in itertools.islice(_TOKEN.finditer(text), limit + 1)]
    if len(tokens) > limit:
        tokens, finish_reason = tokens[:limit], "length"
    elif job.upstream_model == "lorem" and asked is not None and len(tokens) == limit:
        finish_reason = "length"
    return _Plan(tuple(Delta(content=t) for t in tokens), finish_reason, prompt_tokens)


def _base_text(job: CompletionJob) -> str:
    if job.upstream_model == "echo":
        users = [m for m in job.body.get("messages") or () if isinstance(m, dict) and m.get("role") == "user"]
        return message_text(users[-1]) if users else ""
    limit = _max_tokens(job.body)
    length = min(limit, MAX_COMPLETION_TOKENS) if limit is not None else LOREM_DEFAULT_TOKENS
    return " ".join(itertools.islice(itertools.cycle(LOREM), length))


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return max(0, value)
    return None


def _cut_at_stop(text: str, stop: Any) -> str:
    sequences = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
    cuts = [text.find(s) for s in sequences if s and s in text]
    return text[: min(cuts)] if cuts else text


def _few_words(text: str) -> str:
    return " ".join(text.split()[:6])


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the simulated models call: the named one, else the first one allowed; None for a text
    answer.  They call function tools only: a choice that leaves them none to call is refused."""
    functions: list[dict[str, Any]] = [
        t["function"]
        for t in body.get("tools") or ()
        if isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice")
    if not body.get("tools") or choice == "none":
        return None
    required = choice == "required"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = {
            (t.get("function") or {}).get("name") for t in allowed.get("tools") or () if isinstance(t, dict)
        }
        functions = [f for f in functions if f.get("name") in names]
        required = allowed.get("mode") == "required"
    elif isinstance(choice, dict):
        if choice.get("type", "function") != "function":
            raise UpstreamBadRequest("The simulated models call function tools only.", param="tool_choice")
        wanted = (choice.get("function") or {}).get("name")
        functions = [f for f in functions if f.get("name") == wanted]
        if not functions:
            raise UpstreamBadRequest(
                f"tool_choice names an unknown function {wanted!r}.", param="tool_choice"
            )
    if not functions and required:
        raise UpstreamBadRequest(
            "The simulated models call function tools only, and tool_choice allows none.", param="tool_choice"
        )
    return functions[0] if functions else None


def _tool_call_pieces(job: CompletionJob, function: dict[str, Any]) -> tuple[Delta, ...]:
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    users = [m for m in job.body.get("messages") or () if isinstance(m, dict) and m.get("role") == "user"]
    hint = _few_words(message_text(users[-1])) if users else "example"
    arguments = orjson.dumps(example_value(schema, hint or "example")).decode()
    call_id = "call_" + hashlib.sha256(job.request_id.encode()).hexdigest()[:24]
    first = Delta(
        tool_calls=(ToolCallDelta(index=0, id=call_id, name=str(function.get("name", "")), arguments=""),)
    )
    rest = (Delta(tool_calls=(ToolCallDelta(index=0, arguments=part),)) for part in _slices(arguments, 8))
    return (first, *rest)


def _slices(text: str, size: int) -> Iterator[str]:
    return (text[i : i + size] for i in range(0, len(text), size))
