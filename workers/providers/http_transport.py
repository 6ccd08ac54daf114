"""httpx's own HTTP/1.1 transport, sending each request in one write instead of two or three.

httpcore writes a request's head, its body and (for a sized body) an empty end-of-message separately:
each is a ``send`` system call, ~10% of a busy worker's CPU on this kind of box (py-spy).
:class:`CoalescingTransport` is ``httpx.AsyncHTTPTransport`` over a network backend whose streams hold
writes until the next read (or TLS upgrade), then send them joined: one ``send`` per request.  Reading
the response always follows writing the request, so nothing is held back for long, and a write error
surfaces as httpx's transport error either way.
"""

# ruff: noqa: ASYNC109 -- the `timeout` parameters are httpcore's network-stream interface
from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx


class _WriteOnRead(httpcore.AsyncNetworkStream):
    """A network stream that joins the writes made since the last read into one."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._pending: list[bytes] = []

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush(timeout)
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._pending.clear()
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        return _WriteOnRead(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)

    async def _flush(self, timeout: float | None) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            await self._stream.write(data, timeout)


class _WriteOnReadBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _WriteOnRead(
            await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _WriteOnRead(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class CoalescingTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport(limits=limits)`` (no proxy; httpx mounts its own for proxied URLs)
    whose requests go out in one write each."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_WriteOnReadBackend(),
        )
