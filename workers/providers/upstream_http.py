"""The worker's HTTP/1.1 client for upstream calls: asyncio protocol, httptools parsing, one keep-alive pool
per provider.

A general-purpose client (connection pool, stream layers, response objects, line iteration) does far
more per call than the adapters need, on the path every streamed token takes; this client does only
what they need.  It ``POST``s a body, sent in
one write with the head, and reads the status and headers, then either the whole body (by content-length,
chunked, or until close) or the ``data`` of each server-sent event as it arrives.  ``http`` and ``https``
base URLs (TLS through asyncio's ``ssl``: SNI, certificate and host name checks, ALPN ``http/1.1``, a
custom CA bundle and a client certificate through the ``ssl_context``).  It does not do proxies,
redirects, compression or HTTP/2: a provider that needs them uses httpx instead
(:mod:`workers.providers.http_clients`).  It asks for ``accept-encoding: identity`` and fails a response
that is encoded anyway (:class:`EncodedBody`) rather than hand its bytes on as text.

The pool is a LIFO stack of idle connections (the warmest first; the coldest expire after
:data:`KEEPALIVE_EXPIRY`) with at most ``max_connections`` open: a call waits up to the connect timeout
for one.  A connection goes back only when its response was read completely and both sides keep it alive;
any other exit (an error, a cancelled call, ``connection: close``) closes it at once, so the upstream sees
a cancelled call go.  A request is sent once, never again by this client: before an idle connection is
reused its socket is checked, without blocking, for a close (or stray bytes) the event loop has not
processed yet, and such a connection is dropped before any byte of the request is written.  A
connection that dies after the request was written fails the call with :class:`ConnectionCut`, since
the upstream may have started (and billed) the completion; whether to try again is the retry and
fallback rules' decision, above this client.

Errors (:mod:`workers.providers.upstream_call` converts them into ours):

    TransportError
    ├── ConnectError      no connection: refused, unresolvable, TLS handshake failed, or none free in time
    ├── ConnectTimeout    the connect timeout expired
    ├── ConnectionCut     the connection closed, or answered something other than HTTP/1.1, before the
    │   │                 response was complete
    │   └── ResponseTooLarge  the response head, a whole body or one server-sent event exceeds its bound
    │                     (:data:`MAX_HEAD_BYTES`, :data:`MAX_BODY_BYTES`, ``sse.MAX_EVENT_BYTES``): the
    │                     connection is closed, so what one response costs stays bounded
    └── EncodedBody       the body came with a content-encoding other than identity
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

from shared.errors import ConfigError
from workers.providers.sse import EventTooLarge, SSEDecoder

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default): servers drop colder ones
MAX_BUFFERED = 256 * 1024  # body bytes held for a slow reader before the socket stops being read
MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one response
MAX_BODY_BYTES = 32 * 1024 * 1024  # a body read whole (a non-streamed answer, an error body)
USER_AGENT = "aiorouter"


class TransportError(Exception):
    """The exchange failed below HTTP."""


class ConnectError(TransportError): ...


class ConnectTimeout(TransportError): ...


class ConnectionCut(TransportError): ...


class ResponseTooLarge(ConnectionCut): ...


class EncodedBody(TransportError):
    """The upstream compressed (or otherwise encoded) a body we asked to get as ``identity``."""


class ResponseHeaders(Mapping[str, str]):
    """Response headers by name, looked up case-insensitively; a repeated header's values joined by ", "."""

    __slots__ = ("_by_name",)

    def __init__(self, by_lower_name: dict[str, str]) -> None:
        self._by_name = by_lower_name

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


