"""What the ingress accepts from a connection before any authentication, enforced in the process itself.

uvicorn's httptools protocol, subclassed (:func:`guarded_protocol`), so that a client cannot make the
ingress do unbounded work or hold its connections forever, whatever sits in front of it:

* a request's line and headers are fed to the parser only up to ``max_header_bytes`` (more: 431), and
  at most ``max_headers`` fields (more: 431) -- a 64 MiB header costs one bounded read, not a parse;
* its headers must arrive within ``header_timeout`` seconds of its first byte (or of the connection's
  start), else 408 (or a silent close if nothing at all arrived);
* its body must keep arriving (else 408): never ``body_timeout`` seconds without a byte of it, and
  from ``body_timeout`` seconds after the headers on, at an average of at least ``body_min_rate``
  bytes per second since them -- a slow upload that progresses passes, a stalled or trickling
  (slowloris) one is cut; a check that finds the socket paused (the app has not read what came) counts
  as progress, not as the client's delay.  Each read of a body only notes the time; the body's one
  timer judges when it fires and re-arms itself for the next deadline;
* an idle keep-alive connection closes after ``keepalive_timeout``;
* a request on a connection beyond ``max_connections`` open in this process is answered 503 (by
  default the open-file limit less what the process needs itself, :func:`connection_bound`);
* HTTP the parser refuses is a 400 ``invalid_http_request``;
* an offer to upgrade the connection (``Upgrade``: h2c, websocket) is ignored, and the request, body
  included, served as plain HTTP/1.1 (:meth:`GuardedHttpToolsProtocol._head_without_upgrade`);
* a client that leaves with pipelined requests outstanding leaves them all: the one running sees the
  disconnect (uvicorn itself tells only the newest one), and the queued ones never start;
* a request refused behind pipelined ones is answered after them, in the order of the requests (RFC 9112
  section 9.3.2): uvicorn alone would write the refusal at once, in the place of the running request's
  answer, and that answer then into a closing connection (a traceback).

Each request's response writes through a :class:`~ingress.response_writes.HeadJoiningTransport`, so that
its head leaves with its first body bytes.  A response without a ``content-length`` (a stream) to a
request below HTTP/1.1 is sent as it is, without chunked framing (which only HTTP/1.1 defines, RFC 9112
section 7.1), and ends with the connection (:func:`_close_delimited`); uvicorn alone would chunk it.

Every such answer is the JSON error envelope with ``connection: close``; the connection then stops
being parsed and reads (and drops) at most ``max_header_bytes`` more, for at most :data:`LINGER`
seconds, so that the client can read the answer before the close.  Each limit hit is counted and
logged at most once per ``log_interval`` seconds (:class:`LimitLog`), not once per connection.

This reaches into uvicorn's private protocol API (its per-connection attributes and parser callbacks):
``pyproject.toml`` pins uvicorn's version, and ``tests/ingress/test_connection_guard.py`` fails if the
parts used here change.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any, ClassVar, cast

import httptools
from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, WWWScope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ingress.http_errors import RequestHeadersTooLarge, RequestTimeout, send_error
from ingress.middleware import request_id_for
from ingress.response_writes import HeadJoiningTransport
from shared.errors import AIORouterError, InvalidRequest, ServiceUnavailable
from shared.open_files import raised_open_file_limit
from shared.settings import ConnectionLimits

log = logging.getLogger(__name__)

LINGER = 2.0  # seconds a refused connection stays half-open so that the client reads the answer
TIMER_SLACK = 0.005  # seconds early a timer may fire (the loop's clock resolution) and still count as due


class LimitLog:
    """One warning per limit per interval, carrying how many times it was hit since the last one."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def hit(self, limit: str, detail: str) -> None:
        now = time.monotonic()
        count = self._unreported.get(limit, 0) + 1
        last = self._last.get(limit)
        if last is not None and now - last < self._interval:
            self._unreported[limit] = count
            return
        self._last[limit] = now
        self._unreported[limit] = 0
        log.warning("connection limit hit: %s (%s); %d time(s) since the last report", limit, detail, count)


OWN_DESCRIPTORS = 512  # what a process needs besides its clients: its Redis pool (256), pub/sub, files
OVER_LIMIT_ANSWERED = 64
"""Connections past ``max_connections`` kept until their head comes, to answer it 503: any more are
closed as they are accepted, so a flood of connections never takes a descriptor the process needs
(it has :data:`OWN_DESCRIPTORS` besides its clients, these included)."""


