"""The upstream HTTP client over real sockets: the simulated upstream, and a scripted raw server for the
answers it never gives."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from bench.sim_stats import Counter
from bench.upstream import Upstream
from shared.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from shared.settings import Timeouts
from tests.conftest import IN_CI
from tests.waiting import eventually
from tests.workers.raw_server import CLOSE, RawServer, Step, answer, chunked, start_raw_server
from workers.providers import upstream_http
from workers.providers.http_clients import UpstreamHttp
from workers.providers.sse import MAX_EVENT_BYTES
from workers.providers.upstream_call import Deadlines, status_error, upstream_errors
from workers.providers.upstream_http import (
    ConnectError,
    ConnectionCut,
    ConnectTimeout,
    ResponseTooLarge,
    UpstreamClient,
)

HEADERS = {"content-type": "application/json", "accept": "text/event-stream", "authorization": "Bearer sk-1"}


@pytest.fixture
def client_for(clients: list[UpstreamHttp]) -> Any:
    def make(base_url: str, max_connections: int = 8, connect_timeout: float = 2.0, **options: Any) -> Any:
        client = UpstreamClient(
            base_url, HEADERS, max_connections=max_connections, connect_timeout=connect_timeout, **options
        )
        clients.append(client)
        return client

    return make


@pytest.fixture
def raw(servers: list[RawServer]) -> Any:
    async def start(script: Any, tls: ssl.SSLContext | None = None) -> RawServer:
        server = await start_raw_server(script, tls)
        servers.append(server)
        return server

    return start


def always(*steps: Step) -> Any:
    """A script giving every request of every connection the same steps."""
    return lambda connection, request: steps


def sim_body(model: str, stream: bool = True) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})


async def events_of(client: UpstreamClient, body: bytes = b"{}") -> list[bytes]:
    async with client.post("chat/completions", body) as response:
        assert response.status == 200
        return [data async for data in response.sse_data()]


async def body_of(client: UpstreamClient, body: bytes = b"{}") -> bytes:
    async with client.post("chat/completions", body) as response:
        return await response.read()


def deadlines() -> Deadlines:
    return Deadlines(Timeouts(), asyncio.get_running_loop())


async def test_sequential_calls_reuse_one_connection(upstream: Upstream, client_for: Any) -> None:
    """Twenty calls in a row, streamed and not, go over one kept-alive connection."""
    client = client_for(upstream.base_url)
    for i in range(20):
        if i % 2:
            assert orjson.loads(await body_of(client, sim_body("sim?tokens=2", stream=False)))["choices"]
        else:
            assert (await events_of(client, sim_body("sim?tokens=2")))[-1] == b"[DONE]"
    assert upstream.stats.total(Counter.CONNECTIONS) == 1
    assert upstream.stats.total(Counter.REQUESTS) == 20


async def test_chunked_event_stream_arrives_event_by_event(upstream: Upstream, client_for: Any) -> None:
    """A chunked SSE body yields the data of each event in order, ending with [DONE]."""
    events = await events_of(client_for(upstream.base_url), sim_body("sim?tokens=3"))
    chunks = [orjson.loads(data) for data in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "w0 w1 w2 "
    assert events[-1] == b"[DONE]"


async def test_content_length_body_is_read_whole(upstream: Upstream, client_for: Any) -> None:
    """A content-length body is read completely."""
    body = orjson.loads(await body_of(client_for(upstream.base_url), sim_body("sim?tokens=3", stream=False)))
    assert body["choices"][0]["message"]["content"] == "w0 w1 w2 "


async def test_events_split_anywhere_are_reassembled(raw: Any, client_for: Any) -> None:
    """Events cut across chunks and packets at any byte, with CRLF line ends, come out whole."""
    whole = chunked(b'data: {"a"', b":1}\r\n\r\nda", b"ta: [DO", b"NE]\r", b"\n\r\n")
    steps: list[Step] = []
    for start in range(0, len(whole), 7):
        steps += [whole[start : start + 7], 0.002]
    server = await raw(always(*steps))
    assert await events_of(client_for(server.base_url)) == [b'{"a":1}', b"[DONE]"]


async def test_body_delimited_by_close_is_read_whole_and_not_reused(raw: Any, client_for: Any) -> None:
    """A body with neither length nor chunking ends with the connection, which is then not reused."""
    server = await raw(always(b"HTTP/1.1 200 OK\r\n\r\nhel", 0.01, b"lo", CLOSE))
    client = client_for(server.base_url)
    assert await body_of(client) == b"hello"
    assert await body_of(client) == b"hello"
    assert server.connections == 2


async def test_request_is_one_write_with_the_adapters_headers(
    raw: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head and body leave in one write: path under the base URL, host, the given headers, content-length."""
    writes: list[bytes] = []
    made = upstream_http._Connection.connection_made
    monkeypatch.setattr(
        upstream_http._Connection,
        "connection_made",
        lambda connection, transport: made(connection, cast(asyncio.Transport, _WriteSpy(transport, writes))),
    )
    server = await raw(always(answer(200, b"ok")))
    assert await body_of(client_for(server.base_url), b'{"model":"m"}') == b"ok"
    assert len(writes) == 1 and writes[0].endswith(b'\r\n\r\n{"model":"m"}')
    request = server.requests[0]
    assert request.request_line == "POST /v1/chat/completions HTTP/1.1"
    assert request.headers["host"] == server.base_url.split("/")[2]
    assert {k: request.headers[k] for k in HEADERS} == HEADERS
    assert request.headers["content-length"] == "13" and request.body == b'{"model":"m"}'


