"""The connection guard under real uvicorn on a free port, driven by raw sockets: header size and count
(431), slow heads and bodies (408), idle connections, the per-process connection cap (503), malformed
HTTP (400) -- each in the JSON envelope -- and one log line per limit, not per connection.  And what it
writes beside uvicorn's own protocol: HTTP/1.1 the same bytes, a stream to HTTP/1.0 without chunks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ingress.connection_guard import (
    OVER_LIMIT_ANSWERED,
    OWN_DESCRIPTORS,
    GuardedHttpToolsProtocol,
    LimitLog,
    connection_bound,
    guarded_protocol,
)
from ingress.middleware import request_id_for
from shared.settings import ConnectionLimits, Settings
from tests.ingress.conftest import make_settings
from tests.ingress.test_response_writes import RecordingTransport, _json, _stream
from tests.ingress.test_server import serving
from tests.waiting import eventually

pytestmark = pytest.mark.redis

GET_HEALTH = b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
ADMIN_TOKEN = "t" * 32


@contextlib.asynccontextmanager
async def guarded(redis_url: str, **limits: Any) -> AsyncIterator[tuple[str, int]]:
    """An ingress under uvicorn with these ``[connections]`` limits; yields (host, port)."""
    settings = make_settings(redis_url, connections=limits)
    async with serving(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def exchange(address: tuple[str, int], *writes: bytes) -> tuple[int, dict[str, str], bytes]:
    """Write ``writes``, read until the server closes: (status, headers, body)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
        return parse(await reader.read())
    finally:
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def assert_envelope(response: tuple[int, dict[str, str], bytes], status: int, code: str) -> None:
    got_status, headers, body = response
    assert got_status == status, response
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    # what every response carries, though the guard answers before the app's middleware runs
    assert request_id_for(headers["x-request-id"].encode()) == headers["x-request-id"].encode()
    assert headers["api-version"] == Settings().default_api_version
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["code"]) == (
        "invalid_request" if status < 500 else "service_unavailable",
        code,
    )


async def test_headers_over_the_size_bound_are_431(redis_url: str) -> None:
    """A head over max_header_bytes is answered 431 in the envelope, and the connection closed."""
    async with guarded(redis_url, max_header_bytes=8192) as address:
        big = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        assert_envelope(await exchange(address, big), 431, "request_headers_too_large")
        assert (await exchange(address, GET_HEALTH))[0] == 200  # a normal request still passes


async def test_a_pipelined_head_over_the_size_bound_is_431(redis_url: str) -> None:
    """A head over max_header_bytes that comes in the same read as the request before it is 431 too,
    after that request's answer: its size counts from its own first byte, not from the read's."""
    async with guarded(redis_url, max_header_bytes=8192) as address:
        keep_alive = GET_HEALTH.replace(b"Connection: close", b"Connection: keep-alive")
        big = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        reader, writer = await asyncio.open_connection(*address)
        writer.write(keep_alive + big)
        received = await reader.read()  # until the server closes the connection
        writer.close()
        first, _, refusal = received.partition(b'{"status":"ok"}')
        assert parse(first)[0] == 200
        assert_envelope(parse(refusal), 431, "request_headers_too_large")


async def test_too_many_header_fields_are_431(redis_url: str) -> None:
    """More than max_headers header fields is 431 in the envelope."""
    async with guarded(redis_url, max_headers=20) as address:
        many = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(21)) + b"\r\n"
        assert_envelope(await exchange(address, many), 431, "request_headers_too_large")
        exactly = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20)) + b"\r\n"
        assert (await exchange(address, exactly))[0] == 200


async def test_a_64_mib_header_is_cut_off_early(redis_url: str) -> None:
    """A client sending a 64 MiB header is disconnected after a small part of it (the default 64 KiB
    bound plus what the kernel buffers), never parsed whole."""
    async with guarded(redis_url) as address:
        _, writer = await asyncio.open_connection(*address)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        sent = 0
        chunk = b"a" * (1024 * 1024)
        with contextlib.suppress(ConnectionError):
            while sent < 64 * 1024 * 1024:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        writer.close()
    assert sent < 16 * 1024 * 1024


