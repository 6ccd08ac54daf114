"""What one request costs Redis: commands per request, stream and non-stream, counted with ``INFO
commandstats`` around N requests through the real system (``aiorouter ingress`` and one worker, the
simulated upstream), and the Redis CPU they take, from which the requests per second one Redis
sustains are estimated.

    python -m bench.redis_capacity --redis-url redis://127.0.0.1:PORT/0 [--requests 300 --clients 8]

Use a Redis of its own (its statistics are reset).  Background commands (heartbeats, sweeps,
registry maintenance) are measured first with the system idle and subtracted at their rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.processes import RouterProcesses, UpstreamProcess

MODEL = "bench/capacity"
IDLE_SECONDS = 10.0
MONITORED_REQUESTS = 100


def _stats(client: redis.Redis) -> dict[str, Any]:
    commands = {
        name.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
        for name, v in client.info("commandstats").items()
    }
    cpu = client.info("cpu")
    return {"commands": commands, "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}


def _reset(client: redis.Redis) -> None:
    client.config_resetstat()


async def _load(base_url: str, api_key: str, requests: int, clients: int, stream: bool) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "capacity"}], "stream": stream}
    headers = {"authorization": f"Bearer {api_key}"}
    remaining = iter(range(requests))
    ok = 0

    async def client_loop(http: httpx.AsyncClient) -> None:
        nonlocal ok
        for _ in remaining:
            response = await http.post(f"{base_url}/chat/completions", json=body, headers=headers)
            if response.status_code == 200:
                ok += 1

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(clients)))
    return ok


def _measure(
    client: redis.Redis,
    router: RouterProcesses,
    requests: int,
    clients: int,
    stream: bool,
    idle: dict[str, Any],
) -> dict[str, Any]:
    _reset(client)
    before = _stats(client)
    started = time.monotonic()
    ok = asyncio.run(_load(router.base_url, router.api_key, requests, clients, stream))
    elapsed = time.monotonic() - started
    after = _stats(client)
    background_calls = idle["calls_per_s"] * elapsed
    background_usec = idle["usec_per_s"] * elapsed
    commands = after["commands"]
    calls = sum(c["calls"] for c in commands.values())
    usec = sum(c["usec"] for c in commands.values())
    cpu = after["cpu"] - before["cpu"] - idle["cpu_per_s"] * elapsed
    per_request_calls = (calls - background_calls) / ok
    per_request_usec = (usec - background_usec) / ok
    per_request_cpu_us = cpu * 1e6 / ok
    return {
        "mode": "stream" if stream else "json",
        "requests_ok": ok,
        "requests_sent": requests,
        "clients": clients,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s_offered": round(ok / elapsed, 1),
        "commands_per_request": round(per_request_calls, 1),
        "command_usec_per_request": round(
            per_request_usec, 1
        ),  # a script's time counts twice: its own, its commands'
        "redis_cpu_usec_per_request": round(per_request_cpu_us, 1),
        "ceiling_requests_per_s_redis_cpu": round(1e6 / per_request_cpu_us),
        "by_command": {
            name: {
                "per_request": round(c["calls"] / ok, 2),
                "usec_per_call": round(c["usec"] / c["calls"], 2),
            }
            for name, c in sorted(commands.items(), key=lambda item: -item[1]["calls"])
        },
    }


def _sent_by_clients(
    url: str, router: RouterProcesses, requests: int, clients: int, stream: bool, idle_per_s: float
) -> dict[str, float]:
    """Commands per request as the processes send them, told apart with ``MONITOR`` from those run inside
    Lua scripts (a separate, smaller run: ``MONITOR`` slows Redis down)."""
    counts = {"sent": 0, "in_scripts": 0}
    stop = threading.Event()

    def watch() -> None:
        with redis.Redis.from_url(url).monitor() as monitor:  # type: ignore[no-untyped-call]
            ready.set()
            for command in monitor.listen():
                if stop.is_set():
                    return
                counts["in_scripts" if command.get("client_type") == "lua" else "sent"] += 1

    ready = threading.Event()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(10)
    time.sleep(0.2)
    started = time.monotonic()
    ok = asyncio.run(_load(router.base_url, router.api_key, requests, clients, stream))
    elapsed = time.monotonic() - started
    stop.set()
    redis.Redis.from_url(url).ping()  # wakes the watcher to see the stop
    watcher.join(10)
    return {
        "sent_per_request": round((counts["sent"] - idle_per_s * elapsed) / ok, 1),
        "run_in_scripts_per_request": round(counts["in_scripts"] / ok, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.redis_url)
    with tempfile.TemporaryDirectory(prefix="aiorouter-capacity-") as workdir:
        upstream = UpstreamProcess(Path(workdir))
        router = RouterProcesses(Path(workdir), args.redis_url, upstream.base_url, {MODEL: "sim"}, 64)
        try:
            router.set_workers(1)
            asyncio.run(_load(router.base_url, router.api_key, 20, 4, True))  # warm: scripts loaded
            _reset(client)
            before = _stats(client)
            time.sleep(IDLE_SECONDS)
            after = _stats(client)
            idle_calls = sum(c["calls"] for c in after["commands"].values())
            idle_usec = sum(c["usec"] for c in after["commands"].values())
            idle = {
                "calls_per_s": idle_calls / IDLE_SECONDS,
                "usec_per_s": idle_usec / IDLE_SECONDS,
                "cpu_per_s": (after["cpu"] - before["cpu"]) / IDLE_SECONDS,
            }
            runs = [
                _measure(client, router, args.requests, args.clients, stream, idle)
                for stream in (False, True)
            ]
            for run, stream in zip(runs, (False, True), strict=True):
                run["monitor"] = _sent_by_clients(
                    args.redis_url, router, MONITORED_REQUESTS, args.clients, stream, idle["calls_per_s"]
                )
        finally:
            router.stop()
            upstream.stop()
    server = client.info("server")
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "redis_version": server["redis_version"],
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the box during the run
        "requests_per_run": args.requests,
        "monitored_requests_per_run": MONITORED_REQUESTS,
        "idle_background": {k: round(v, 4) for k, v in idle.items()},
        "runs": runs,
    }
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
