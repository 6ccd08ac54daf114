"""``POST /v1/chat/completions``: a raw ASGI endpoint, because it is the hot path.

Order of checks: API key (401), ``Content-Type`` (400 ``unsupported_content_type``: the API reference
lists no 415, so a non-JSON body is a malformed request), body size (413), JSON, validation (400), model
(404).  Then one rq job is enqueued and its frames relayed (:mod:`ingress.relay`).  The
``API-Version`` and ``X-Request-Id`` headers come from :mod:`ingress.middleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from starlette.types import Receive, Scope, Send

from ingress.context import IngressContext, ingress_context
from ingress.relay import CompletionRelay
from ingress.reply_hub import Subscription
from ingress.routing import automated_decision
from ingress.validation import parse_json_object, validate_chat_request
from shared.errors import InvalidRequest, PayloadTooLarge
from shared.jobs import CompletionJob

JSON_MEDIA_TYPE = "application/json"


class ChatCompletionsEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        context = ingress_context(scope["app"])
        headers = _request_headers(scope)
        record = await context.auth.authenticate(headers.get(b"authorization", b"").decode("latin-1") or None)
        _check_content_type(headers.get(b"content-type"))
        raw = await read_body(receive, headers.get(b"content-length"), context.settings.max_body_bytes)
        if raw is None:
            return  # the client left while sending its body
        request = validate_chat_request(parse_json_object(raw))
        entry, deployment = context.router.route(request.model)
        state = scope.get("state", {})
        job = CompletionJob(
            request_id=uuid.uuid4().hex,
            reply_to=context.hub.channel,
            model=entry.id,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            stream=request.stream,
            include_usage=request.include_usage,
            body=request.body,
            created=int(time.time()),
            account_id=record.account_id,
            key_id=record.key_id,
            extra={"client_request_id": state.get("request_id"), "api_version": state.get("api_version")},
        )
        await _run_job(context, job, receive, send, decision=automated_decision(entry))


async def _run_job(
    context: IngressContext,
    job: CompletionJob,
    receive: Receive,
    send: Send,
    *,
    decision: str,
) -> None:
    subscription = context.hub.register(job.request_id)
    relay = CompletionRelay(context.redis, context.settings, subscription, job, decision=decision)
    watcher = asyncio.create_task(_watch_disconnect(receive, subscription))
    try:
        await relay.enqueue()
        if not await relay.wait_for_start():
            return
        if job.stream:
            await relay.send_stream(send)
        else:
            await relay.send_json(send)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        context.hub.unregister(subscription)
        await relay.abandon_if_unfinished()


async def _watch_disconnect(receive: Receive, subscription: Subscription) -> None:
    """Tell the request when its client goes away (``http.disconnect``, or a receive that fails)."""
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except OSError:
        pass
    subscription.client_gone()


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes | None:
    """The request body, at most ``limit`` bytes (413 beyond); None if the client disconnected."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.", code="invalid_value") from None
        if declared > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")


def _check_content_type(value: bytes | None) -> None:
    media_type = (value or b"").split(b";", 1)[0].strip().decode("latin-1").lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = media_type or "none"
        raise InvalidRequest(
            f"Content-Type must be application/json (got {shown}).", code="unsupported_content_type"
        )


def _request_headers(scope: Scope) -> dict[bytes, bytes]:
    return {name: value for name, value in scope["headers"] if name in _WANTED_HEADERS}


_WANTED_HEADERS = frozenset({b"authorization", b"content-type", b"content-length"})