class _WriteSpy:
    """A transport that records each write; everything else is the real transport's."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_connection_close_answer_is_not_reused(raw: Any, client_for: Any) -> None:
    """An answer saying ``connection: close`` is read, and the next call opens a new connection."""
    server = await raw(always(answer(200, b"ok", "connection: close\r\n")))
    client = client_for(server.base_url)
    assert [await body_of(client), await body_of(client)] == [b"ok", b"ok"]
    assert server.connections == 2


async def test_error_status_with_retry_after(raw: Any, client_for: Any) -> None:
    """A 429's headers are looked up case-insensitively and its body read; the connection is kept."""
    error = orjson.dumps({"error": {"message": "slow down"}})
    server = await raw(always(answer(429, error, "Retry-After: 3\r\n")))
    client = client_for(server.base_url)
    for _ in range(2):
        async with client.post("chat/completions", b"{}") as response:
            assert response.status == 429
            assert response.headers["retry-after"] == response.headers.get("RETRY-AFTER") == "3"
            converted = status_error("p", response.status, response.headers, await response.read())
    assert isinstance(converted, UpstreamUnavailable) and converted.headers == {"Retry-After": "3"}
    assert server.connections == 1


async def test_informational_answer_is_skipped(raw: Any, client_for: Any) -> None:
    """A 1xx answer (103 Early Hints) before the real one is passed over."""
    server = await raw(always(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + answer(200, b"ok")))
    async with client_for(server.base_url).post("chat/completions", b"{}") as response:
        assert response.status == 200 and "link" not in response.headers
        assert await response.read() == b"ok"


async def test_large_body_is_read_past_the_buffer_limit(raw: Any, client_for: Any) -> None:
    """A body far larger than what is buffered for a slow reader arrives whole (reading pauses, resumes)."""
    big = bytes(range(256)) * 8192  # 2 MiB
    server = await raw(always(answer(200, big)))
    async with client_for(server.base_url).post("chat/completions", b"{}") as response:
        await asyncio.sleep(0.2)  # a slow reader: the socket fills what the client buffers meanwhile
        assert await response.read() == big


async def test_garbage_answer_is_a_cut_before_content(raw: Any, client_for: Any) -> None:
    """An answer that is not HTTP is a cut connection, so UpstreamUnavailable before any content."""
    server = await raw(always(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 1.0))
    client = client_for(server.base_url)
    with pytest.raises(ConnectionCut):
        await body_of(client)
    with pytest.raises(UpstreamUnavailable), upstream_errors("p", deadlines()):
        await body_of(client)


async def test_a_switching_protocols_answer_is_a_cut_before_content(
    raw: Any, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A 101 (the upstream wants another protocol) is a cut connection like any answer that is not an
    HTTP/1.1 response, not an exception escaping the connection's protocol (asyncio's "Fatal error on
    transport")."""
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    server = await raw(always(upgrade, 1.0))
    with pytest.raises(UpstreamUnavailable), upstream_errors("p", deadlines()):
        await body_of(client_for(server.base_url))
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]


