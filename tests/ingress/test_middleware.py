"""The request-context middleware: a client that leaves while its body is read is not a server error."""

from __future__ import annotations

import logging

import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

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

    settings = Settings()
    middleware = RequestContextMiddleware(
        reads_its_body, VersionRegistry(settings.api_versions, settings.default_api_version)
    )
    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/files", "headers": []}
    with caplog.at_level(logging.INFO):
        await middleware(scope, receive, send)
    assert sent == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
