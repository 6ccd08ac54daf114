"""Any OpenAI-compatible upstream, over one pooled keep-alive httpx client per provider and process.

The client body goes upstream unchanged except ``model`` (the deployment's ``upstream_model``), ``stream``
(always on: one code path, real first-token and idle timeouts, prompt cancellation) and
``stream_options.include_usage``.  Upstream chunks become :class:`Delta` objects; the chunk writer above
rebuilds OpenAI-exact objects from them.  httpx errors and upstream statuses become our errors here:

    connect error, 429, 5xx            UpstreamUnavailable (503, with Retry-After when given)
    connect/first-token/idle/total     UpstreamTimeout (503)
    400/404/413/422                    UpstreamBadRequest (400, upstream message)
    401/403, other 4xx                 UpstreamError (500: our configuration is wrong)
    stream cut before any content      UpstreamUnavailable (nothing reached the client: fallback is safe)
    stream cut after content, garbage  UpstreamError (500)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from shared.errors import (
    AIORouterError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings, Timeouts
from workers.providers.base import Delta, ToolCallDelta, Usage
from workers.providers.http_transport import CoalescingTransport
from workers.providers.sse import sse_data

_BAD_REQUEST_STATUSES = frozenset({400, 404, 413, 422})
_MAX_ERROR_TEXT = 500


class OpenAICompatibleProvider:
    def __init__(self, provider: ProviderSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        timeouts = provider.timeouts
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._name = provider.name
        self._timeouts = timeouts
        limits = httpx.Limits(
            max_connections=provider.concurrency, max_keepalive_connections=provider.concurrency
        )
        self._client = httpx.AsyncClient(
            base_url=provider.base_url,
            headers=headers,
            transport=transport or CoalescingTransport(limits),
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=max(timeouts.first_token, timeouts.idle),
                write=timeouts.idle,
                pool=timeouts.connect,
            ),
            limits=limits,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def request_body(self, job: CompletionJob) -> dict[str, Any]:
        options = job.body.get("stream_options")
        stream_options = (
            {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
        )
        return {**job.body, "model": job.upstream_model, "stream": True, "stream_options": stream_options}

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        clock = _Deadlines(self._timeouts, loop)
        try:
            async with asyncio.timeout_at(clock.next_deadline()) as timeout:
                timer = _LazyTimer(clock, timeout, loop)
                timer.move()
                try:
                    async with self._client.stream(
                        "POST", "chat/completions", content=orjson.dumps(self.request_body(job))
                    ) as response:
                        if response.status_code >= 400:
                            await response.aread()
                            raise _status_error(self._name, response)
                        async for delta in _deltas(self._name, response, clock, timer):
                            yield delta
                finally:
                    timer.close()
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"Provider {self._name!r}: {clock.which_expired()} timeout expired."
            ) from exc
        except httpx.ConnectTimeout as exc:
            raise UpstreamTimeout(f"Provider {self._name!r}: connect timeout expired.") from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise UpstreamTimeout(
                f"Provider {self._name!r}: {clock.which_expired()} timeout expired."
            ) from exc
        except (httpx.ConnectError, httpx.PoolTimeout) as exc:
            raise UpstreamUnavailable(f"Provider {self._name!r} is unreachable.") from exc
        except httpx.TransportError as exc:  # the connection broke: before the response, or mid-stream
            raise _cut(self._name, clock) from exc


class _Deadlines:
    """The first-token, idle and total deadlines of one upstream call, on the event loop's clock."""

    def __init__(self, timeouts: Timeouts, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timeouts = timeouts
        self._total = loop.time() + timeouts.total
        self._started = self._last_seen = loop.time()
        self.first_token_seen = False

    def seen(self) -> None:
        """The upstream sent something now: the idle deadline counts from here."""
        self._last_seen = self._loop.time()

    def next_deadline(self) -> float:
        if self.first_token_seen:
            return min(self._total, self._last_seen + self._timeouts.idle)
        return min(self._total, self._started + self._timeouts.first_token)

    def which_expired(self) -> str:
        if self._loop.time() >= self._total - 0.001:
            return "total"
        return "idle" if self.first_token_seen else "first-token"


class _LazyTimer:
    """Keeps an ``asyncio.Timeout`` at the call's next deadline without moving it on every line (that
    cost ~5% of a busy worker's CPU): just before the timer would fire, it moves to the deadline the
    last :meth:`_Deadlines.seen` gives, if that is later; only then does it fire for real."""

    _AHEAD = 0.001  # seconds before the timer that the check runs (the loop runs earlier timers first)

    def __init__(self, clock: _Deadlines, timer: asyncio.Timeout, loop: asyncio.AbstractEventLoop) -> None:
        self._clock = clock
        self._timer = timer
        self._loop = loop
        self._check: asyncio.TimerHandle | None = None

    def move(self) -> None:
        """Put the timer at the clock's next deadline now (which may be earlier) and watch it."""
        self._timer.reschedule(self._clock.next_deadline())
        self._watch()

    def close(self) -> None:
        if self._check is not None:
            self._check.cancel()

    def _watch(self) -> None:
        self.close()
        when = self._timer.when()
        if when is not None:
            self._check = self._loop.call_at(when - self._AHEAD, self._on_check)

    def _on_check(self) -> None:
        deadline = self._clock.next_deadline()
        when = self._timer.when()
        if when is not None and deadline > when:
            self._timer.reschedule(deadline)
            self._watch()


async def _deltas(
    name: str, response: httpx.Response, clock: _Deadlines, timer: _LazyTimer
) -> AsyncIterator[Delta]:
    finished = False
    done = False
    async for data in sse_data(response.aiter_lines()):
        # After [DONE], read on to the end of the body: a fully read response keeps its connection alive.
        if done:
            continue
        if data.strip() == "[DONE]":
            done = True
            continue
        clock.seen()
        for delta in _parse_chunk(name, data):
            finished = finished or delta.finish_reason is not None
            if not clock.first_token_seen and (delta.has_message_part or finished):
                clock.first_token_seen = True
                timer.move()  # from the first-token deadline to the idle one, which may be earlier
            yield delta
    if not finished and not done:
        raise _cut(name, clock)


def _cut(name: str, clock: _Deadlines) -> AIORouterError:
    if clock.first_token_seen:
        return UpstreamError(f"Provider {name!r} cut the stream mid-way.")
    return UpstreamUnavailable(f"Provider {name!r} closed the connection before answering.")


def _parse_chunk(name: str, data: str) -> list[Delta]:
    try:
        chunk = orjson.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError("chunk is not an object")
        if chunk.get("error"):
            raise UpstreamError(f"Provider {name!r} failed mid-stream: {_message_of(chunk)}")
        deltas = [
            _choice_delta(choice, chunk)
            for choice in chunk.get("choices") or ()
            if choice.get("index", 0) == 0
        ]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            deltas.append(Delta(usage=Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))))
        return deltas
    except AIORouterError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UpstreamError(f"Provider {name!r} sent a malformed chunk.") from exc


