"""Load generator for OpenAI-compatible chat completions: closed loop, open loop, stream or not.

Closed loop: C clients, each on its own kept-alive connection, send the next request as soon as the last
one is answered. Open loop: requests start at a fixed rate whatever the answers do, and latency counts
from the scheduled start, so a stalled server cannot hide its queue (no coordinated omission).

Only requests finishing inside the measurement window (after ``warmup_s``, for ``duration_s``) count
(open loop: those scheduled to start inside it);
with ``requests_per_client`` every request counts and the run lasts until they are all answered.
Every stream is checked event by event (``bench.answer_check``): content in order, one finish_reason,
``[DONE]`` last; a fault counts as an error of its kind. CPU seconds and peak RSS of the processes
named in ``watch`` are read from ``/proc`` over the window.

    python -m bench.loadgen --url http://127.0.0.1:8080/v1 --model 'sim?tokens=50' --stream --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from time import perf_counter
from urllib.parse import urlsplit

import orjson

from bench.http_client import Connection, Exchange, InFlight, build_request, connect
from bench.load_record import LoadResult, Recorder
from bench.proc_stats import ProcessWatch
from bench.sim_behaviour import DEFAULT_TOKENS, BadBehaviour, parse_behaviour
from bench.sim_payloads import expected_content
from bench.upstream import event_loop_factory


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load run."""

    base_url: str
    model: str = "sim"
    tokens: int | None = None  # content tokens each answer must carry; default: read from a sim model
    stream: bool = False
    include_usage: bool = False
    clients: int = 1  # closed loop: concurrent clients
    rate: float = 0.0  # > 0: open loop at this many requests per second instead
    duration_s: float = 5.0
    warmup_s: float = 1.0
    requests_per_client: int = 0  # > 0: each client sends this many, all counted, no time window
    ramp_s: float = 0.0  # closed loop: spread the clients' first requests over this long
    timeout_s: float = 60.0
    api_key: str | None = None
    watch: Mapping[str, int] = field(default_factory=dict)

    @property
    def expected_tokens(self) -> int:
        """``tokens`` if given, else what the model names: a simulated upstream's ``sim?tokens=50``, or
        the benchmark catalog's id for it, ``bench/sim-tokens-50`` (:func:`bench.scenarios.model_id`)."""
        if self.tokens is not None:
            return self.tokens
        catalog = _CATALOG_TOKENS.search(self.model) if self.model.startswith("bench/sim") else None
        if catalog is not None:
            return int(catalog.group(1))
        try:
            return parse_behaviour(self.model).tokens
        except BadBehaviour:
            return DEFAULT_TOKENS

    def request_body(self) -> bytes:
        body: dict[str, object] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Count for me, please."}],
        }
        if self.stream:
            body["stream"] = True
            if self.include_usage:
                body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)


_CATALOG_TOKENS = re.compile(r"-tokens-(\d+)(?:-|$)")


