"""A tiny scripted HTTP/1.1 server on a real socket, for the upstream answers the simulated ones never give
(garbage, a body cut short, ``connection: close``, odd chunking, a connection dropped while idle)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CLOSE = None
"""A step that closes the connection (without answering, when it comes first)."""

Step = bytes | float | None  # bytes are written, a float is a pause in seconds, CLOSE closes
Script = Callable[[int, int], Sequence[Step]]  # (connection number, request number on it) -> steps


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def request_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode()

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


@dataclass
class RawServer:
    script: Script
    scheme: str = "http"
    connections: int = 0  # accepted so far
    requests: list[Request] = field(default_factory=list)
    closed_by_client: int = 0  # connections the client closed while the server was answering or waiting
    closed: int = 0  # connections ended, whoever closed them
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"{self.scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        number = self.connections
        self.connections += 1
        try:
            for request_number in range(1_000_000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed an idle connection
                length = int(Request(head, b"").headers.get("content-length", "0"))
                self.requests.append(Request(head, await reader.readexactly(length)))
                if not await self._play(self.script(number, request_number), reader, writer):
                    return
        except ConnectionError:
            self.closed_by_client += 1
        finally:
            self._tasks.discard(task)
            writer.close()
            self.closed += 1

    async def _play(
        self, steps: Sequence[Step], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        for step in steps:
            if step is CLOSE:
                return False
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
            else:
                try:
                    async with asyncio.timeout(step):
                        if not await reader.read(1):  # a pause that notices the client leaving
                            raise ConnectionResetError
                except TimeoutError:
                    pass
        return True


async def start_raw_server(script: Script, tls: ssl.SSLContext | None = None) -> RawServer:
    """Serve ``script`` on a free port of 127.0.0.1 (over TLS with ``tls``); ``await server.close()``."""
    server = RawServer(script, "https" if tls is not None else "http")
    server._server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    return server


def answer(status: int = 200, body: bytes = b"", headers: str = "") -> bytes:
    """A whole response with a content-length body."""
    return f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n{headers}\r\n".encode() + body


def chunked(*pieces: bytes, headers: str = "content-type: text/event-stream\r\n") -> bytes:
    """A whole response with a chunked body, one chunk per piece."""
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces)
    return f"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n{headers}\r\n".encode() + chunks + b"0\r\n\r\n"
