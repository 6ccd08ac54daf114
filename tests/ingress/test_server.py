"""The ingress under real uvicorn (httptools) on a free port: true streaming, the OpenAI SDK, client
disconnects seen through the socket, and ``ingress.server.run`` in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import orjson
import pytest
import redis
import redis.asyncio as aredis
import uvicorn

from ingress.server import uvicorn_config
from shared import keys
from shared.errors import RateLimitExceeded
from shared.settings import Settings
from tests.ingress.conftest import MESSAGES, MODEL, create_funded_key, make_settings
from tests.ingress.fake_worker import FakeWorker
from tests.waiting import eventually, eventually_sync

COMPLETIONS = "/v1/chat/completions"
STREAM_BODY = {"model": MODEL, "messages": MESSAGES, "stream": True}


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """Serve the app with uvicorn in this event loop on a free port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(settings, host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def live(
    redis_url: str, aredis_client: aredis.Redis, clean_redis: redis.Redis
) -> AsyncIterator[tuple[str, str, FakeWorker]]:
    """(base URL, API key, fake worker) for an ingress served by uvicorn."""
    async with serving(make_settings(redis_url)) as url:
        key, _ = await create_funded_key(aredis_client, make_settings(redis_url))
        worker = FakeWorker(aredis_client, clean_redis)
        await worker.heartbeat()
        yield url, key, worker


async def test_stream_is_written_as_it_arrives(live: tuple[str, str, FakeWorker]) -> None:
    """Under uvicorn, the client reads the first chunk before the worker sends the rest: nothing buffers."""
    url, key, worker = live
    first_seen = asyncio.Event()

    async def work() -> None:
        taken = await worker.take()
        await worker.start(taken)
        await worker.chunk(taken, "first")
        await asyncio.wait_for(first_seen.wait(), 10)
        await worker.chunk(taken, "second")
        await worker.done(taken)

    worker_task = asyncio.create_task(work())
    lines: list[str] = []
    headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "live-1"}
    async with httpx.AsyncClient(base_url=url) as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=STREAM_BODY, headers=headers
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-request-id"] == "live-1"
            assert response.headers["x-provider"] == "simulated"
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
                if '"first"' in line:
                    first_seen.set()
    await worker_task
    assert ['"first"' in lines[0], '"second"' in lines[1], lines[-1]] == [True, True, "data: [DONE]"]


async def _stream_hello(worker: FakeWorker) -> None:
    """Take the next job and stream "Hel", "lo" as its answer."""
    taken = await worker.take()
    await worker.start(taken)
    for word in ("Hel", "lo"):
        await worker.chunk(taken, word)
    await worker.done(taken)


async def test_openai_sdk_streams_and_reads_json(live: tuple[str, str, FakeWorker]) -> None:
    """The official OpenAI SDK streams chunks, reads a JSON completion and sees our errors as API errors."""
    url, key, worker = live

    async def work() -> None:
        await _stream_hello(worker)
        taken = await worker.take()
        await worker.start(taken)
        await worker.done(taken, "Hello!")
        taken = await worker.take()
        await worker.error(taken, RateLimitExceeded(headers={"Retry-After": "1"}))

    worker_task = asyncio.create_task(work())
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        assert isinstance(stream, openai.AsyncStream)
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
        assert text == "Hello"
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello!"
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        assert caught.value.code == "rate_limit_exceeded"
        models = await client.models.list()
        assert [m.id for m in models.data] == ["aiorouter/echo", "aiorouter/lorem"]
    await worker_task


async def test_socket_disconnect_cancels_the_stream_job(
    live: tuple[str, str, FakeWorker], aredis_client: aredis.Redis
) -> None:
    """Closing the connection mid-stream makes the ingress cancel the job within a few seconds."""
    url, key, worker = live
    started: asyncio.Queue[str] = asyncio.Queue()

    async def work() -> None:
        taken = await worker.take()
        await worker.start(taken)
        await worker.chunk(taken, "only")
        await started.put(taken.id)

    worker_task = asyncio.create_task(work())
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url) as client:
        async with client.stream(
            "POST", "/v1/chat/completions", json=STREAM_BODY, headers=headers
        ) as response:
            async for line in response.aiter_lines():
                if '"only"' in line:
                    break
    job_id = await asyncio.wait_for(started.get(), 5)
    await worker_task
    await eventually(lambda: aredis_client.exists(keys.cancelled_marker(job_id)))


async def http_1_0_chat(url: str, key: str, body: dict[str, object]) -> tuple[list[str], bytes]:
    """POST ``body`` to the completions endpoint as an HTTP/1.0 client on a raw socket, reading until the
    server closes: (the head's lines, the body as it came over the wire)."""
    host, port = url.removeprefix("http://").split(":")
    raw = orjson.dumps(body)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {COMPLETIONS} HTTP/1.0\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    try:
        response = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server must close
    finally:
        writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    return head.decode("latin-1").lower().split("\r\n"), content


async def test_an_http_1_0_client_reads_a_stream_unchunked_until_the_close(
    live: tuple[str, str, FakeWorker],
) -> None:
    """A streamed completion to an HTTP/1.0 request carries no transfer-encoding (chunked is HTTP/1.1's,
    RFC 9112 7.1): its body is the server-sent events as they are, and it ends with the connection."""
    url, key, worker = live

    worker_task = asyncio.create_task(_stream_hello(worker))
    head, content = await http_1_0_chat(url, key, STREAM_BODY)
    await worker_task
    assert head[0].startswith("http/1.1 200"), head
    assert "connection: close" in head and not [line for line in head if "transfer-encoding" in line]
    assert not [line for line in head if line.startswith("content-length")]
    events = content.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""], content  # nothing but the events: no chunk framing
    deltas = [orjson.loads(event.removeprefix(b"data: "))["choices"][0]["delta"] for event in events[:-2]]
    assert "".join(delta.get("content", "") for delta in deltas) == "Hello", content


