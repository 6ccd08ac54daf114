"""The Batch API benchmark: a batch's drain rate against the pool's interactive throughput, interactive
latency with and without a batch running, and Redis' peak memory during the batch.

    python -m bench.batch_bench --quick      # a few hundred lines, short windows: checks that it works
    python -m bench.batch_bench              # 10,000 lines (run it on a quiet machine)

AIOrouter runs from its CLI (ingress, workers, ``aiorouter batches``) against the simulated upstream, on
``$REDIS_URL``; the figures are printed and, with ``--out FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.loadgen import LoadSpec, run_load
from bench.processes import Child, RouterProcesses, UpstreamProcess, aiorouter_command, start_child
from bench.upstream import event_loop_factory

MODEL = "bench/sim"
UPSTREAM_MODEL = "sim?tokens=16&latency_ms=20"
FINAL = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Sizes:
    lines: int
    window_s: float  # each interactive measurement window
    rate_share: float  # open-loop interactive rate, as a share of the measured interactive throughput


FULL = Sizes(lines=10_000, window_s=20.0, rate_share=0.5)
QUICK = Sizes(lines=300, window_s=3.0, rate_share=0.5)


def batch_input(lines: int) -> bytes:
    rows = (
        orjson.dumps(
            {
                "custom_id": f"line-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Count {n}"}]},
            }
        )
        for n in range(lines)
    )
    return b"\n".join(rows) + b"\n"


class BatchClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"authorization": f"Bearer {api_key}"}, timeout=120
        )

    def start(self, lines: int) -> str:
        files = {"file": ("bench.jsonl", batch_input(lines))}
        uploaded = self._http.post("/files", files=files, data={"purpose": "batch"}).raise_for_status().json()
        body = {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch_id: str = self._http.post("/batches", json=body).raise_for_status().json()["id"]
        return batch_id

    def get(self, batch_id: str) -> dict[str, Any]:
        batch: dict[str, Any] = self._http.get(f"/batches/{batch_id}").raise_for_status().json()
        return batch

    def close(self) -> None:
        self._http.close()


def _latency(result: Any) -> dict[str, float] | None:
    latency: dict[str, float] | None = result.latency_ms
    return latency


async def _interactive(
    base_url: str, api_key: str, *, clients: int = 0, rate: float = 0.0, window_s: float
) -> Any:
    spec = LoadSpec(
        base_url=base_url, model=MODEL, tokens=16, clients=max(1, clients), rate=rate,
        duration_s=window_s, warmup_s=min(2.0, window_s / 3), api_key=api_key,
    )  # fmt: skip
    return await run_load(spec)


async def _batch_with_load(
    batches: BatchClient, base_url: str, api_key: str, redis_url: str, sizes: Sizes, rate: float
) -> dict[str, Any]:
    memory = redis.Redis.from_url(redis_url)
    baseline = int(memory.info("memory")["used_memory"])
    peak = baseline
    batch_id = batches.start(sizes.lines)
    load = (
        asyncio.create_task(_interactive(base_url, api_key, rate=rate, window_s=sizes.window_s))
        if rate > 0
        else None
    )
    batch = batches.get(batch_id)
    while batch["status"] not in FINAL:
        peak = max(peak, int(memory.info("memory")["used_memory"]))
        await asyncio.sleep(0.2)
        batch = await asyncio.to_thread(batches.get, batch_id)
    loaded = await load if load is not None else None
    memory.close()
    ran_s = max(
        1e-3, (batch["completed_at"] or time.time()) - (batch["in_progress_at"] or batch["created_at"])
    )
    counts = batch["request_counts"]
    return {
        "status": batch["status"],
        "lines": counts["total"],
        "completed": counts["completed"],
        "failed": counts["failed"],
        "drain_lines_per_s": counts["total"] / ran_s,
        "interactive_with_batch": None
        if loaded is None
        else {"latency_ms": _latency(loaded), "ok": loaded.ok, "requests": loaded.requests},
        "redis_used_memory_baseline_mib": baseline / 2**20,
        "redis_used_memory_peak_mib": peak / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few hundred lines and short windows")
    parser.add_argument("--lines", type=int, help="lines in the batch (default 10,000; --quick 300)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.lines:
        sizes = Sizes(args.lines, sizes.window_s, sizes.rate_share)
    with tempfile.TemporaryDirectory(prefix="aiorouter-batch-bench-") as workdir_name:
        workdir = Path(workdir_name)
        os.environ["AIOROUTER_BATCH_STORAGE_DIR"] = str(workdir / "files")
        figures = _run(workdir, args, sizes)
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    if args.out:
        args.out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


def _run(workdir: Path, args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    upstream = UpstreamProcess(workdir)
    router: RouterProcesses | None = None
    driver: Child | None = None
    try:
        router = RouterProcesses(
            workdir, args.redis_url, upstream.base_url, {MODEL: UPSTREAM_MODEL}, args.concurrency
        )
        config = workdir / "aiorouter.toml"
        window = 2 * args.concurrency * args.workers
        with config.open("a") as fh:
            fh.write(f"\n[batches]\nlines_in_flight = {window}\npoll_interval = 0.05\n")
        router.set_workers(args.workers)
        env = {**os.environ, "AIOROUTER_CONFIG": str(config), "REDIS_URL": args.redis_url}
        driver = start_child("batches", [*aiorouter_command(), "batches"], workdir, env)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(_measure(router, args, sizes))
    finally:
        if driver is not None:
            driver.stop()
        if router is not None:
            router.stop()
        upstream.stop()


async def _measure(router: RouterProcesses, args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    clients = args.concurrency * args.workers
    throughput = await _interactive(router.base_url, router.api_key, clients=clients, window_s=sizes.window_s)
    rate = max(1.0, throughput.requests_per_s * sizes.rate_share)
    alone = await _interactive(router.base_url, router.api_key, rate=rate, window_s=sizes.window_s)
    batches = BatchClient(router.base_url, router.api_key)
    try:
        # The drain rate alone (no interactive traffic), then the batch with open-loop interactive load.
        solo = await _batch_with_load(batches, router.base_url, router.api_key, args.redis_url, sizes, 0.0)
        mixed = await _batch_with_load(batches, router.base_url, router.api_key, args.redis_url, sizes, rate)
    finally:
        batches.close()
    return {
        "lines": sizes.lines,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "interactive_throughput_req_per_s": throughput.requests_per_s,
        "batch_drain_lines_per_s": solo["drain_lines_per_s"],
        "drain_vs_interactive": solo["drain_lines_per_s"] / max(1e-9, throughput.requests_per_s),
        "open_loop_rate_req_per_s": rate,
        "interactive_latency_alone_ms": _latency(alone),
        "interactive_latency_with_batch_ms": (mixed["interactive_with_batch"] or {}).get("latency_ms"),
        "batch_alone": solo,
        "batch_with_interactive": mixed,
    }


if __name__ == "__main__":
    raise SystemExit(main())
