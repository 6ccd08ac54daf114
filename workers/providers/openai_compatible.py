"""Any OpenAI-compatible upstream, over one keep-alive connection pool per provider and process.

The client body goes upstream unchanged except ``model`` (the deployment's ``upstream_model``), ``stream``
(always on: one code path, real first-token and idle timeouts, prompt cancellation) and
``stream_options.include_usage``.  Upstream chunks become :class:`Delta` objects; the chunk writer above
rebuilds OpenAI-exact objects from them.  Transport errors and upstream statuses become our errors here:

    connect error, 429, 5xx            UpstreamUnavailable (503, with Retry-After when given)
    connect/first-token/idle/total     UpstreamTimeout (503)
    400/404/413/422                    UpstreamBadRequest (400, upstream message)
    401/403, other 4xx                 UpstreamError (500: our configuration is wrong)
    stream cut before any content      UpstreamUnavailable (nothing reached the client: fallback is safe)
    stream cut after content, garbage  UpstreamError (500)

The answer ends at ``[DONE]``: the rest of the body is read for at most :data:`AFTER_DONE_WAIT` (so a
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
    status_error,
)


class OpenAICompatibleProvider:
    def __init__(self, provider: ProviderSettings) -> None:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._name = provider.name
        self._timeouts = provider.timeouts
        self._http = make_http_client(provider, headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(self, job: CompletionJob) -> dict[str, Any]:
        options = job.body.get("stream_options")
        stream_options = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
        return {**job.body, "model": job.upstream_model, "stream": True, "stream_options": stream_options}

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        clock = Deadlines(self._timeouts, asyncio.get_running_loop())
        body = orjson.dumps(self.request_body(job))
        async with call_scope(self._name, clock) as timer:
            async with self._http.post("chat/completions", body) as response:
                if response.status >= 400:
                    answer = await response.read()
                    raise status_error(self._name, response.status, response.headers, answer)
                async for delta in _deltas(self._name, response, clock, timer):
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
        await _read_to_the_end(events)
    elif not finished:
        raise cut_error(name, clock)


AFTER_DONE_WAIT = 0.1
"""Seconds the body's end may follow ``[DONE]``: read by then, the connection is kept for the next call;
an upstream that holds the body open past it costs the connection, not the answer."""


async def _read_to_the_end(events: AsyncIterator[bytes]) -> None:
    try:
        async with asyncio.timeout(AFTER_DONE_WAIT):
            async for _ in events:
                pass
    except TimeoutError:
        pass


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
    return tuple(
        ToolCallDelta(
            index=int(call.get("index", 0)),
            id=text_or_none(call.get("id")),
            name=text_or_none((call.get("function") or {}).get("name")),
            arguments=text_or_none((call.get("function") or {}).get("arguments")) or "",
        )
        for call in calls
    )