def _choice_delta(choice: dict[str, Any], chunk: dict[str, Any]) -> Delta:
    delta = choice.get("delta") or {}
    calls = tuple(
        ToolCallDelta(
            index=int(call.get("index", 0)),
            id=call.get("id"),
            name=(call.get("function") or {}).get("name"),
            arguments=(call.get("function") or {}).get("arguments") or "",
        )
        for call in delta.get("tool_calls") or ()
    )
    return Delta(
        content=delta.get("content") or None,
        refusal=delta.get("refusal") or None,
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        system_fingerprint=chunk.get("system_fingerprint"),
    )


def _status_error(name: str, response: httpx.Response) -> AIORouterError:
    status = response.status_code
    message = _message_of_response(response)
    if status in _BAD_REQUEST_STATUSES:
        return UpstreamBadRequest(message)
    if status == 429 or status >= 500:
        retry_after = response.headers.get("retry-after")
        headers = {"Retry-After": retry_after} if retry_after else None
        return UpstreamUnavailable(f"Provider {name!r} is unavailable (HTTP {status}).", headers=headers)
    if status in (401, 403):
        return UpstreamError(f"Provider {name!r} rejected our credentials (HTTP {status}).")
    return UpstreamError(f"Provider {name!r} answered HTTP {status}: {message}")


def _message_of_response(response: httpx.Response) -> str:
    try:
        return _message_of(orjson.loads(response.content))
    except orjson.JSONDecodeError:
        return response.text[:_MAX_ERROR_TEXT] or f"HTTP {response.status_code}"


def _message_of(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:_MAX_ERROR_TEXT]
    if isinstance(error, str):
        return error[:_MAX_ERROR_TEXT]
    return orjson.dumps(body).decode()[:_MAX_ERROR_TEXT]
