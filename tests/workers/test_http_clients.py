"""The per-provider choice of HTTP client and its transport settings, over real sockets: a custom CA,
a client certificate against a TLS server that demands one, an HTTP proxy (CONNECT) on loopback, and
the httpx client behind the same interface and errors as the fast one."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.upstream import Upstream
from shared.errors import ConfigError
from shared.settings import ProviderSettings, Timeouts, settings_from_mapping
from tests.conftest import IN_CI
from tests.workers.factories import completion_job
from tests.workers.raw_server import CLOSE, RawServer, answer, start_raw_server
from workers.providers import sse
from workers.providers.http_clients import UpstreamHttp, make_http_client
from workers.providers.httpx_client import HttpxUpstreamClient
from workers.providers.openai_compatible import OpenAICompatibleProvider
from workers.providers.upstream_http import (
    ConnectError,
    ConnectionCut,
    ResponseTooLarge,
    TransportError,
    UpstreamClient,
)

FAST = Timeouts(connect=2.0, first_token=5.0, idle=5.0, total=20.0)


@dataclass
class Pem:
    cert: Path
    key: Path


def _self_signed(folder: Path, name: str) -> Pem:
    if shutil.which("openssl") is None:
        message = "the openssl command is needed to make test certificates"
        if IN_CI:
            pytest.fail(message + " (CI=true: the TLS tests must run)")
        pytest.skip(message)
    pem = Pem(folder / f"{name}.crt", folder / f"{name}.key")
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1".split()
    names = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*command, *names, "-keyout", str(pem.key), "-out", str(pem.cert)], check=True, capture_output=True
    )
    return pem


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    """A server certificate for 127.0.0.1 and a client certificate, each self-signed (its own CA)."""
    folder = tmp_path_factory.mktemp("pems")
    return {"server": _self_signed(folder, "server"), "client": _self_signed(folder, "client")}


def server_tls(pems: dict[str, Pem], *, demand_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pems["server"].cert, pems["server"].key)
    if demand_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pems["client"].cert)
    return context


def provider(base_url: str, **options: Any) -> ProviderSettings:
    return ProviderSettings(name="up", kind="openai", base_url=base_url, timeouts=FAST, **options)


async def ok_body(client: UpstreamHttp) -> bytes:
    async with client.post("chat/completions", b"{}") as reply:
        assert reply.status == 200
        return await reply.read()


class ConnectProxy:
    """An HTTP proxy on loopback that tunnels CONNECT requests, as an egress proxy does for https."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    server = await ConnectProxy().start()
    yield server
    await server.close()


# --- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"proxy": "http://127.0.0.1:3128"}, 'proxy need http_client = "httpx"'),
        ({"http2": True}, 'http2 need http_client = "httpx"'),
        ({"http_client": "curl"}, 'http_client must be "fast" or "httpx"'),
        ({"client_key": "/k.pem"}, "client_key without client_cert"),
    ],
)
def test_settings_refuse_what_the_chosen_client_cannot_do(options: dict[str, Any], message: str) -> None:
    """A transport setting the provider's client would ignore is a start-up error, not a silent no-op."""
    raw = {"providers": {"up": {"kind": "openai", "base_url": "https://up.example/v1", **options}}}
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(raw)


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    """A ca_file that does not exist fails when the worker builds the client, naming the provider."""
    with pytest.raises(ConfigError, match="'up': cannot load its TLS files"):
        make_http_client(provider("https://127.0.0.1:1/v1", ca_file=str(tmp_path / "none.pem")), {})


def test_the_client_follows_the_setting() -> None:
    """http_client picks the fast client by default and httpx on request."""
    assert isinstance(make_http_client(provider("http://127.0.0.1:1/v1"), {}), UpstreamClient)
    chosen = make_http_client(provider("http://127.0.0.1:1/v1", http_client="httpx"), {})
    assert isinstance(chosen, HttpxUpstreamClient)


# --- TLS: a custom CA and a client certificate, on both clients ----------------------------------------


@pytest.mark.parametrize("kind", ["fast", "httpx"])
async def test_ca_file_trusts_a_private_ca(
    kind: str, pems: dict[str, Pem], servers: list[RawServer], clients: list[UpstreamHttp]
) -> None:
    """With ca_file naming the upstream's CA the call succeeds; without it the certificate is refused."""
    server = await start_raw_server(
        lambda c, r: [answer(200, b"ok")], server_tls(pems, demand_client_cert=False)
    )
    servers.append(server)
    trusting = make_http_client(
        provider(server.base_url, http_client=kind, ca_file=str(pems["server"].cert)), {}
    )
    default = make_http_client(provider(server.base_url, http_client=kind), {})
    clients.extend([trusting, default])
    assert await ok_body(trusting) == b"ok"
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await ok_body(default)


