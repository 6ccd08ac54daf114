"""A minimal HTTP/1.1 keep-alive client for the load generator: asyncio protocol plus httptools.

httpx costs more CPU per request than the systems it would measure; this client costs a parser callback
per body piece and checks every SSE event in the same callback, without a task or await per chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import cast

import httptools

from bench.answer_check import StreamVerifier, check_completion, error_kind


class InFlight:
    """Requests open right now, and how many of them are receiving content; with their peaks."""

    __slots__ = ("open", "peak_open", "peak_streaming", "streaming")

    def __init__(self) -> None:
        self.open = self.streaming = self.peak_open = self.peak_streaming = 0

    def opened(self) -> None:
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)

    def streaming_started(self) -> None:
        self.streaming += 1
        self.peak_streaming = max(self.peak_streaming, self.streaming)

    def closed(self, was_streaming: bool) -> None:
        self.open -= 1
        self.streaming -= was_streaming


class Exchange:
    """One request and what came back for it."""

    __slots__ = (
        "_body",
        "_buffer",
        "_expected",
        "_in_flight",
        "_loop",
        "_timer",
        "error",
        "error_detail",
        "finished_at",
        "first_chunk_at",
        "future",
        "server_timing",
        "started_at",
        "status",
        "verifier",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stream: bool,
        expected: str,
        started_at: float,
        in_flight: InFlight,
    ) -> None:
        self._loop = loop
        self._in_flight = in_flight
        in_flight.opened()
        self._expected = expected
        self._body: list[bytes] = []
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self.future: asyncio.Future[None] = loop.create_future()
        self.verifier = StreamVerifier(expected) if stream else None
        self.started_at = started_at
        self.first_chunk_at = 0.0
        self.finished_at = 0.0
        self.status = 0
        self.server_timing = b""  # the response's Server-Timing header, if it had one
        self.error: str | None = None
        self.error_detail = ""

    @property
    def chunks(self) -> int:
        return self.verifier.chunks if self.verifier is not None else 0

    def arm_timeout(self, timeout: float, on_timeout: Callable[[str], None]) -> None:
        self._timer = self._loop.call_later(timeout, on_timeout, "timeout")

    def on_status(self, status: int) -> None:
        self.status = status
        if status != 200:
            self.verifier = None  # an error answer is one JSON body, never a stream

    def on_body(self, data: bytes) -> None:
        verifier = self.verifier
        if verifier is None:
            self._body.append(data)
            return
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            if verifier.feed_event(buffer[start:end]) and not self.first_chunk_at:
                self.first_chunk_at = perf_counter()
                self._in_flight.streaming_started()
            start = end + 2
        self._buffer = buffer[start:]

    def on_complete(self) -> None:
        if self.status != 200:
            kind, self.error_detail = error_kind(self.status, b"".join(self._body))
            self._settle(kind)
        elif self.verifier is not None:
            fault = self.verifier.finish()
            self.error_detail = self.verifier.error_detail
            self._settle(fault)
        else:
            self._settle(check_completion(b"".join(self._body), self._expected))

    def fail(self, kind: str) -> None:
        self._settle(kind)

    def _settle(self, error: str | None) -> None:
        if self.future.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        self.error = error
        self.finished_at = perf_counter()
        self._in_flight.closed(was_streaming=self.first_chunk_at > 0)
        if not self.first_chunk_at:
            self.first_chunk_at = self.finished_at
        self.future.set_result(None)


class Connection(asyncio.Protocol):
    """One kept-alive client connection; one exchange at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._exchange: Exchange | None = None
        self.usable = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.usable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._transport = None
        if self._exchange is not None:
            self._exchange.fail("disconnected")
            self._exchange = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._abandon("bad_http")

    def send(self, request: bytes, exchange: Exchange, timeout: float) -> None:
        """Write ``request``; ``exchange.future`` resolves when its answer is over, or failed."""
        assert self._transport is not None and self._exchange is None
        self._exchange = exchange
        exchange.arm_timeout(timeout, self._abandon)
        self._transport.write(request)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _abandon(self, kind: str) -> None:
        exchange, self._exchange = self._exchange, None
        self.usable = False
        if self._transport is not None:
            self._transport.abort()
        if exchange is not None:
            exchange.fail(kind)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self._exchange is not None and name.lower() == b"server-timing":
            self._exchange.server_timing = value

    def on_headers_complete(self) -> None:
        if self._exchange is not None:
            self._exchange.on_status(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self._exchange is not None:
            self._exchange.on_body(body)

    def on_message_complete(self) -> None:
        exchange, self._exchange = self._exchange, None
        if not self._parser.should_keep_alive():
            self.usable = False
            self.close()
        if exchange is not None:
            exchange.on_complete()


async def connect(host: str, port: int) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(Connection, host, port)
    return protocol


def build_request(host: str, port: int, path: str, body: bytes, api_key: str | None) -> bytes:
    """The bytes of one ``POST`` with a JSON body, reused for every request of a run."""
    auth = f"authorization: Bearer {api_key}\r\n" if api_key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: */*\r\n{auth}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