async def test_connection_closed_mid_body_is_a_cut(raw: Any, client_for: Any) -> None:
    """A body cut short (content-length, or a chunked stream after one event) raises ConnectionCut."""
    short = await raw(always(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", CLOSE))
    with pytest.raises(ConnectionCut):
        await body_of(client_for(short.base_url))
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    cut = await raw(always(head + b"d\r\ndata: first\n\n\r\n", CLOSE))
    seen: list[bytes] = []
    with pytest.raises(ConnectionCut):
        async with client_for(cut.base_url).post("chat/completions", b"{}") as response:
            async for data in response.sse_data():
                seen.append(data)
    assert seen == [b"first"]


async def test_cancelled_streaming_call_closes_its_connection(upstream: Upstream, client_for: Any) -> None:
    """Cancelling the task reading a stream closes its connection at once; the next call opens another."""
    client = client_for(upstream.base_url)
    first = asyncio.Event()

    async def read_forever() -> None:
        async with client.post("chat/completions", sim_body("sim?tokens=1000&itl_ms=20")) as response:
            async for _ in response.sse_data():
                first.set()

    task = asyncio.create_task(read_forever())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: upstream.stats.total(Counter.CLIENT_DISCONNECTS) >= 1)
    assert (await events_of(client, sim_body("sim?tokens=1")))[-1] == b"[DONE]"
    assert upstream.stats.total(Counter.CONNECTIONS) == 2


async def test_connection_closed_while_idle_is_replaced(raw: Any, client_for: Any) -> None:
    """An idle connection the server closed is dropped from the pool; the next call just opens another."""
    server = await raw(always(answer(200, b"ok"), 0.01, CLOSE))
    client = client_for(server.base_url)
    assert await body_of(client) == b"ok"
    await eventually(lambda: server.closed == 1)  # the server closed the idle connection
    assert await body_of(client) == b"ok"
    assert server.connections == 2


async def test_reused_connection_dead_after_the_request_is_not_resent(raw: Any, client_for: Any) -> None:
    """A reused connection that closes after our request was written, with no answer, fails the call:
    the upstream may have started (and billed) the completion, so the client never sends it again."""

    def script(connection: int, request: int) -> Sequence[Step]:
        return [CLOSE] if (connection, request) == (0, 1) else [answer(200, b"ok")]

    server = await raw(script)
    client = client_for(server.base_url)
    assert await body_of(client) == b"ok"
    with pytest.raises(ConnectionCut):
        await body_of(client)
    assert server.connections == 1 and len(server.requests) == 2


async def test_close_not_yet_seen_by_the_loop_is_found_before_writing(raw: Any, client_for: Any) -> None:
    """An idle connection the server closed while the event loop was busy (its FIN unread) is dropped
    before the request is written: the call goes out once, on a fresh connection."""
    server = await raw(always(answer(200, b"ok"), CLOSE))
    client = client_for(server.base_url)
    assert await body_of(client) == b"ok"
    deadline = time.monotonic() + 5
    while server.closed < 1:  # the server has closed its end; the loop has not run since
        assert time.monotonic() < deadline
        time.sleep(0.01)  # noqa: ASYNC251 - blocking on purpose: the loop must not see the close
    assert await body_of(client) == b"ok"
    assert server.connections == 2 and len(server.requests) == 2


async def test_request_asks_for_an_identity_body(raw: Any, client_for: Any) -> None:
    """Every request says accept-encoding: identity, so an upstream has no reason to compress."""
    server = await raw(always(answer(200, b"ok")))
    assert await body_of(client_for(server.base_url)) == b"ok"
    assert server.requests[0].headers["accept-encoding"] == "identity"


async def test_compressed_body_is_a_clear_upstream_error(raw: Any, client_for: Any) -> None:
    """A gzip body sent anyway is EncodedBody, which the boundary turns into a named UpstreamError."""
    server = await raw(always(answer(200, gzip.compress(b'{"a": 1}'), "content-encoding: gzip\r\n")))
    client = client_for(server.base_url)
    with pytest.raises(UpstreamError, match="'gzip'-encoded body"):
        with upstream_errors("p", deadlines()):
            await body_of(client)


async def test_fresh_connection_dead_before_any_byte_is_not_retried(raw: Any, client_for: Any) -> None:
    """A new connection closed without an answer fails the call: the request is not sent twice."""
    server = await raw(always(CLOSE))
    with pytest.raises(ConnectionCut):
        await body_of(client_for(server.base_url))
    assert server.connections == 1 and len(server.requests) == 1


async def test_reused_connection_dead_after_some_bytes_is_not_retried(raw: Any, client_for: Any) -> None:
    """A reused connection closed after part of the answer fails the call: the upstream had answered."""

    def script(connection: int, request: int) -> Sequence[Step]:
        return [answer(200, b"ok")] if request == 0 else [b"HTTP/1.1 200 OK\r\n", CLOSE]

    server = await raw(script)
    client = client_for(server.base_url)
    assert await body_of(client) == b"ok"
    with pytest.raises(ConnectionCut):
        await body_of(client)
    assert server.connections == 1 and len(server.requests) == 2


async def test_idle_connection_past_its_expiry_is_not_reused(
    upstream: Upstream, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection idle for longer than the keep-alive expiry is closed instead of reused."""
    monkeypatch.setattr(upstream_http, "KEEPALIVE_EXPIRY", 0.05)
    client = client_for(upstream.base_url)
    await events_of(client, sim_body("sim?tokens=1"))
    await asyncio.sleep(0.1)  # past the keep-alive expiry: the passing time is what is tested
    await events_of(client, sim_body("sim?tokens=1"))
    assert upstream.stats.total(Counter.CONNECTIONS) == 2


async def test_connect_refused_is_unavailable(client_for: Any) -> None:
    """Nothing listening on the port: ConnectError, which is UpstreamUnavailable at the boundary."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = client_for(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ConnectError):
        await body_of(client)
    with pytest.raises(UpstreamUnavailable) as caught, upstream_errors("p", deadlines()):
        await body_of(client)
    assert not isinstance(caught.value, UpstreamTimeout)


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """The port of a listening socket whose accept queue is full: new connects get no answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
    yield port
    for sock in [*fillers, server]:
        sock.close()


async def test_connect_timeout_is_named(full_backlog: int, client_for: Any) -> None:
    """A connect that gets no answer within the connect timeout is UpstreamTimeout naming 'connect'."""
    client = client_for(f"http://127.0.0.1:{full_backlog}/v1", connect_timeout=0.2)
    with pytest.raises(ConnectTimeout):
        await body_of(client)
    with pytest.raises(UpstreamTimeout, match="connect timeout"), upstream_errors("p", deadlines()):
        await body_of(client)


async def test_pool_never_opens_more_than_max_connections(upstream: Upstream, client_for: Any) -> None:
    """Calls beyond max_connections wait for a connection to come back instead of opening more."""
    client = client_for(upstream.base_url, max_connections=2)
    results = await asyncio.gather(*(events_of(client, sim_body("sim?tokens=3&itl_ms=5")) for _ in range(6)))
    assert all(events[-1] == b"[DONE]" for events in results)
    assert upstream.stats.total(Counter.CONNECTIONS) == 2


async def test_no_connection_free_within_connect_timeout_is_unavailable(
    upstream: Upstream, client_for: Any
) -> None:
    """With every connection busy past the connect timeout, a call fails as unreachable (ConnectError)."""
    client = client_for(upstream.base_url, max_connections=1, connect_timeout=0.2)
    hung = asyncio.create_task(body_of(client, sim_body("sim?hang")))
    await eventually(lambda: upstream.stats.total(Counter.REQUESTS) == 1)  # the one connection is busy
    with pytest.raises(ConnectError, match="free"):
        await body_of(client, sim_body("sim?tokens=1"))
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made by the openssl command)."""
    if shutil.which("openssl") is None:
        message = "the openssl command is needed to make a test certificate"
        if IN_CI:
            pytest.fail(message + " (CI=true: the TLS tests must run)")
        pytest.skip(message)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*command.split(), *names, *files], check=True, capture_output=True)
    return cert, key