async def test_a_dribbled_head_is_408_after_the_header_timeout(redis_url: str) -> None:
    """A slowloris head, one byte at a time, is answered 408 and closed after header_timeout, however
    long it keeps dribbling."""
    async with guarded(redis_url, header_timeout=0.5) as address:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        answer = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # 20 s of dribbling, 40 times the timeout
                writer.write(b"X")
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(reader.read(65536), 0.1)
                if answer:
                    break
        response = parse(answer + await reader.read())
        writer.close()
    assert_envelope(response, 408, "request_timeout")


async def test_a_silent_connection_is_closed_without_an_answer(redis_url: str) -> None:
    """A connection that never sends a byte is closed after header_timeout, with nothing written."""
    async with guarded(redis_url, header_timeout=0.3) as address:
        reader, writer = await asyncio.open_connection(*address)
        assert await reader.read() == b""
        writer.close()


def _admin_post_head(length: int) -> bytes:
    return (
        b"POST /admin/accounts HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\n"
        b"Connection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (ADMIN_TOKEN.encode(), length)
    )


async def _send_slowly(address: tuple[str, int], head: bytes, body: bytes, piece: int, pause: float) -> Any:
    """Send ``head``, then ``body`` ``piece`` bytes every ``pause`` seconds (stopping once the server
    answers); the response and the seconds it took."""
    reader, writer = await asyncio.open_connection(*address)
    started = asyncio.get_running_loop().time()
    answer = asyncio.create_task(reader.read())  # complete once the server answered and half-closed
    try:
        writer.write(head)
        for start in range(0, len(body), piece):
            await asyncio.sleep(pause)
            if answer.done():
                break
            writer.write(body[start : start + piece])
            await writer.drain()
        response = parse(await answer)
        return response, asyncio.get_running_loop().time() - started
    finally:
        answer.cancel()
        writer.close()


