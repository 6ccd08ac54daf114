"""A simulated OpenAI-compatible upstream that is never the bottleneck of a benchmark or a test.

Raw asyncio protocol, httptools parsing, uvloop when installed, HTTP/1.1 keep-alive; tens of thousands of
requests per second on one core. It speaks the real OpenAI protocol over a real socket:

- ``POST /v1/chat/completions`` (also ``/chat/completions``): a ``chat.completion`` JSON body with
  ``usage``, or with ``"stream": true`` an SSE stream (chunked transfer encoding) of
  ``chat.completion.chunk`` events: the role in the first delta, one content token per event, one
  ``finish_reason``, a usage chunk with ``"choices": []`` when ``stream_options.include_usage`` is true,
  then ``data: [DONE]``.
- ``GET /v1/models``: the model list.
- ``GET /stats``: counters as JSON (see ``bench.sim_stats.Counter``); ``POST /stats/reset`` zeroes them.

Behaviour is chosen per request through the model name, e.g. ``sim?tokens=50&ttft_ms=5&itl_ms=0``,
``sim?latency_ms=50``, ``sim?status=503&retry_after=2``, ``sim?hang``, ``sim?cut=3``, ``sim?bad_json``,
``sim?tools``. The full grammar is in ``bench.sim_behaviour``.

Python API: ``await start_upstream()`` in async tests, ``UpstreamThread`` (a context manager) in sync
tests. CLI: ``python -m bench.upstream --port P [--workers K]`` prints ``listening on <base_url>`` once
ready; with K > 1 the K forked processes share the listening socket and one shared-memory stats table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from bench.sim_protocol import SimProtocol
from bench.sim_stats import UpstreamStats

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a project dependency on Linux
    uvloop = None  # type: ignore[assignment]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed, else asyncio's."""
    return uvloop.new_event_loop if uvloop is not None else asyncio.new_event_loop


class Upstream:
    """A running simulated upstream on this event loop."""

    def __init__(self, server: asyncio.Server, stats: UpstreamStats, connections: set[SimProtocol]) -> None:
        self._server = server
        self._connections = connections
        self.stats = stats
        sockname = server.sockets[0].getsockname()
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    async def close(self) -> None:
        self._server.close()
        for connection in list(self._connections):
            connection.shut_down()
        await self._server.wait_closed()


async def start_upstream(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
    stats: UpstreamStats | None = None,
) -> Upstream:
    """Listen on ``host:port`` (or an already bound ``sock``) and serve until ``close()``."""
    loop = asyncio.get_running_loop()
    stats = stats if stats is not None else UpstreamStats()
    connections: set[SimProtocol] = set()

    def protocol() -> SimProtocol:
        return SimProtocol(stats, connections)

    if sock is not None:
        server = await loop.create_server(protocol, sock=sock, backlog=4096)
    else:
        server = await loop.create_server(protocol, host, port, backlog=4096, reuse_address=True)
    return Upstream(server, stats, connections)


class UpstreamThread:
    """The upstream on its own event loop in a daemon thread, for sync tests and scripts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-upstream", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._upstream: Upstream | None = None
        self._error: BaseException | None = None

    def start(self) -> UpstreamThread:
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError("the simulated upstream did not start") from self._error
        if self._upstream is None:
            raise RuntimeError("the simulated upstream did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> UpstreamThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def upstream(self) -> Upstream:
        assert self._upstream is not None, "start() first"
        return self._upstream

    @property
    def port(self) -> int:
        return self.upstream.port

    @property
    def base_url(self) -> str:
        return self.upstream.base_url

    @property
    def stats(self) -> UpstreamStats:
        return self.upstream.stats

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._upstream = await start_upstream(self._host, self._port)
        except OSError as exc:
            self._error = exc  # start() raises it in the caller's thread
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self._upstream.close()


def _serve_forever(sock: socket.socket, stats: UpstreamStats, ready: Callable[[str], None]) -> None:
    async def serve() -> None:
        upstream = await start_upstream(sock=sock, stats=stats)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        ready(upstream.base_url)
        await stop.wait()
        await upstream.close()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve())


def _announce(base_url: str) -> None:
    print(f"listening on {base_url}", flush=True)


def _serve_child(host: str, port: int, stats: UpstreamStats, started: Any) -> None:
    sock = _bind(host, port, reuse_port=True)
    _serve_forever(sock, stats, lambda _: started.release())


def _bind(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(4096)
    sock.setblocking(False)
    return sock


def serve(host: str, port: int, workers: int) -> None:
    """Run the upstream in ``workers`` processes, until SIGINT/SIGTERM.

    Each process listens on its own ``SO_REUSEPORT`` socket, so the kernel spreads connections evenly;
    the parent only holds the port (bound, never listening) so that port 0 can pick it once for all.
    """
    if workers <= 1:
        _serve_forever(_bind(host, port), UpstreamStats(), _announce)
        return
    reserved = _bind(host, port, reuse_port=True, listen=False)
    port = reserved.getsockname()[1]
    context = multiprocessing.get_context("fork")
    stats = UpstreamStats(UpstreamStats.shared_cells(workers), 0, workers)
    started = context.Semaphore(0)
    children = [
        context.Process(target=_serve_child, args=(host, port, stats.for_slot(slot), started), daemon=True)
        for slot in range(workers)
    ]
    for child in children:
        child.start()
    for _ in children:
        if not started.acquire(timeout=10):
            raise RuntimeError("a simulated upstream process did not start within 10 s")
    _announce(f"http://{host}:{port}/v1")
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    while not stopping.is_set() and all(child.is_alive() for child in children):
        stopping.wait(0.5)
    for child in children:
        if child.pid is not None and child.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the socket")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.workers)


if __name__ == "__main__":
    main(sys.argv[1:])
