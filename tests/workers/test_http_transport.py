"""The coalescing transport: one write per request, and real upstream calls through it."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx

from bench.upstream import start_upstream
from workers.providers.http_transport import CoalescingTransport, _WriteOnRead

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RecordingStream(httpcore.AsyncNetworkStream):
    """A network stream that records each write and answers one canned response."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._replies = [RESPONSE]

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.writes.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return self._replies.pop(0) if self._replies else b""

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return None


async def test_a_request_with_a_body_is_one_write() -> None:
    """httpcore's head, body and end of message reach the socket as one write, in order."""
    inner = RecordingStream()
    connection = httpcore.AsyncHTTP11Connection(
        httpcore.Origin(b"http", b"upstream", 80), _WriteOnRead(inner)
    )
    request = httpcore.Request(
        "POST",
        "http://upstream/v1/chat/completions",
        headers=[(b"host", b"upstream"), (b"content-length", b"7")],
        content=b'{"a":1}',
    )
    response = await connection.handle_async_request(request)
    assert await response.aread() == b"ok"
    assert len(inner.writes) == 1
    assert inner.writes[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert inner.writes[0].endswith(b'\r\n\r\n{"a":1}')


async def test_keep_alive_requests_through_the_transport() -> None:
    """Several requests in a row through one client reuse one connection and all get their answers."""
    upstream = await start_upstream()
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    try:
        async with httpx.AsyncClient(transport=CoalescingTransport(limits)) as client:
            for _ in range(5):
                response = await client.get(f"{upstream.base_url}/models")
                assert response.status_code == 200 and response.json()["object"] == "list"
        assert upstream.stats.connections == 1
    finally:
        await upstream.close()
