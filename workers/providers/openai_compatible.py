"""Any OpenAI-compatible upstream, over one keep-alive connection pool per provider and process.

The client body goes upstream unchanged except ``model`` (the deployment's ``upstream_model``), ``stream``
and ``stream_options.include_usage``.  With the provider's ``upstream_stream = "always"`` (the default)
every call streams: real first-token and idle deadlines watch it.  With ``"as_requested"``, a request
without ``stream`` is one JSON call (no ``stream_options``), which costs the worker about a quarter less
per request and the upstream a stream's framing; the upstream says nothing until its answer is complete,
so only the connect and answer deadlines watch that call.  Upstream chunks, or the JSON answer's
choices, become :class:`Delta` objects; the chunk writer above rebuilds OpenAI-exact objects from them.
Transport errors and upstream statuses become our errors here:

    connect error, 429, 5xx            UpstreamUnavailable (503, with Retry-After when given)
    connect/first-token/idle/answer/total  UpstreamTimeout (503)
    400/404/413/422                    UpstreamBadRequest (400, upstream message, code and param)
    401/403, other 4xx                 UpstreamError (500: our configuration is wrong)
    stream cut before any content      UpstreamUnavailable (nothing reached the client: fallback is safe)
    stream cut after content, garbage  UpstreamError (500)
    JSON answer cut                    UpstreamUnavailable (nothing reached the client)
    JSON answer malformed, an error,   UpstreamError (500)
      or over MAX_BODY_BYTES

The answer ends at ``[DONE]``: the rest of the body is read for at most ``BODY_END_WAIT`` (so a
connection read to its end serves the next call), and an upstream that holds it open longer only loses
that connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shared.errors import (
    AIORouterError,
    UpstreamError,
)
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings
from workers.providers.base import Delta, ToolCallDelta, Usage, text_or_none
from workers.providers.http_clients import UpstreamReply, make_http_client
from workers.providers.upstream_call import (
    Deadlines,
    DeadlineTimer,
    call_scope,
    cut_error,
    message_of,
    read_to_the_end,
    status_error,
)


class OpenAICompatibleProvider:
    def __init__(self, provider: ProviderSettings) -> None:
        stream_always = provider.upstream_stream == "always"
        accept = "text/event-stream" if stream_always else "text/event-stream, application/json"
        headers = {"content-type": "application/json", "accept": accept}
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._name = provider.name
        self._timeouts = provider.timeouts
        self._stream_always = stream_always
        self._http = make_http_client(provider, headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    def streams(self, job: CompletionJob) -> bool:
        """Whether the upstream call of ``job`` streams (else it is one JSON answer)."""
        return job.stream or self._stream_always

    def request_body(self, job: CompletionJob) -> dict[str, Any]:
        if not self.streams(job):
            body = {**job.body, "model": job.upstream_model, "stream": False}
            body.pop("stream_options", None)
            return body
        options = job.body.get("stream_options")
        stream_options = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
        return {**job.body, "model": job.upstream_model, "stream": True, "stream_options": stream_options}

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        streams = self.streams(job)
        clock = Deadlines(self._timeouts, asyncio.get_running_loop(), whole_answer=not streams)
        body = orjson.dumps(self.request_body(job))
        async with call_scope(self._name, clock) as timer:
            async with self._http.post("chat/completions", body) as response:
                if response.status >= 400:
                    answer = await response.read()
                    raise status_error(self._name, response.status, response.headers, answer)
                if streams:
                    async for delta in _deltas(self._name, response, clock, timer):
                        yield delta
                    return
                deltas = answer_deltas(self._name, await response.read())
        for delta in deltas:  # the call is over: its connection is back in the pool
            yield delta


async def _deltas(
    name: str, response: UpstreamReply, clock: Deadlines, timer: DeadlineTimer
) -> AsyncIterator[Delta]:
    finished = False
    done = False
    events = response.sse_data()
    async for data in events:
        if data.strip() == b"[DONE]":
            done = True
            break
        clock.seen()
        for delta in _parse_chunk(name, data):
            finished = finished or delta.finish_reason is not None
            if not clock.first_token_seen and (delta.has_message_part or finished):
                clock.first_token_seen = True
                timer.move()  # from the first-token deadline to the idle one, which may be earlier
            yield delta
    if done:
        await read_to_the_end(events)
    elif not finished:
        raise cut_error(name, clock)


def answer_deltas(name: str, data: bytes) -> list[Delta]:
    """The deltas of a whole (non-streamed) answer: per choice, one with its whole message, as the
    choice's chunks would have given (the message's fields as a delta's; the answer's own fields beyond
    the chunk's as the chunk's), then its usage."""
    try:
        answer = orjson.loads(data)
        if not isinstance(answer, dict):
            raise TypeError("the answer is not an object")
        if answer.get("error"):
            raise UpstreamError(f"Provider {name!r} failed: {message_of(answer)}")
        extra = _others(answer, _ANSWER_OWN)
        choices = answer["choices"]
        if not isinstance(choices, list) or not choices:
            raise TypeError("the answer has no choices")
        deltas = [_message_delta(choice, position, answer, extra) for position, choice in enumerate(choices)]
        usage = answer.get("usage")
        if isinstance(usage, dict):
            deltas.append(Delta(usage=Usage.from_upstream(usage), chunk_extra=extra))
        return deltas
    except AIORouterError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise UpstreamError(f"Provider {name!r} sent a malformed answer.") from exc


def _message_delta(
    choice: dict[str, Any], position: int, answer: dict[str, Any], extra: dict[str, Any] | None
) -> Delta:
    """One choice as one delta; a choice without its ``index`` is the one at its place in the list."""
    message = choice.get("message") or {}
    index = choice.get("index")
    if not isinstance(message, dict):
        raise TypeError("a choice's message is not an object")
    calls = message.get("tool_calls")
    return Delta(
        text_or_none(message.get("content")) or None,
        text_or_none(message.get("refusal")) or None,
        _tool_call_deltas([{**call, "index": i} for i, call in enumerate(calls)]) if calls else (),
        text_or_none(choice.get("finish_reason")),
        None,
        answer.get("system_fingerprint"),
        position if index is None else int(index),
        _others(message, _MESSAGE_OWN),
        choice.get("logprobs"),
        _others(choice, _ANSWER_CHOICE_OWN),
        extra,
    )


def _parse_chunk(name: str, data: bytes) -> list[Delta]:
    try:
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError("chunk is not an object")
        if chunk.get("error"):
            raise UpstreamError(f"Provider {name!r} failed mid-stream: {message_of(chunk)}")
        chunk_extra = None if chunk.keys() <= _CHUNK_OWN else _others(chunk, _CHUNK_OWN)
        choices = chunk.get("choices")
        if not choices:
            deltas = []
        elif len(choices) == 1:  # nearly always: n is 1
            deltas = [_choice_delta(choices[0], chunk, chunk_extra)]
        else:
            deltas = [_choice_delta(choice, chunk, chunk_extra) for choice in choices]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            deltas.append(Delta(usage=Usage.from_upstream(usage), chunk_extra=chunk_extra))
        return deltas
    except AIORouterError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise UpstreamError(f"Provider {name!r} sent a malformed chunk.") from exc


# Fields the router writes itself (or reads into a Delta's own fields); every other one is relayed.
_CHUNK_OWN = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint"})
_CHOICE_OWN = frozenset({"index", "delta", "logprobs", "finish_reason"})
_DELTA_OWN = frozenset({"role", "content", "refusal", "tool_calls"})
# The same of a whole answer (``object``: ``chat.completion``; its message's fields are a delta's).
_ANSWER_OWN = _CHUNK_OWN
_ANSWER_CHOICE_OWN = frozenset({"index", "message", "logprobs", "finish_reason"})
_MESSAGE_OWN = _DELTA_OWN
_CALL_OWN = frozenset({"index", "id", "type", "function", "custom"})  # a tool call's (or its piece's)


def _others(fields: dict[str, Any], own: frozenset[str]) -> dict[str, Any] | None:
    """The fields of an upstream object beyond ``own``, or None (the common case: nothing else)."""
    if fields.keys() <= own:
        return None
    return {k: v for k, v in fields.items() if k not in own}


def _choice_delta(choice: dict[str, Any], chunk: dict[str, Any], chunk_extra: dict[str, Any] | None) -> Delta:
    delta = choice.get("delta") or {}
    content = delta.get("content")
    if (  # nearly every choice: OpenAI's four fields, a delta of a string content, told at a glance
        len(delta) == 1
        and type(content) is str
        and len(choice) == 4
        and "index" in choice
        and "logprobs" in choice
        and "finish_reason" in choice
    ):
        finish_reason = choice["finish_reason"]
        if finish_reason is not None and type(finish_reason) is not str:
            raise TypeError(f"expected a string, got {type(finish_reason).__name__}")
        return Delta(
            content or None,
            None,
            (),
            finish_reason,
            None,
            chunk.get("system_fingerprint"),
            int(choice["index"] or 0),
            None,
            choice["logprobs"],
            None,
            chunk_extra,
        )
    calls = delta.get("tool_calls")
    plain_delta = len(delta) == 1 and "content" in delta
    plain_choice = choice.keys() <= _CHOICE_OWN
    return Delta(
        text_or_none(delta.get("content")) or None,
        text_or_none(delta.get("refusal")) or None,
        _tool_call_deltas(calls) if calls else (),
        text_or_none(choice.get("finish_reason")),
        None,
        chunk.get("system_fingerprint"),
        int(choice.get("index") or 0),
        None if plain_delta else _others(delta, _DELTA_OWN),
        choice.get("logprobs"),
        None if plain_choice else _others(choice, _CHOICE_OWN),
        chunk_extra,
    )


def _tool_call_deltas(calls: list[dict[str, Any]]) -> tuple[ToolCallDelta, ...]:
    return tuple(_tool_call_delta(call) for call in calls)


def _tool_call_delta(call: dict[str, Any]) -> ToolCallDelta:
    """A function call's piece (``function``: ``name``, ``arguments``) or a custom tool call's (``custom``:
    ``name``, ``input``).  A piece that names no ``type`` is custom when it carries ``custom`` and no
    ``function`` (absent or null, as a server that writes every field sends it): later pieces of a call
    may carry no ``type``."""
    kind = call.get("type")
    custom = kind == "custom" or (
        kind is None and call.get("custom") is not None and call.get("function") is None
    )
    called = (call.get("custom") if custom else call.get("function")) or {}
    return ToolCallDelta(
        int(call.get("index", 0)),
        text_or_none(call.get("id")),
        text_or_none(called.get("name")),
        text_or_none(called.get("input" if custom else "arguments")) or "",
        custom,
        _others(call, _CALL_OWN),
    )