async def test_an_http_1_0_client_gets_a_json_completion_with_its_length(
    live: tuple[str, str, FakeWorker],
) -> None:
    """A JSON completion to an HTTP/1.0 request is sent as to any client: with its content-length, then
    the connection closes."""
    url, key, worker = live

    async def work() -> None:
        taken = await worker.take()
        await worker.start(taken)
        await worker.done(taken, "Hello!")

    worker_task = asyncio.create_task(work())
    head, content = await http_1_0_chat(url, key, {"model": MODEL, "messages": MESSAGES})
    await worker_task
    assert head[0].startswith("http/1.1 200") and "connection: close" in head, head
    assert f"content-length: {len(content)}" in head and not [
        line for line in head if "transfer-encoding" in line
    ]
    assert orjson.loads(content)["choices"][0]["message"]["content"] == "Hello!"


@pytest.fixture
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the ingress and of uvicorn, caught on their own loggers (the app's logging set-up
    replaces the root logger's handlers)."""
    caught: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = caught.append  # type: ignore[method-assign]
    loggers = [logging.getLogger("ingress"), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    yield caught
    for logger in loggers:
        logger.removeHandler(handler)


async def test_a_client_gone_with_pipelined_requests_leaves_the_running_one_cleanly(
    live: tuple[str, str, FakeWorker], aredis_client: aredis.Redis, errors_logged: list[logging.LogRecord]
) -> None:
    """Three requests pipelined on one connection; the client reads the first answer and leaves while
    the second runs: that one sees the disconnect (its job is cancelled), never a write to the closed
    socket (a RuntimeError, a 500 and a traceback), and the third never starts (nothing left queued)."""
    url, key, worker = live
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request * 3)
    first = await worker.take()
    await worker.start(first)
    await worker.done(first, "one")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    second = await worker.take()
    await worker.start(second)
    writer.close()
    await eventually(lambda: aredis_client.exists(keys.cancelled_marker(second.id)), within=2)
    await worker.done(second, "two")  # the answer comes anyway: nothing may try to write it
    await asyncio.sleep(0.2)
    assert not errors_logged
    assert await aredis_client.llen(keys.rq_queue_key(first.job.provider)) == 0


@pytest.mark.parametrize(
    ("refused", "status"),
    [
        (b"NOT HTTP\r\n\r\n", b"400"),  # a head the parser refuses
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", b"431"),  # a head too large
        (b"POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),  # a bad body
    ],
)
async def test_a_request_refused_behind_pipelined_ones_is_answered_after_them(
    live: tuple[str, str, FakeWorker], errors_logged: list[logging.LogRecord], refused: bytes, status: bytes
) -> None:
    """Two requests pipelined on one connection, then one the connection refuses: each of the two gets
    its own answer, then the refused one its error, in the order the requests came (RFC 9112 section
    9.3.2), never the error in the place of a request that was served."""
    url, key, worker = live
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request * 2 + refused)
    for answer in ("one", "two"):
        taken = await worker.take()
        await worker.start(taken)
        await worker.done(taken, answer)
    received = await reader.read()  # until the server closes the connection
    writer.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200", status]
    assert received.index(b'"one"') < received.index(b'"two"') < received.index(b'{"error"')
    assert not errors_logged


H2C_OFFER = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAA\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_an_upgrade_offer_is_ignored_and_the_body_read(
    live: tuple[str, str, FakeWorker], errors_logged: list[logging.LogRecord], framing: str
) -> None:
    """A request offering to upgrade (Java's HTTP clients offer h2c on every request) is served as plain
    HTTP/1.1 (RFC 9110 section 7.8), its body read whole, and the request after it on the connection
    read as the next request: here a completion whose head and body come in separate writes, then a
    second completion pipelined behind it."""
    url, key, worker = live
    host, port = url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": MODEL, "messages": MESSAGES})
    chunked = framing == "chunked"
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    framing_header = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    headers = f"Host: test\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\n" + headers + H2C_OFFER + framing_header + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    writer.write(framed + head.replace(b"Host: test", b"Host: test\r\nConnection: close") + framed)
    for answer in ("one", "two"):
        taken = await worker.take()
        assert taken.job.body["messages"] == MESSAGES
        await worker.start(taken)
        await worker.done(taken, answer)
    received = await reader.read()  # until the server closes the connection
    writer.close()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200"]
    assert received.index(b'"one"') < received.index(b'"two"')
    assert not errors_logged


def test_run_serves_in_its_own_process(redis_url: str) -> None:
    """`ingress.server.run` starts uvicorn (uvloop + httptools) and answers /healthz until interrupted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = textwrap.dedent(
        f"""
        from ingress.server import run
        from shared.settings import settings_from_mapping
        run(settings_from_mapping({{"redis_url": {redis_url!r}}}, env={{}}), host="127.0.0.1", port={port})
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=os.getcwd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    def healthz() -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            assert process.poll() is None, process.communicate(timeout=5)[0].decode()
            return None

    try:
        response = eventually_sync(healthz, interval=0.05)
        assert response.status_code == 200 and response.headers["api-version"] == "2026-06-01"
        assert "server" not in response.headers
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output = process.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert "GET /healthz" not in output  # access log is off