class LoadRun:
    """The state of one run: where to send, what to expect, and when the window opens and closes."""

    def __init__(self, spec: LoadSpec) -> None:
        url = urlsplit(spec.base_url)
        self.spec = spec
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        path = url.path.rstrip("/") + "/chat/completions"
        self.request = build_request(self.host, self.port, path, spec.request_body(), spec.api_key)
        self.expected = expected_content(spec.expected_tokens)
        self.loop = asyncio.get_running_loop()
        self.watch = ProcessWatch({"loadgen": os.getpid(), **spec.watch})
        counted = spec.requests_per_client > 0
        self.window_start = perf_counter() + (0.0 if counted else spec.warmup_s)
        self.window_end = self.window_start + spec.duration_s
        window_end = None if counted else self.window_end
        self.recorder = Recorder(self.window_start, window_end, by_start=spec.rate > 0)
        self.in_flight = InFlight()

    def client_continues(self, sent: int) -> bool:
        """Whether a closed-loop client that has sent ``sent`` requests sends another."""
        if self.spec.requests_per_client > 0:
            return sent < self.spec.requests_per_client
        return perf_counter() < self.window_end

    async def exchange(self, connection: Connection, started_at: float) -> None:
        exchange = Exchange(self.loop, self.spec.stream, self.expected, started_at, self.in_flight)
        connection.send(self.request, exchange, self.spec.timeout_s)
        await exchange.future
        self.recorder.record(exchange)

    async def open_connection(self) -> Connection | None:
        try:
            return await connect(self.host, self.port)
        except OSError:
            self.recorder.record_error("connect", perf_counter())
            await asyncio.sleep(0.05)
            return None


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` on the running event loop and summarise it."""
    run = LoadRun(spec)
    watching = asyncio.create_task(_watch_window(run))
    if spec.rate > 0:
        await _open_loop(run)
    else:
        await asyncio.gather(*(_closed_client(run, index) for index in range(spec.clients)))
    usage = await watching
    return run.recorder.result(spec, usage, run.in_flight)


async def _watch_window(run: LoadRun) -> dict[str, object]:
    await asyncio.sleep(max(run.window_start - perf_counter(), 0))
    run.watch.start()
    if run.spec.requests_per_client > 0:
        await run.recorder.all_done.wait()
    else:
        await asyncio.sleep(max(run.window_end - perf_counter(), 0))
    return {name: asdict(usage) for name, usage in (await run.watch.stop()).items()}


async def _closed_client(run: LoadRun, index: int) -> None:
    spec = run.spec
    if spec.ramp_s > 0:
        await asyncio.sleep(spec.ramp_s * index / spec.clients)
    connection: Connection | None = None
    sent = 0
    while run.client_continues(sent):
        if connection is None or not connection.usable:
            connection = await run.open_connection()
            if connection is None:
                sent += 1  # a request that could not even connect, counted as a "connect" error
                continue
        await run.exchange(connection, perf_counter())
        sent += 1
    if connection is not None:
        connection.close()
    run.recorder.client_done(spec.clients)


async def _open_loop(run: LoadRun) -> None:
    idle: list[Connection] = []
    pending: set[asyncio.Task[None]] = set()
    interval = 1.0 / run.spec.rate
    scheduled = perf_counter()
    while scheduled < run.window_end:
        delay = scheduled - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = run.loop.create_task(_open_request(run, idle, scheduled))
        pending.add(task)
        task.add_done_callback(pending.discard)
        scheduled += interval
    if pending:
        await asyncio.wait(pending)
    for connection in idle:
        connection.close()


async def _open_request(run: LoadRun, idle: list[Connection], scheduled: float) -> None:
    connection = None
    while idle and connection is None:
        candidate = idle.pop()
        connection = candidate if candidate.usable else None
    if connection is None:
        connection = await run.open_connection()
        if connection is None:
            return
    await run.exchange(connection, scheduled)
    if connection.usable:
        idle.append(connection)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="OpenAI base URL, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--model", default="sim")
    parser.add_argument("--tokens", type=int, help="content tokens each answer carries (default: from model)")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--include-usage", action="store_true")
    parser.add_argument("--clients", type=int, default=1, help="closed loop: concurrent clients")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--requests-per-client", type=int, default=0)
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to spread client starts over")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--api-key")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    watch = {name: int(pid) for name, _, pid in (item.partition("=") for item in args.watch)}
    spec = LoadSpec(
        base_url=args.url,
        model=args.model,
        tokens=args.tokens,
        stream=args.stream,
        include_usage=args.include_usage,
        clients=args.clients,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        requests_per_client=args.requests_per_client,
        ramp_s=args.ramp,
        timeout_s=args.timeout,
        api_key=args.api_key,
        watch=watch,
    )
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        result = runner.run(run_load(spec))
    if args.json:
        print(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(result.summary())


if __name__ == "__main__":
    main()
