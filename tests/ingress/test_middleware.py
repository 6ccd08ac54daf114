"""The request-context middleware: a client that leaves while its body is read is not a server error."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingress.middleware import RequestContextMiddleware
from ingress.versions import VersionRegistry
from shared.settings import Settings


async def test_a_client_that_left_during_its_body_is_neither_answered_nor_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def reads_its_body(scope: Scope, receive: Receive, send: Send) -> None:
        raise ClientDisconnect()  # what Starlette's Request.body() raises on http.disconnect

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/files", "headers": []}
    with caplog.at_level(logging.INFO):
        await _middleware(reads_its_body)(scope, receive, send)
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _middleware(app: ASGIApp) -> RequestContextMiddleware:
    settings = Settings()
    return RequestContextMiddleware(app, VersionRegistry(settings.api_versions, settings.default_api_version))


async def _never_receive() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _sent_when_cancelled(app: ASGIApp, reached: asyncio.Event) -> list[Message]:
    """Serve a completion with ``app`` through the middleware, cancel it once ``reached`` is set, check
    the cancel goes on, and return what was sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    request = asyncio.create_task(_middleware(app)(scope, _never_receive, send))
    await reached.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):  # whatever was answered, the request is cancelled still
        await request
    return sent


async def test_a_request_the_shutdown_cancels_before_its_answer_gets_503_ingress_stopping() -> None:
    """uvicorn cancels what still runs after its graceful-shutdown timeout (a request waiting on a frozen
    Redis, say): the request answers 503 ingress_stopping with a Retry-After, not uvicorn's bare 500."""
    waiting = asyncio.Event()

    async def waits_on_redis(scope: Scope, receive: Receive, send: Send) -> None:
        waiting.set()
        await asyncio.Event().wait()

    start, body = await _sent_when_cancelled(waits_on_redis, waiting)
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1" and b"x-request-id" in headers
    assert orjson.loads(body["body"])["error"]["code"] == "ingress_stopping"


async def test_an_answer_under_way_is_cut_as_it_is_when_the_shutdown_cancels_it() -> None:
    """A response already started cannot become an error response: the cancel goes on to uvicorn, which
    closes the connection."""
    streaming = asyncio.Event()

    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
        streaming.set()
        await asyncio.Event().wait()

    sent = await _sent_when_cancelled(streams, streaming)
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