@pytest.mark.parametrize("kind", ["fast", "httpx"])
async def test_client_certificate_for_mutual_tls(
    kind: str, pems: dict[str, Pem], servers: list[RawServer], clients: list[UpstreamHttp]
) -> None:
    """An upstream that demands a client certificate answers with client_cert set, and refuses without."""
    server = await start_raw_server(
        lambda c, r: [answer(200, b"ok")], server_tls(pems, demand_client_cert=True)
    )
    servers.append(server)
    ca = str(pems["server"].cert)
    with_cert = provider(
        server.base_url,
        http_client=kind,
        ca_file=ca,
        client_cert=str(pems["client"].cert),
        client_key=str(pems["client"].key),
    )
    without = provider(server.base_url, http_client=kind, ca_file=ca)
    holder, stranger = make_http_client(with_cert, {}), make_http_client(without, {})
    clients.extend([holder, stranger])
    assert await ok_body(holder) == b"ok"
    with pytest.raises(TransportError):
        await ok_body(stranger)
    assert len(server.requests) == 1


# --- httpx: a proxy, and the same errors as the fast client -------------------------------------------


async def test_httpx_client_reaches_an_https_upstream_through_a_proxy(
    pems: dict[str, Pem], proxy: ConnectProxy, servers: list[RawServer], clients: list[UpstreamHttp]
) -> None:
    """proxy = the egress proxy: the call is tunnelled through it (CONNECT) and still checks the CA."""
    server = await start_raw_server(
        lambda c, r: [answer(200, b"ok")], server_tls(pems, demand_client_cert=False)
    )
    servers.append(server)
    settings = provider(
        server.base_url, http_client="httpx", ca_file=str(pems["server"].cert), proxy=proxy.url
    )
    client = make_http_client(settings, {})
    clients.append(client)
    assert await ok_body(client) == b"ok"
    port = server.base_url.split(":")[2].split("/")[0]
    assert proxy.tunnels == [f"127.0.0.1:{port}"]


async def test_httpx_client_honours_https_proxy_from_the_environment(
    pems: dict[str, Pem],
    proxy: ConnectProxy,
    servers: list[RawServer],
    clients: list[UpstreamHttp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY in the worker's environment routes the httpx client's calls through that proxy."""
    server = await start_raw_server(
        lambda c, r: [answer(200, b"ok")], server_tls(pems, demand_client_cert=False)
    )
    servers.append(server)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = make_http_client(
        provider(server.base_url, http_client="httpx", ca_file=str(pems["server"].cert)), {}
    )
    clients.append(client)
    assert await ok_body(client) == b"ok"
    assert len(proxy.tunnels) == 1


async def test_httpx_client_errors_are_the_fast_clients(
    servers: list[RawServer], clients: list[UpstreamHttp]
) -> None:
    """Nothing listening is ConnectError; a connection closed before answering is ConnectionCut, once."""
    refused = make_http_client(provider("http://127.0.0.1:1/v1", http_client="httpx"), {})
    server = await start_raw_server(lambda c, r: [CLOSE])
    servers.append(server)
    cut = make_http_client(provider(server.base_url, http_client="httpx"), {})
    clients.extend([refused, cut])
    with pytest.raises(ConnectError):
        await ok_body(refused)
    with pytest.raises(ConnectionCut):
        await ok_body(cut)
    assert len(server.requests) == 1


async def test_openai_adapter_streams_through_the_httpx_client(upstream: Upstream) -> None:
    """The OpenAI-compatible adapter on http_client = "httpx" streams the simulated upstream's tokens."""
    adapter = OpenAICompatibleProvider(provider(upstream.base_url, http_client="httpx"))
    job = completion_job("hello", upstream_model="sim?tokens=4", provider="up")
    try:
        deltas = [delta async for delta in adapter.stream(job)]
    finally:
        await adapter.aclose()
    assert "".join(d.content or "" for d in deltas) == "w0 w1 w2 w3 "
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]


async def test_httpx_client_speaks_http2_when_asked(
    pems: dict[str, Pem], clients: list[UpstreamHttp]
) -> None:
    """http2 = true: the call to an HTTP/2 TLS upstream (hypercorn, ALPN h2) goes over HTTP/2."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    seen: list[str] = []
    started = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            started.set()
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append(scope["http_version"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = str(pems["server"].cert), str(pems["server"].key)
    config.alpn_protocols = ["h2", "http/1.1"]
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(10):
            await started.wait()
            while True:  # lifespan runs before the socket listens: wait until it accepts
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                break
        settings = provider(
            f"https://127.0.0.1:{port}/v1", http_client="httpx", http2=True, ca_file=str(pems["server"].cert)
        )
        client = make_http_client(settings, {})
        clients.append(client)
        assert await ok_body(client) == b"ok"
        assert seen == ["2"]
    finally:
        shutdown.set()
        await task


@pytest.mark.parametrize("kind", ["fast", "httpx"])
async def test_a_stream_past_its_bound_is_cut_on_either_client(
    kind: str, servers: list[RawServer], clients: list[UpstreamHttp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both clients end a streamed body longer than MAX_STREAM_BYTES with ResponseTooLarge (a cut), not
    an exception the adapters do not know."""
    monkeypatch.setattr(sse, "MAX_STREAM_BYTES", 10_000)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 90000\r\n\r\n"
    server = await start_raw_server(lambda c, r: [head + b"data: x\n\n" * 10_000])
    servers.append(server)
    client = make_http_client(provider(server.base_url, http_client=kind), {})
    clients.append(client)
    seen = 0
    with pytest.raises(ResponseTooLarge):
        async with client.post("chat/completions", b"{}") as reply:
            async for _ in reply.sse_data():
                seen += 1
    assert seen < 1_200  # nothing past the bound is decoded
