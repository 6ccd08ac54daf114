"""The Anthropic Messages API, over one keep-alive connection pool per provider and process.

The OpenAI body is translated by :mod:`workers.providers.anthropic_translate`; the upstream call always
streams (one code path, real first-token and idle timeouts, prompt cancellation), and its events become
:class:`Delta` objects.  Transport errors and upstream statuses become our errors here, like the
OpenAI-compatible adapter:

    connect error, 429, 529, 5xx       UpstreamUnavailable (503, with Retry-After when given)
    connect/first-token/idle/total     UpstreamTimeout (503)
    400/404/413/422                    UpstreamBadRequest (400, upstream message)
    401/403, other 4xx                 UpstreamError (500: our configuration is wrong)
    ``error`` event in the stream      by its type: overloaded/rate-limit/api → UpstreamUnavailable,
                                       invalid_request → UpstreamBadRequest, else UpstreamError
    stream cut before any content      UpstreamUnavailable (nothing reached the client: fallback is safe)
    stream cut after content, garbage  UpstreamError (500)

The answer ends at ``message_stop``; the rest of the body is read for at most ``BODY_END_WAIT``, so that
a connection read to its end serves the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shared.errors import (
    AIORouterError,
    UpstreamError,
    UpstreamUnavailable,
)
from shared.jobs import CompletionJob
from shared.settings import ProviderSettings
from workers.providers.anthropic_translate import (
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    to_anthropic_request,
)
from workers.providers.base import Delta
from workers.providers.http_clients import UpstreamReply, make_http_client
from workers.providers.upstream_call import (
    Deadlines,
    DeadlineTimer,
    call_scope,
    read_to_the_end,
    status_error,
)

ANTHROPIC_VERSION = "2023-06-01"
_UNAVAILABLE_STATUSES = frozenset({429, 529})  # 529: Anthropic's 'overloaded'


class AnthropicProvider:
    def __init__(
        self,
        provider: ProviderSettings,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
        self._name = provider.name
        self._timeouts = provider.timeouts
        self._default_max_tokens = default_max_tokens
        self._http = make_http_client(provider, headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    def request_body(self, job: CompletionJob) -> dict[str, Any]:
        return to_anthropic_request(
            job.body, job.upstream_model, stream=True, default_max_tokens=self._default_max_tokens
        )

    def streams(self, job: CompletionJob) -> bool:
        return True  # every Messages call streams

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        clock = Deadlines(self._timeouts, asyncio.get_running_loop())
        body = orjson.dumps(self.request_body(job))
        async with call_scope(self._name, clock) as timer:
            async with self._http.post("messages", body) as response:
                if response.status >= 400:
                    answer = await response.read()
                    raise status_error(
                        self._name,
                        response.status,
                        response.headers,
                        answer,
                        unavailable=_UNAVAILABLE_STATUSES,
                    )
                async for delta in self._deltas(response, clock, timer):
                    yield delta

    async def _deltas(
        self, response: UpstreamReply, clock: Deadlines, timer: DeadlineTimer
    ) -> AsyncIterator[Delta]:
        translator = StreamTranslator()
        events = response.sse_data()
        async for data in events:
            clock.seen()
            event = _parse_event(self._name, data)
            try:
                deltas = translator.feed(event)
            except AIORouterError:
                raise
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise UpstreamError(f"Provider {self._name!r} sent a malformed event.") from exc
            for delta in deltas:
                if not clock.first_token_seen and delta.has_message_part:
                    clock.first_token_seen = True
                    timer.move()  # from the first-token deadline to the idle one, which may be earlier
                yield delta
            if translator.finished:  # the body's end read too, so that its connection serves the next call
                await read_to_the_end(events)
                return
        if clock.first_token_seen:
            raise UpstreamError(f"Provider {self._name!r} closed the stream before it finished.")
        raise UpstreamUnavailable(f"Provider {self._name!r} closed the stream before any content.")


def _parse_event(name: str, data: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"Provider {name!r} sent a malformed event.") from exc
    if not isinstance(event, dict):
        raise UpstreamError(f"Provider {name!r} sent a malformed event.")
    return event