async def test_https_checks_the_certificate(raw: Any, client_for: Any, tls_files: tuple[Path, Path]) -> None:
    """An https base URL talks TLS: a trusted certificate answers, an untrusted one is a ConnectError."""
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = await raw(always(answer(200, b"secret")), server_context)
    trusting = ssl.create_default_context(cafile=str(cert))
    client = client_for(server.base_url, ssl_context=trusting)
    assert [await body_of(client), await body_of(client)] == [b"secret", b"secret"]
    assert server.connections == 1
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await body_of(client_for(server.base_url))


async def test_body_over_the_bound_is_refused(
    raw: Any, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole body longer than MAX_BODY_BYTES raises ResponseTooLarge (a cut) instead of piling up."""
    monkeypatch.setattr(upstream_http, "MAX_BODY_BYTES", 64 * 1024)
    server = await raw(always(answer(200, b"x" * (1024 * 1024))))
    with pytest.raises(ResponseTooLarge):
        await body_of(client_for(server.base_url))


async def test_response_head_over_the_bound_is_refused(raw: Any, client_for: Any) -> None:
    """A response head longer than MAX_HEAD_BYTES (one 1 MiB header) is refused: UpstreamUnavailable."""
    head = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (1024 * 1024) + b"\r\ncontent-length: 2\r\n\r\nok"
    client = client_for((await raw(always(head))).base_url)
    with pytest.raises(ResponseTooLarge):
        await body_of(client)
    with pytest.raises(UpstreamUnavailable), upstream_errors("p", deadlines()):
        await body_of(client)


async def test_event_line_over_the_bound_is_refused(raw: Any, client_for: Any) -> None:
    """A server-sent event line longer than sse.MAX_EVENT_BYTES ends the stream with ResponseTooLarge."""
    line = b"data: " + b"a" * (MAX_EVENT_BYTES + 1024)
    server = await raw(always(chunked(b"data: first\n\n", line[: len(line) // 2], line[len(line) // 2 :])))
    seen: list[bytes] = []
    with pytest.raises(ResponseTooLarge):
        async with client_for(server.base_url).post("chat/completions", b"{}") as response:
            async for data in response.sse_data():
                seen.append(data)
    assert seen == [b"first"]