async def test_a_stalled_body_is_408_after_the_body_timeout(redis_url: str) -> None:
    """A body that stops arriving, on an endpoint waiting for it, is a 408 envelope after body_timeout."""
    settings = make_settings(redis_url, connections={"body_timeout": 0.3}, admin_token=ADMIN_TOKEN)
    async with serving(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        response = await exchange((host, int(port)), _admin_post_head(100) + b"{")
    assert_envelope(response, 408, "request_timeout")
    assert "for 0.3 seconds" in orjson.loads(response[2])["error"]["message"]


async def test_a_slow_body_that_keeps_arriving_is_served_past_the_body_timeout(redis_url: str) -> None:
    """A body sent in small pieces for several times body_timeout, never pausing that long and above
    body_min_rate on average, is read to its end and answered (not cut at body_timeout)."""
    body = orjson.dumps({"account_id": "slow-upload", "padding": "x" * 300})
    limits = {"body_timeout": 0.3, "body_min_rate": 50}
    settings = make_settings(redis_url, connections=limits, admin_token=ADMIN_TOKEN)
    async with serving(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        (status, _, _), took = await _send_slowly(
            (host, int(port)), _admin_post_head(len(body)), body, piece=len(body) // 10 + 1, pause=0.1
        )
    assert took > 0.9 and status == 400, status  # read to its end: the padding is an unknown field


async def test_a_trickling_body_is_408_once_below_the_minimum_rate(redis_url: str) -> None:
    """A body that never pauses for body_timeout but arrives slower than body_min_rate (a slowloris)
    is a 408 once body_timeout has passed, long before it could end."""
    limits = {"body_timeout": 0.3, "body_min_rate": 1000}
    settings = make_settings(redis_url, connections=limits, admin_token=ADMIN_TOKEN)
    async with serving(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        response, took = await _send_slowly(
            (host, int(port)), _admin_post_head(1000), b"{" + b" " * 999, piece=5, pause=0.05
        )
    assert_envelope(response, 408, "request_timeout")
    assert "slower than 1000 bytes per second" in orjson.loads(response[2])["error"]["message"]
    assert took < 2


async def test_an_idle_keep_alive_connection_is_closed(redis_url: str) -> None:
    """After an answer, a kept-alive connection with nothing more is closed after keepalive_timeout."""
    async with guarded(redis_url, keepalive_timeout=1) as address:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(GET_HEALTH.replace(b"Connection: close\r\n", b""))
        await writer.drain()
        raw = await reader.read()  # returns only once the server closes the idle connection
        writer.close()
    assert raw.startswith(b"HTTP/1.1 200")


async def test_requests_beyond_max_connections_are_503(redis_url: str) -> None:
    """With max_connections open, a request on one more connection is 503 too_many_connections."""
    async with guarded(redis_url, max_connections=2) as address:
        held = [await asyncio.open_connection(*address) for _ in range(2)]
        await asyncio.sleep(0)  # nothing to wait for: the held connections only need to be accepted
        response = await exchange(address, GET_HEALTH)
        for _, writer in held:
            writer.close()
    assert_envelope(response, 503, "too_many_connections")
    assert response[1]["retry-after"] == "1"


async def test_a_flood_of_connections_is_bounded(redis_url: str) -> None:
    """Past max_connections a connection is kept to hear its 503 only up to OVER_LIMIT_ANSWERED more; any
    further one is closed as it is accepted (it never holds a descriptor for long), and the process
    still answers once the flood is gone."""
    async with guarded(redis_url, max_connections=2) as address:
        held = [await asyncio.open_connection(*address) for _ in range(2 + OVER_LIMIT_ANSWERED)]
        reader, writer = await asyncio.open_connection(*address)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, nothing answered
        writer.close()
        _, answered = held[-1]
        answered.write(GET_HEALTH)
        assert_envelope(parse(await asyncio.wait_for(held[-1][0].read(), 5)), 503, "too_many_connections")
        for _, held_writer in held:
            held_writer.close()
        await eventually(lambda: answers(address))  # the server has seen the closed ones go


async def answers(address: tuple[str, int]) -> bool:
    return (await exchange(address, GET_HEALTH))[0] == 200


async def test_malformed_http_is_400_in_the_envelope(redis_url: str) -> None:
    """What the parser refuses is 400 invalid_http_request in the envelope, not uvicorn's plain text."""
    async with guarded(redis_url) as address:
        assert_envelope(await exchange(address, b"NOT HTTP AT ALL\r\n\r\n"), 400, "invalid_http_request")
        bad_length = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"
        assert_envelope(await exchange(address, bad_length), 400, "invalid_http_request")


async def test_a_limit_hit_by_many_connections_is_logged_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty malformed connections log one line for the limit, and nothing per connection."""
    caplog.set_level(logging.INFO)
    async with guarded(redis_url) as address:
        for _ in range(20):
            assert (await exchange(address, b"NOT HTTP\r\n\r\n"))[0] == 400
    guard = [r for r in caplog.records if r.name == "ingress.connection_guard"]
    assert len(guard) == 1 and "malformed" in guard[0].getMessage()
    assert not [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]


def test_limit_log_reports_the_count_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    """Within the interval hits are counted silently; the next report carries their number."""
    caplog.set_level(logging.WARNING)
    quiet = LimitLog(interval=3600)
    for _ in range(100):
        quiet.hit("header_timeout", "x")
    assert len(caplog.records) == 1
    eager = LimitLog(interval=0)
    eager.hit("body_timeout", "x")
    eager.hit("body_timeout", "x")
    assert len(caplog.records) == 3 and "1 time(s)" in caplog.records[-1].getMessage()


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    return None


async def test_uvicorn_private_api_used_by_the_guard_is_unchanged() -> None:
    """The uvicorn internals the guard relies on still exist with the shapes it expects (pinned version)."""
    protocol = HttpToolsProtocol(Config(app=_no_app, http="httptools"), ServerState(), {})
    for attribute in (
        "transport", "flow", "cycle", "parser", "app", "connections", "client", "loop", "server_state",
        "timeout_keep_alive", "timeout_keep_alive_task", "limit_concurrency", "pipeline",
    ):  # fmt: skip
        assert hasattr(protocol, attribute), attribute
    for method in (
        "on_message_begin", "on_url", "on_header", "on_headers_complete", "on_message_complete",
        "on_response_complete",
    ):  # fmt: skip
        assert next(iter(inspect.signature(getattr(HttpToolsProtocol, method)).parameters)) == "self"
    assert list(inspect.signature(HttpToolsProtocol.send_400_response).parameters) == ["self", "msg"]
    assert list(inspect.signature(HttpToolsProtocol._start_asgi_task).parameters) == ["self", "cycle", "app"]
    assert "self._start_asgi_task(" in inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "self._start_asgi_task(" in inspect.getsource(HttpToolsProtocol.on_response_complete)
    assert "self.url += url" in inspect.getsource(HttpToolsProtocol.on_url)
    assert "self.headers.append((name, value))" in inspect.getsource(HttpToolsProtocol.on_header)
    assert "self.parser = httptools.HttpRequestParser(self)" in inspect.getsource(HttpToolsProtocol.__init__)
    queues = inspect.getsource(HttpToolsProtocol.on_headers_complete)
    assert "on_response=self.on_response_complete" in queues
    assert "self.pipeline.appendleft((self.cycle, app))" in queues
    assert list(inspect.signature(HttpToolsProtocol.__init__).parameters) == [
        "self", "config", "server_state", "app_state", "_loop",
    ]  # fmt: skip
    cycle_fields = inspect.signature(RequestResponseCycle.__init__).parameters
    assert "message_event" in cycle_fields
    source = inspect.getsource(RequestResponseCycle)
    for used in ("self.disconnected", "self.response_started", "self.response_complete", "self.transport"):
        assert used in source, used
    assert "self.limit_concurrency" in inspect.getsource(HttpToolsProtocol.on_headers_complete)
    # ingress.response_writes: a response's writes go through the cycle's own transport attribute
    assert "self.transport.write(" in inspect.getsource(RequestResponseCycle.send)
    assert "default_headers" in inspect.getsource(ServerState)
    assert issubclass(GuardedHttpToolsProtocol, HttpToolsProtocol)


async def wire(protocol_class: type[HttpToolsProtocol], request: bytes) -> tuple[bytes, bool]:
    """``request`` served by ``protocol_class`` (a bare app: ``/json``, and ``/stream`` of three events)
    on a recording transport: (every byte written, whether the connection was closed after it)."""
    config = Config(
        app=Starlette(routes=[Route("/json", _json), Route("/stream", _stream)]), http="httptools"
    )
    config.load()
    protocol = protocol_class(config, ServerState(), {})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await eventually(lambda: protocol.cycle is not None and protocol.cycle.response_complete)
    closed = transport.closed
    protocol.connection_lost(None)
    return b"".join(transport.writes), closed


GUARDED = guarded_protocol(ConnectionLimits(), "2026-01-01")


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /stream HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        b"GET /json HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /json HTTP/1.0\r\nHost: test\r\n\r\n",
        b"HEAD /stream HTTP/1.0\r\nHost: test\r\n\r\n",
    ],
)
async def test_responses_that_carry_their_length_or_go_to_http_1_1_are_uvicorns_bytes(
    request_head: bytes,
) -> None:
    """Every HTTP/1.1 response (chunked streams included), and an HTTP/1.0 response with a length or no
    body, is byte for byte what uvicorn's own protocol writes, and closes the connection when it does."""
    assert await wire(GUARDED, request_head) == await wire(HttpToolsProtocol, request_head)


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"])
async def test_a_stream_to_http_1_0_is_unchunked_and_ends_with_the_close(connection: bytes) -> None:
    """A stream to an HTTP/1.0 request (asking for keep-alive or not) has uvicorn's head without
    ``transfer-encoding: chunked``, its events without chunk framing, and the connection closes after it."""
    request_head = b"GET /stream HTTP/1.0\r\nHost: test\r\n" + connection + b"\r\n"
    chunked, _ = await wire(HttpToolsProtocol, request_head)
    uvicorn_head, _, _ = chunked.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked\r\n" in uvicorn_head + b"\r\n"  # what uvicorn alone sends
    written, closed = await wire(GUARDED, request_head)
    head, _, body = written.partition(b"\r\n\r\n")
    assert head == uvicorn_head.replace(b"\r\ntransfer-encoding: chunked", b"")
    assert b"\r\nconnection: close" in head
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n" and closed


def test_uvicorn_private_api_the_close_delimited_response_sets_is_unchanged() -> None:
    """The guard sends a stream to HTTP/1.0 unchunked by setting a response cycle's ``chunked_encoding``,
    ``keep_alive`` and ``expected_content_length`` before uvicorn's ``send`` reads them (pinned version):
    they still decide the chunked header, the framing, the length check and the close as it expects."""
    assert "self.scope, self.receive, self.send" in inspect.getsource(RequestResponseCycle.run_asgi)
    assert 'self.scope["http_version"] = http_version' in inspect.getsource(
        HttpToolsProtocol.on_headers_complete
    )
    send = inspect.getsource(RequestResponseCycle.send)
    assert 'name == b"content-length" and self.chunked_encoding is None' in send
    assert "if not self.keep_alive and not has_connection_close:" in send  # says "connection: close"
    assert "if self.chunked_encoding is None and " in send  # only then the chunked header
    assert "elif self.chunked_encoding:" in send  # only then the framing
    assert "if num_bytes > self.expected_content_length:" in send
    assert "self.expected_content_length -= num_bytes" in send
    assert "if self.expected_content_length != 0:" in send
    assert "if not self.keep_alive:\n                    self.transport.close()" in send


def test_the_default_connection_bound_follows_the_open_file_limit() -> None:
    """max_connections = 0 admits the process' open-file limit less what its own connections need;
    a set value is taken as it is when that limit holds it with that headroom, else lowered to fit."""
    assert connection_bound(ConnectionLimits(), open_files=20_000) == 20_000 - OWN_DESCRIPTORS
    assert connection_bound(ConnectionLimits(), open_files=1024) == 1024 - OWN_DESCRIPTORS
    assert connection_bound(ConnectionLimits(), open_files=100) == 64
    assert connection_bound(ConnectionLimits(max_connections=50), open_files=20_000) == 50
    assert connection_bound(ConnectionLimits(max_connections=5000), open_files=1100) == 1100 - OWN_DESCRIPTORS


async def _no_content(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def test_many_pipelined_upgrade_offers_in_one_read_are_parsed_without_recursion() -> None:
    """Hundreds of pipelined heads that each offer an upgrade, in one read under ``max_header_bytes``, are
    each parsed again without their offer, one after the other: no RecursionError escapes the protocol,
    and every request is queued."""
    offer = b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"
    protocol = guarded_protocol(ConnectionLimits(max_connections=1000), "2025-01-01")(
        Config(app=_no_content, lifespan="off"), ServerState(), {}, asyncio.get_running_loop()
    )
    protocol.connection_made(RecordingTransport())
    count = 60_000 // len(offer)
    protocol.data_received(offer * count)  # one read of them all
    assert len(protocol.pipeline) + (protocol.cycle is not None) == count