class UpstreamClient:
    """``POST``s to one base URL over a pool of keep-alive connections; one per provider and process."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_connections: int,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"upstream base_url {base_url!r} is not an http:// or https:// URL")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = (ssl_context or _default_ssl_context()) if url.scheme == "https" else None
        self._tls_name = self._host if self._ssl is not None else None  # SNI and the certificate's name
        self._base_path = url.path.rstrip("/")
        lines = {
            "host": url.netloc.rpartition("@")[2],
            "user-agent": USER_AGENT,
            "accept-encoding": "identity",
            **headers,
        }
        if any("\r" in f"{k}{v}" or "\n" in f"{k}{v}" for k, v in lines.items()):
            raise ConfigError("upstream header names and values must not contain line breaks")
        self._header_block = "".join(f"{k}: {v}\r\n" for k, v in lines.items())
        self._heads: dict[str, bytes] = {}
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: deque[_Connection] = deque()
        self._closed = False

    def post(self, path: str, body: bytes) -> Call:
        """``async with client.post("chat/completions", body) as response:`` (path relative to base_url)."""
        head = self._heads.get(path)
        if head is None:
            target = f"{self._base_path}/{path.lstrip('/')}"
            head = self._heads[path] = f"POST {target} HTTP/1.1\r\n{self._header_block}".encode()
        return Call(self, b"%bcontent-length: %d\r\n\r\n%b" % (head, len(body), body))

    async def aclose(self) -> None:
        """Close the idle connections now, and those in use when their calls end."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    async def _checkout(self) -> tuple[_Connection, bool]:
        """A connection for one call, and whether it was reused; call once the call has a slot."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < KEEPALIVE_EXPIRY and connection.quiet():
                return connection, True
            connection.close()
        return await self._connect(), False

    def _checkin(self, connection: _Connection, response: UpstreamResponse | None) -> None:
        """Put the connection back if its response was read completely and may be kept, else close it."""
        if response is not None and response.reusable and connection.usable and not self._closed:
            now = connection.idle_since = asyncio.get_running_loop().time()
            connection.response = None
            self._idle.append(connection)
            while now - self._idle[0].idle_since >= KEEPALIVE_EXPIRY:
                self._idle.popleft().close()
        else:
            connection.close()

    async def _take_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ConnectError(f"no connection to {self._host} free within the connect timeout") from None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl, server_hostname=self._tls_name
                )
        except TimeoutError as exc:  # before OSError: a socket's own ETIMEDOUT is a TimeoutError too
            raise ConnectTimeout(f"connecting to {self._host}:{self._port} timed out") from exc
        except OSError as exc:  # refused, unresolvable, unreachable, TLS handshake or certificate failed
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return protocol


class Call:
    """One ``POST`` as an async context manager: the response on entry, its connection released on exit."""

    __slots__ = ("_client", "_connection", "_request", "_response")

    def __init__(self, client: UpstreamClient, request: bytes) -> None:
        self._client = client
        self._request = request
        self._connection: _Connection | None = None
        self._response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        client = self._client
        await client._take_slot()
        try:
            connection, _ = await client._checkout()
            self._connection = connection
            response = self._response = connection.send(self._request)
            await response.wait_head()
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", "") and response.status < 400:  # an error keeps its status
                raise EncodedBody(
                    f"the upstream sent a {encoding!r}-encoded body despite accept-encoding: identity"
                )
        except BaseException:
            self._release()
            raise
        return response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        if self._connection is not None:
            self._client._checkin(self._connection, self._response)
            self._connection = None
        if self._response is not None:
            self._response.detach()
        self._client._slots.release()


class _Connection(asyncio.Protocol):
    """One connection to the upstream: one exchange at a time, no pipelining."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.usable = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.usable = True

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes on an idle connection: nothing can be trusted on it any more
        else:
            self.response.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        response, self.response = self.response, None
        if response is not None:
            response.connection_lost(exc)

    def quiet(self) -> bool:
        """Whether an idle connection's socket holds nothing unread: no close from the server (a FIN or a
        reset the loop has not processed yet) and no stray bytes.  One non-blocking peek."""
        assert self.transport is not None
        raw = self.transport.get_extra_info("socket")
        if raw is None:
            return True
        peek = socket.socket(raw.family, raw.type, 0, fileno=raw.fileno())  # a view; detached below
        try:
            peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: the server has not closed it
        except OSError:
            return False
        finally:
            peek.detach()
        return False  # b"" (the server closed it) or bytes nobody asked for

    def send(self, request: bytes) -> UpstreamResponse:
        assert self.transport is not None
        response = self.response = UpstreamResponse(self)
        self.transport.write(request)
        return response

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """The response to one call: ``status`` and ``headers``, then :meth:`read` or :meth:`sse_data`."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._raw_headers: dict[str, str] = {}
        self._pieces: list[bytes] = []
        self._size = 0
        self._head_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: ConnectionCut | None = None
        self._head_done = self._complete = self._keep_alive = False
        self._informational = self._until_close = self._paused = False
        self.status = 0
        self.headers = ResponseHeaders(self._raw_headers)

    def detach(self) -> None:
        """The call is over: drop the parser, whose callbacks make a cycle that only the GC would free."""
        del self._parser

    @property
    def reusable(self) -> bool:
        """Read completely, and both sides keep the connection alive."""
        return self._complete and self._keep_alive

    async def read(self) -> bytes:
        """The whole body."""
        body: list[bytes] = []
        size = 0
        while True:
            pieces = self._take()
            body += pieces
            size += sum(map(len, pieces))
            if size > MAX_BODY_BYTES:
                self._connection.close()
                raise ResponseTooLarge(f"the upstream's body is longer than {MAX_BODY_BYTES} bytes")
            if self._complete:
                return b"".join(body)
            await self._wait()

    async def sse_data(self) -> AsyncIterator[bytes]:
        """The ``data`` of each server-sent event of the body, as it arrives."""
        decoder = SSEDecoder()
        while True:
            pieces = self._take()
            if pieces:
                try:
                    events = decoder.feed(b"".join(pieces))
                except EventTooLarge as exc:
                    self._connection.close()
                    raise ResponseTooLarge(f"the upstream's stream: {exc}") from None
                for data in events:
                    yield data
            elif self._complete:
                for data in decoder.end():
                    yield data
                return
            else:
                await self._wait()

    async def wait_head(self) -> None:
        while not self._head_done:
            await self._wait()

    def _take(self) -> list[bytes]:
        pieces = self._pieces
        if pieces:
            self._pieces = []
            self._size = 0
            if self._paused and self._connection.transport is not None:
                self._paused = False
                self._connection.transport.resume_reading()
        return pieces

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # from the connection
    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # the latter: a 101
            self._keep_alive = False
            if not self._complete:
                self._fail(ConnectionCut(f"the upstream's answer is not HTTP/1.1: {exc!r}"))
            self._connection.close()
            return
        if not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._keep_alive = False
                self._fail(ResponseTooLarge(f"the upstream's response head is over {MAX_HEAD_BYTES} bytes"))
                self._connection.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if self._head_done and self._until_close and exc is None:
            self._complete = True  # a body delimited by the end of the connection
            self._wake()
            return
        when = "mid-answer" if self._head_done else "before answering"
        self._fail(ConnectionCut(f"the upstream closed the connection {when}" + (f": {exc}" if exc else "")))

    def _fail(self, error: ConnectionCut) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._complete:
            self._keep_alive = False  # bytes after the response: the connection is out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        seen = self._raw_headers.get(key)
        self._raw_headers[key] = text if seen is None else f"{seen}, {text}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints, ...): the real answer follows
            self._informational = True
            self._raw_headers.clear()
            return
        self.status = status
        self._until_close = (
            "content-length" not in self._raw_headers
            and "chunked" not in self._raw_headers.get("transfer-encoding", "").lower()
        )
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not body:
            return
        self._pieces.append(body)
        self._size += len(body)
        if self._size > MAX_BUFFERED and not self._paused and self._connection.transport is not None:
            self._paused = True
            self._connection.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()


def _default_ssl_context() -> ssl.SSLContext:
    """The system's trusted CAs (and certifi's when installed, as httpx used), HTTP/1.1 by ALPN."""
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        pass
    else:
        context.load_verify_locations(certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context
