"""A response's head leaves in the same write as its first body bytes: the transport wrapper on its own
(held head joined, sent at the end of the loop's pass, on close, dropped on a closed connection), and
the guarded uvicorn protocol writing a JSON answer and a stream's head with its first chunk in one
``write()`` each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.server import ServerState

from ingress.connection_guard import guarded_protocol
from ingress.response_writes import HeadJoiningTransport
from shared.settings import ConnectionLimits


class RecordingTransport(asyncio.Transport):
    """A connection's transport that keeps what each ``write()`` got."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closed_event = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def next_pass() -> None:
    """Let the event loop finish the current pass (the callbacks it scheduled with call_soon run)."""
    await asyncio.sleep(0)


async def test_a_head_written_with_its_body_in_one_pass_is_one_write() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    transport.write(b"HEAD\r\n\r\n")
    assert inner.writes == []
    transport.write(b"body")
    transport.write(b"more")
    assert inner.writes == [b"HEAD\r\n\r\nbody", b"more"]
    await next_pass()
    assert inner.writes == [b"HEAD\r\n\r\nbody", b"more"]  # the end of the pass wrote nothing again


async def test_a_head_alone_goes_out_at_the_end_of_the_pass() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    transport.write(b"HEAD\r\n\r\n")
    await next_pass()
    assert inner.writes == [b"HEAD\r\n\r\n"]
    transport.write(b"first chunk")
    assert inner.writes == [b"HEAD\r\n\r\n", b"first chunk"]


async def test_a_close_sends_the_held_head_first() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    transport.write(b"HEAD\r\n\r\n")
    transport.close()
    assert inner.writes == [b"HEAD\r\n\r\n"] and inner.closed
    await next_pass()
    assert inner.writes == [b"HEAD\r\n\r\n"]


async def test_a_head_held_when_the_connection_closed_is_dropped() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    transport.write(b"HEAD\r\n\r\n")
    inner.close()  # the client left (the protocol closed its transport)
    await next_pass()
    assert inner.writes == [] and transport.is_closing()


async def test_other_attributes_are_the_connections() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    assert transport.get_extra_info("peername") == ("127.0.0.1", 50000)


async def _json(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(3):
            yield b"data: %d\n\n" % n
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def serve_one(path: bytes, method: bytes = b"GET") -> list[bytes]:
    """One request through the guarded protocol on a recording transport: the writes it made."""
    app = Starlette(routes=[Route("/json", _json), Route("/stream", _stream)])
    config = Config(app=app, http="httptools", lifespan="off")
    config.load()
    protocol = guarded_protocol(ConnectionLimits(), "2026-01-01")(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(method + b" " + path + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    await asyncio.wait_for(transport.closed_event.wait(), 10)
    protocol.connection_lost(None)
    return transport.writes


async def test_a_json_answer_is_one_write() -> None:
    writes = await serve_one(b"/json")
    assert len(writes) == 1, writes
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b'{"ok":true}'


async def test_a_streams_head_goes_with_its_first_chunk() -> None:
    writes = await serve_one(b"/stream")
    assert writes[0].startswith(b"HTTP/1.1 200 OK") and writes[0].endswith(b"data: 0\n\n\r\n"), writes
    assert b"".join(writes).endswith(b"0\r\n\r\n") and len(writes) >= 3


async def test_a_100_continue_goes_at_once_and_the_head_still_joins_the_body() -> None:
    inner = RecordingTransport()
    transport = HeadJoiningTransport(inner)
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    transport.write(b"HEAD\r\n\r\n")
    transport.write(b"body")
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"HEAD\r\n\r\nbody"]


async def test_a_head_request_is_answered_in_the_pass_it_completes() -> None:
    """A HEAD response has no body to carry its head: nothing is held, so a close right after it (as
    uvicorn's shutdown does with a completed response) cannot drop it."""
    app = Starlette(routes=[Route("/json", _json)])
    config = Config(app=app, http="httptools", lifespan="off")
    config.load()
    for method, wrapped in ((b"HEAD", False), (b"GET", True)):
        protocol = guarded_protocol(ConnectionLimits(), "2026-01-01")(config, ServerState(), {})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(method + b" /json HTTP/1.1\r\nHost: test\r\n\r\n")
        assert protocol.cycle is not None
        assert isinstance(protocol.cycle.transport, HeadJoiningTransport) is wrapped, method
        protocol.connection_lost(None)
    writes = await serve_one(b"/json", method=b"HEAD")
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200 OK") and writes[0].endswith(b"\r\n\r\n")
