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
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.load_record import percentiles
from bench.loadgen import LoadSpec, run_load
from bench.processes import Child, RouterProcesses, UpstreamProcess, aiorouter_command, start_child
from bench.upstream import event_loop_factory

MODEL = "bench/sim"
UPSTREAM_MODEL = "sim?tokens=16&latency_ms=20"
FINAL = ("completed", "failed", "expired", "cancelled")
DISTURBED_CPU = 10.0  # % of one core the rest of the machine may use during a window that counts


@dataclass(frozen=True, slots=True)
class Sizes:
    lines: int
    window_s: float  # each interactive measurement window
    rate_share: float  # open-loop interactive rate, as a share of the measured interactive throughput
    rounds: int  # interactive windows beside a batch (with one more alone than beside)


FULL = Sizes(lines=10_000, window_s=20.0, rate_share=0.5, rounds=3)
QUICK = Sizes(lines=300, window_s=3.0, rate_share=0.5, rounds=1)


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


def _box_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat", "rb") as fh:
        ticks = [int(field) for field in fh.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


async def _box_cpu_percent(warmup_s: float, window_s: float) -> float:
    """The machine's CPU use over the measured window, in % of one core (200 is all of two cores)."""
    await asyncio.sleep(warmup_s)
    busy, total = _box_ticks()
    await asyncio.sleep(window_s)
    busy_end, total_end = _box_ticks()
    return round(100.0 * (os.cpu_count() or 1) * (busy_end - busy) / max(1, total_end - total), 1)


def _window(result: Any) -> dict[str, Any]:
    """One interactive window's figures: latency, requests answered, the CPU each watched process used,
    and the CPU the machine's other processes used meanwhile (``other``)."""
    cpu = {name: usage["cpu_percent"] for name, usage in result.processes.items() if name != "box"}
    if "box" in result.processes:
        cpu["other"] = round(result.processes["box"]["cpu_percent"] - sum(cpu.values()), 1)
    return {
        "latency_ms": _latency(result),
        "ok": result.ok,
        "requests": result.requests,
        "errors": result.errors,
        "cpu_percent": cpu,
        "server_timing_ms": result.server_timing_ms,
    }


async def _interactive(
    base_url: str,
    api_key: str,
    *,
    clients: int = 0,
    rate: float = 0.0,
    window_s: float,
    watch: dict[str, int] | None = None,
) -> Any:
    spec = LoadSpec(
        base_url=base_url, model=MODEL, tokens=16, clients=max(1, clients), rate=rate,
        duration_s=window_s, warmup_s=min(2.0, window_s / 3), api_key=api_key, watch=watch or {},
    )  # fmt: skip
    box = asyncio.create_task(_box_cpu_percent(spec.warmup_s, spec.duration_s))
    result = await run_load(spec)
    result.processes["box"] = {"cpu_percent": await box}
    return result


def _used_memory(memory: redis.Redis) -> int:
    return int(memory.info("memory")["used_memory"])


async def _batch_with_load(
    batches: BatchClient,
    base_url: str,
    api_key: str,
    redis_url: str,
    sizes: Sizes,
    rate: float,
    watch: dict[str, int],
) -> dict[str, Any]:
    memory = redis.Redis.from_url(redis_url)
    baseline = _used_memory(memory)
    peak = baseline
    batch_id = batches.start(sizes.lines)
    load = (
        asyncio.create_task(_interactive(base_url, api_key, rate=rate, window_s=sizes.window_s, watch=watch))
        if rate > 0
        else None
    )
    batch = await asyncio.to_thread(batches.get, batch_id)
    while batch["status"] not in FINAL:  # both looks in threads: the load generator's loop never waits
        peak = max(peak, await asyncio.to_thread(_used_memory, memory))
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
        "load": loaded,
        "redis_used_memory_baseline_mib": baseline / 2**20,
        "redis_used_memory_peak_mib": peak / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few hundred lines and short windows")
    parser.add_argument("--lines", type=int, help="lines in the batch (default 10,000; --quick 300)")
    parser.add_argument("--rounds", type=int, help="windows beside a batch (default 3; --quick 1)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--rate", type=float, default=0.0,
        help="open-loop interactive rate in req/s (default: half the closed-loop throughput, measured once)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-setting", action="append", default=[], metavar="NAME=VALUE",
        help="a [batches] setting for this run, as TOML (diagnosis; e.g. yield_floor=0)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-driver-during-load",
        action="store_true",
        help="diagnosis: SIGSTOP the batch driver while the interactive load runs beside the batch",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.lines:
        sizes = Sizes(args.lines, sizes.window_s, sizes.rate_share, sizes.rounds)
    if args.rounds:
        sizes = Sizes(sizes.lines, sizes.window_s, sizes.rate_share, args.rounds)
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
        settings = "".join(f"{setting}\n" for setting in args.batch_setting)
        with config.open("a") as fh:
            fh.write(f"\n[batches]\nlines_in_flight = {window}\npoll_interval = 0.05\n{settings}")
        router.set_workers(args.workers)
        env = {**os.environ, "AIOROUTER_CONFIG": str(config), "REDIS_URL": args.redis_url}
        driver = start_child("batches", [*aiorouter_command(), "batches"], workdir, env)
        with redis.Redis.from_url(args.redis_url) as client:
            redis_pid = int(client.info("server")["process_id"])
        watch = {
            **router.pids, "batches": driver.pid, "upstream": upstream.child.pid, "redis": redis_pid
        }  # fmt: skip
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(_measure(router, driver, watch, args, sizes))
    finally:
        if driver is not None:
            driver.stop()
        if router is not None:
            router.stop()
        upstream.stop()


async def _measure(
    router: RouterProcesses, driver: Child, watch: dict[str, int], args: argparse.Namespace, sizes: Sizes
) -> dict[str, Any]:
    """The pool's capacity (closed loop, once) and the batch's drain rate alone; then, at one open-loop
    rate, interactive windows alone and beside a batch in turn (alone, batch, alone, ..., alone), so
    both conditions meet the same offered load and the same drift of the machine over the run.  A window
    the rest of the machine disturbed (:func:`_disturbed`) does not count: another pair is run instead,
    up to twice as many pairs in all."""
    clients = args.concurrency * args.workers
    for _ in range(3):
        throughput = await _interactive(
            router.base_url, router.api_key, clients=clients, window_s=sizes.window_s, watch=watch
        )
        if not _disturbed(throughput):
            break
    rate = args.rate or max(1.0, throughput.requests_per_s * sizes.rate_share)
    batches = BatchClient(router.base_url, router.api_key)
    alone: list[Any] = []
    beside: list[Any] = []
    mixed: list[dict[str, Any]] = []

    async def interactive_alone() -> None:
        alone.append(await _interactive(
            router.base_url, router.api_key, rate=rate, window_s=sizes.window_s, watch=watch
        ))  # fmt: skip

    def quiet(results: list[Any]) -> int:
        return sum(1 for result in results if not _disturbed(result))

    try:
        solo = await _batch_with_load(
            batches, router.base_url, router.api_key, args.redis_url, sizes, 0.0, watch
        )
        await interactive_alone()
        for _ in range(2 * sizes.rounds):
            if quiet(alone) > sizes.rounds and quiet(beside) >= sizes.rounds:
                break
            stopper = (
                asyncio.create_task(_stop_during_load(driver, sizes))
                if args.stop_driver_during_load
                else None
            )
            try:
                run = await _batch_with_load(
                    batches, router.base_url, router.api_key, args.redis_url, sizes, rate, watch
                )
            finally:
                if stopper is not None:
                    stopper.cancel()
                    os.kill(driver.pid, signal.SIGCONT)
            beside.append(run.pop("load"))
            mixed.append(run)
            await interactive_alone()
    finally:
        batches.close()
    without, with_batch = _pooled(alone), _pooled(beside)
    disturbed = [result for result in (throughput, *alone, *beside) if _disturbed(result)]
    enough = not _disturbed(throughput) and quiet(alone) > sizes.rounds and quiet(beside) >= sizes.rounds
    return {
        "lines": sizes.lines,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "rounds": sizes.rounds,
        "window_s": sizes.window_s,
        "batch_settings": args.batch_setting,
        "driver_stopped_during_load": args.stop_driver_during_load,
        "quiet": enough,  # the capacity window and every window counted were undisturbed, as many as asked
        "disturbed_windows": len(disturbed),  # left out of the percentiles (kept below, flagged)
        "interactive_throughput_req_per_s": throughput.requests_per_s,
        "interactive_throughput_cpu_percent": _window(throughput)["cpu_percent"],
        "batch_drain_lines_per_s": solo["drain_lines_per_s"],
        "drain_vs_interactive": solo["drain_lines_per_s"] / max(1e-9, throughput.requests_per_s),
        "open_loop_rate_req_per_s": rate,
        "interactive_latency_alone_ms": without,
        "interactive_latency_with_batch_ms": with_batch,
        "p50_change": _change(without, with_batch, "p50"),
        "p99_change": _change(without, with_batch, "p99"),
        # the same from the median of the counted windows' own p99s: one slow window cannot carry it
        "p99_change_window_median": _change(_median_p99(alone), _median_p99(beside), "p99"),
        "redis_peak_over_baseline_mib": max(  # each batch's peak over Redis' memory when it started
            run["redis_used_memory_peak_mib"] - run["redis_used_memory_baseline_mib"]
            for run in (solo, *mixed)
        ),
        "windows_alone": [_window(result) | {"disturbed": _disturbed(result)} for result in alone],
        "windows_with_batch": [_window(result) | {"disturbed": _disturbed(result)} for result in beside],
        "batch_alone": solo,
        "batches_with_interactive": mixed,
    }


def _disturbed(result: Any) -> bool:
    """Whether the rest of the machine used more than ``DISTURBED_CPU`` % of a core during the window."""
    return bool(_window(result)["cpu_percent"].get("other", 0.0) > DISTURBED_CPU)


def _pooled(results: list[Any]) -> dict[str, float] | None:
    """Percentiles over every request of the undisturbed windows together (of all, if every one was)."""
    counted = [result for result in results if not _disturbed(result)] or results
    return percentiles([sample for result in counted for sample in result.latency_samples_s])


def _median_p99(results: list[Any]) -> dict[str, float] | None:
    counted = [result for result in results if not _disturbed(result)] or results
    values = [result.latency_ms["p99"] for result in counted if result.latency_ms]
    return {"p99": statistics.median(values)} if values else None


def _change(without: dict[str, float] | None, with_batch: dict[str, float] | None, name: str) -> float | None:
    if not without or not with_batch:
        return None
    return with_batch[name] / without[name] - 1.0


async def _stop_during_load(driver: Child, sizes: Sizes) -> None:
    """Diagnosis: once lines run, stop the driver from the interactive window's start to its end."""
    await asyncio.sleep(min(2.0, sizes.window_s / 3))
    os.kill(driver.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(sizes.window_s)
    finally:
        os.kill(driver.pid, signal.SIGCONT)


if __name__ == "__main__":
    raise SystemExit(main())
