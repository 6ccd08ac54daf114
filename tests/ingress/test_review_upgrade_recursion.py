"""Review: pipelined requests that each offer an upgrade are re-parsed recursively."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from ingress.connection_guard import guarded_protocol
from shared.settings import ConnectionLimits
from tests.ingress.test_response_writes import RecordingTransport


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _protocol() -> tuple[Any, RecordingTransport]:
    config = Config(app=_app, lifespan="off")
    cls = guarded_protocol(ConnectionLimits(max_connections=1000), "2025-01-01")
    protocol = cls(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


OFFER = b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"


async def test_many_pipelined_upgrade_offers_in_one_read() -> None:
    protocol, transport = _protocol()
    data = OFFER * (60_000 // len(OFFER))  # under max_header_bytes (64 KiB): one piece
    protocol.data_received(data)  # RecursionError?
    await asyncio.sleep(0)
    assert len(protocol.pipeline) > 100