def connection_bound(limits: ConnectionLimits, open_files: int | None = None) -> int:
    """The connections one process admits: ``max_connections``, or with 0 its open-file limit less
    :data:`OWN_DESCRIPTORS` (at least 64), so clients never take the descriptors Redis needs.  A
    ``max_connections`` the open-file limit cannot hold with that headroom raises the soft limit as far as
    the hard one allows, else is lowered to fit (with a warning)."""
    if open_files is None:
        raised = raised_open_file_limit(limits.max_connections + OWN_DESCRIPTORS)
        open_files = 1 << 20 if raised is None else raised
    if limits.max_connections > 0:
        if limits.max_connections + OWN_DESCRIPTORS <= open_files:
            return limits.max_connections
        fitted = max(64, open_files - OWN_DESCRIPTORS)
        log.warning(
            "max_connections %d does not fit the open-file limit (%d) with %d descriptors of the process' "
            "own: admitting %d; raise `ulimit -n` to admit more",
            limits.max_connections,
            open_files,
            OWN_DESCRIPTORS,
            fitted,
        )
        return fitted
    return max(64, open_files - OWN_DESCRIPTORS)


def guarded_protocol(limits: ConnectionLimits, api_version: str) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``Config(http=...)``): one per process, sharing one log;
    ``api_version`` (the default one) is what its own answers say in ``API-Version``."""
    limits = replace(limits, max_connections=connection_bound(limits))
    return type(
        "BoundGuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "limit_log": LimitLog(limits.log_interval), "api_version": api_version.encode()},
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]
    limit_log: ClassVar[LimitLog]
    api_version: ClassVar[bytes]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limit_concurrency = None  # ours is max_connections, answered in the envelope
        self.timeout_keep_alive = self.limits.keepalive_timeout
        self._awaiting_head = True  # before the current request's headers are complete
        self._receiving_body = False  # after its headers, before its end
        self._head_bytes = 0  # bytes of the current request fed while awaiting its head
        self._header_count = 0
        self._head_size = 0  # bytes of the current request's target and header fields parsed so far
        self._refusal: tuple[AIORouterError, str] | None = None  # a limit a parser callback hit, and its name
        self._lingering = False
        self._dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0  # of the current request's body fed so far (and what followed it in a read)
        self._body_start = 0.0  # loop time its body's rate is measured from (its timer armed; a pause)
        self._body_base = 0  # bytes fed by then
        self._body_progress = 0.0  # loop time of the last read of its body
        self._running: RequestResponseCycle | None = None  # the request whose app runs (pipelining)
        self._deferred: AIORouterError | None = None  # a refusal waiting for the answers owed before it
        self._upgrade_offered = False  # the head just parsed offers an upgrade: parsed again without it

    # --- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.limit_log.hit("max_connections", f"{len(self.connections)} open")
            if len(self.connections) > self.limits.max_connections + OVER_LIMIT_ANSWERED:
                transport.close()  # no descriptor to spare for its answer
                return
            self.app = functools.partial(_too_many_connections, self._own_headers())
        self._start_timer(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        running = self._running
        super().connection_lost(exc)
        # uvicorn marks only the newest request of the connection gone; with pipelined requests that is
        # one still queued, and the one running would write to the closed transport (a RuntimeError, a
        # 500 and a traceback for a client that merely left). Mark the running one gone too: its app
        # then reads a disconnect, and its sends are dropped.
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()

    def _send_held(self) -> None:
        """Write the running response's held head, if any, before the connection's own write or close."""
        running = self._running
        if running is not None and isinstance(running.transport, HeadJoiningTransport):
            running.transport.send_held()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        if cycle.scope["method"] != "HEAD":  # a HEAD response has no body its head could go with
            cycle.transport = cast(asyncio.Transport, HeadJoiningTransport(cycle.transport))
        if cycle.scope["http_version"] != "1.1":  # HTTP/1.0 (or a 0.9 or 2.0 request line): no chunks
            app = functools.partial(_close_delimited, app, cycle)
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > self.limits.max_header_bytes:
                self.transport.close()
            return
        if self._deferred is not None:  # parsing ended at a refusal: nothing more is read before it is sent
            self.flow.pause_reading()
            return
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        while data and self._parsing():
            if self._awaiting_head:
                room = self.limits.max_header_bytes - self._head_bytes
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
                self._feed(piece)
                if self._awaiting_head and self._head_bytes >= self.limits.max_header_bytes:
                    self._refuse_head(RequestHeadersTooLarge(_HEAD_TOO_LARGE), "max_header_bytes")
            else:
                piece, data = data, b""
                self._body_bytes += len(piece)
                self._feed(piece)
        # A deadline only for what is still incomplete after this read (a whole request in one read,
        # the common case, arms none): the head from its first byte, the body from the end of the head.
        # A body's progress is only noted here; its timer, armed once, judges it when it fires.
        if self._receiving_body:
            self._body_progress = self.loop.time()
        if self._timer is None and self._parsing():
            if self._awaiting_head and self._head_bytes:
                self._start_timer(self.limits.header_timeout, self._head_timed_out)
            elif self._receiving_body:
                self._body_start, self._body_base = self._body_progress, self._body_bytes
                self._start_timer(self.limits.body_timeout, self._check_body)

    def _parsing(self) -> bool:
        """Whether the connection's bytes are still parsed (not after a refusal, nor once it closes)."""
        return not self._lingering and self._deferred is None and not self.transport.is_closing()

    def _feed(self, piece: bytes) -> None:
        while True:  # a loop, not a recursion: a read may pipeline hundreds of heads that offer an upgrade
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade as upgrade:
                if not self._upgrade_offered:
                    return  # a CONNECT, served as plain HTTP: it has no body
                piece = self._head_without_upgrade(piece[upgrade.args[0] :])
                continue
            except httptools.HttpParserError as exc:
                refusal, self._refusal = self._refusal, None
                if refusal is not None:
                    self._refuse_head(*refusal)
                else:
                    self._refuse_head(
                        InvalidRequest(_MALFORMED, code="invalid_http_request"), "malformed", exc
                    )
            return

    def _head_without_upgrade(self, rest: bytes) -> bytes:
        """The head just read without its offer to upgrade (its ``Upgrade`` header), followed by what
        came after it (its body and the requests after it), for a fresh parser to read again.  httptools
        reads no body after a head that offers an upgrade, and stops parsing there, as if the connection
        switched protocols; we switch to none, so the offer is ignored (RFC 9110 section 7.8) and the
        request served as plain HTTP/1.1 (Java's HTTP clients offer h2c with every request, bodies
        included)."""
        self._upgrade_offered = False
        version = self.parser.get_http_version().encode()
        head = [b"%s %s HTTP/%s\r\n" % (self.parser.get_method(), self.url, version)]
        head += [b"%s: %s\r\n" % (name, value) for name, value in self.headers if name != b"upgrade"]
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn's own parser
        return b"".join(head) + b"\r\n" + rest

    def send_400_response(self, msg: str) -> None:
        self._refuse(InvalidRequest(_MALFORMED, code="invalid_http_request"))

    # --- parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            error = RequestHeadersTooLarge(
                f"A request may carry at most {self.limits.max_headers} header fields."
            )
            self._refusal = (error, "max_headers")
            raise _Refused
        self._count_head(len(name) + len(value) + 4)  # with its ": " and line end
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        """Count ``size`` more bytes of this request's head (its target and header fields), 431 past
        ``max_header_bytes``: the bound on the bytes fed while awaiting a head (:meth:`data_received`)
        counts from the start of a read, and one read may end a request and begin the next, so a
        pipelined head would otherwise pass with up to twice the bound."""
        self._head_size += size
        if self._head_size > self.limits.max_header_bytes:
            self._refusal = (RequestHeadersTooLarge(_HEAD_TOO_LARGE), "max_header_bytes")
            raise _Refused

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade() and self.parser.get_method() != b"CONNECT":
            self._upgrade_offered = True  # no request yet: its head is parsed again without the offer
            return
        self._stop_timer()
        self._awaiting_head = False
        self._receiving_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._upgrade_offered:
            return  # the end httptools gives a head that offers an upgrade: its body is still to come
        super().on_message_complete()
        self._stop_timer()
        self._receiving_body = False
        self._awaiting_head = True
        self._head_bytes = 0
        self._body_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if any
        deferred = self._deferred
        if deferred is not None and (self._running is None or self._running.response_complete):
            self._deferred = None
            self._answer(deferred)

    # --- limits -----------------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is under way: the next request's head waits for it (rearmed by data)
        if self._head_bytes == 0:
            self._send_held()
            self.transport.close()  # nothing arrived: no request to answer
            return
        self._refuse_head(RequestTimeout(_HEAD_TIMEOUT % self.limits.header_timeout), "header_timeout")

    def _check_body(self) -> None:
        """The body's timer: 408 if it stalled or trickles, else the timer again at its next deadline."""
        self._timer = None
        now = self.loop.time()
        limits = self.limits
        if self.flow.read_paused:  # the app has not read what came: the client is not the one waiting
            self._body_progress = self._body_start = now  # the rate is measured afresh from here
            self._body_base = self._body_bytes
            self._timer = self.loop.call_at(now + limits.body_timeout, self._check_body)
            return
        stalled_at = self._body_progress + limits.body_timeout
        arrived = self._body_bytes - self._body_base
        slow_at = self._body_start + max(limits.body_timeout, arrived / limits.body_min_rate)
        if now + TIMER_SLACK < min(stalled_at, slow_at):
            self._timer = self.loop.call_at(min(stalled_at, slow_at), self._check_body)
        elif stalled_at <= slow_at:
            self._body_timed_out(_BODY_STALLED % limits.body_timeout)
        else:
            self._body_timed_out(_BODY_TOO_SLOW % limits.body_min_rate)

    def _body_timed_out(self, message: str) -> None:
        self.limit_log.hit("body_timeout", _client(self.client))
        self._refuse(RequestTimeout(message))

    def _refuse_head(self, error: AIORouterError, limit: str, detail: object = None) -> None:
        self.limit_log.hit(limit, f"{_client(self.client)}{f': {detail}' if detail else ''}")
        self._refuse(error)

    def _refuse(self, error: AIORouterError) -> None:
        """Answer ``error`` on the connection itself for the request being read, after the answers of the
        requests pipelined before it (answers go in the order of the requests, RFC 9112 section 9.3.2),
        then close it after a bounded linger.  A request refused in its body never reaches its app (a
        running one reads a disconnect); one whose answer has started already gets no other, the
        connection is closed."""
        self._stop_timer()
        if self._lingering or self._deferred is not None or self.transport.is_closing():
            return
        refused = self.cycle if self._receiving_body else None
        if refused is not None:
            if refused.response_started:
                self._send_held()
                self.transport.close()
                return
            refused.disconnected = True  # its app's next receive is a disconnect; its sends go nowhere
            refused.message_event.set()
            self.pipeline = deque(queued for queued in self.pipeline if queued[0] is not refused)
        running = self._running
        if running is not None and not (running.response_complete or running.disconnected):
            self._deferred = error  # sent as the running answer and those queued behind it are complete
            self.flow.pause_reading()
            return
        self._answer(error)

    def _answer(self, error: AIORouterError) -> None:
        self._lingering = True
        self._send_held()
        self.transport.write(_raw_response(error, [*self.server_state.default_headers, *self._own_headers()]))
        self.flow.resume_reading()
        try:
            self.transport.write_eof()
        except (NotImplementedError, AttributeError, RuntimeError):  # TLS cannot half-close
            self.transport.close()
            return
        self._start_timer(LINGER, self.transport.close)

    def _own_headers(self) -> list[tuple[bytes, bytes]]:
        """What every response carries (:mod:`ingress.middleware`), for the answers the guard gives
        itself, before any request reaches the app: a new request id and the default API version."""
        return [(b"x-request-id", request_id_for(None)), (b"api-version", self.api_version)]

    def _start_timer(self, delay: float, callback: Any) -> None:
        self._stop_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is in ``_refusal``."""


_MALFORMED = "The request is not valid HTTP/1.1."
_HEAD_TOO_LARGE = "The request line and headers are too large."
_HEAD_TIMEOUT = "The request line and headers did not arrive within %g seconds."
_BODY_STALLED = "No byte of the request body arrived for %g seconds."
_BODY_TOO_SLOW = "The request body arrived slower than %g bytes per second."


async def _too_many_connections(
    own_headers: list[tuple[bytes, bytes]], scope: Scope, receive: Receive, send: Send
) -> None:
    error = ServiceUnavailable(
        "This server has too many open connections; retry shortly.",
        code="too_many_connections",
        headers={"Retry-After": "1"},  # as every 503 of a completion
    )
    await send_error(send, error, [(b"connection", b"close"), *own_headers])


async def _close_delimited(
    app: ASGI3Application,
    cycle: RequestResponseCycle,
    scope: WWWScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    """``app`` answering a request below HTTP/1.1: a response uvicorn would chunk (one with a body and
    neither ``content-length`` nor ``transfer-encoding``) is written unchunked instead, each body message
    as it comes, and ends when the connection closes after it; any other passes as it is."""
    unchunked = False

    async def send_unchunked(message: ASGISendEvent) -> None:
        nonlocal unchunked
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", ())}
            unchunked = (
                b"content-length" not in names
                and b"transfer-encoding" not in names
                and cycle.scope["method"] != "HEAD"
                and message["status"] not in (204, 304)
            )
            if unchunked:  # uvicorn then adds neither the chunked header nor the framing
                cycle.chunked_encoding = False
                cycle.keep_alive = False  # its end is the close (and uvicorn says "connection: close")
        elif unchunked and message["type"] == "http.response.body":  # written raw, as a declared length
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    await app(scope, receive, send_unchunked)


def _raw_response(error: AIORouterError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = error.envelope_bytes()
    lines = [f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _client(client: tuple[str, int] | None) -> str:
    return f"client {client[0]}:{client[1]}" if client else "client unknown"
