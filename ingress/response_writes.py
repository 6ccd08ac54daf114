"""A response's status line and headers leave in the same write as its first body bytes.

uvicorn writes a response's head to the socket as soon as the app sends ``http.response.start``, and each
body message in a write of its own: a JSON answer takes two ``write()`` calls, and a stream's head goes
out alone before its first chunk.  Over loopback or a fast network each write that reaches an idle client
wakes it (on a VM, an interrupt to another core), and the client, having read a head, waits for the body
and is woken again.  :class:`HeadJoiningTransport` stands between one request's
:class:`~uvicorn.protocols.http.httptools_impl.RequestResponseCycle` and the connection's transport: it
holds the head and sends it with the next write, or at the end of the event loop's pass if none comes
in it (a stream whose first content is not there yet), so that the client never waits on a held head.

Everything else is the connection's transport; a close through it sends a held head first.  A ``HEAD``
response has no body to join, and is not wrapped (:mod:`ingress.connection_guard`, which also sends a held
head before writing or closing on the connection itself).
"""

from __future__ import annotations

import asyncio
from typing import Any

_INTERIM = b"HTTP/1.1 1"  # an interim (1xx) response line: not the response's head


class HeadJoiningTransport:
    """One response's view of its connection's ``transport``: the first write (the head) waits for the
    next one, or for the end of the loop's pass, and the two go out as one."""

    __slots__ = ("_first", "_flush", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._flush: asyncio.Handle | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            if data.startswith(_INTERIM):  # a "100 Continue" the client waits for: it goes now
                self._transport.write(data)
                return
            self._first = False
            self._held = data
            self._flush = asyncio.get_running_loop().call_soon(self.send_held)
            return
        if self._held is not None:
            data = self._take_held() + data
        self._transport.write(data)

    def send_held(self) -> None:
        """Write the held head now, if it is still held and the connection still open."""
        if self._held is not None:
            held = self._take_held()
            if not self._transport.is_closing():  # else the client left: nobody reads it
                self._transport.write(held)

    def close(self) -> None:
        self.send_held()
        self._transport.close()

    def _take_held(self) -> bytes:
        held, self._held = self._held or b"", None
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        return held

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
