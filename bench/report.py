"""Turn the runs of a suite into its results file and markdown table (medians, min-max over repeats)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from bench.handoff import measure_handoff
from bench.proc_stats import local_redis_pid
from bench.scenarios import AIOROUTER

Run = dict[str, Any]
Metric = Callable[[dict[str, Any]], float | None]


def redis_pid(redis_url: str) -> int | None:
    """The pid of the Redis at ``redis_url`` when it runs on this machine (its CPU is then measured)."""
    try:
        client = redis.Redis.from_url(redis_url)
        info = client.info("server")
        host = client.connection_pool.connection_kwargs.get("host")
        client.close()
    except redis.RedisError:
        return None
    return local_redis_pid(info, host)


def describe_machine(redis_url: str) -> dict[str, Any]:
    """CPU model, cores, kernel, Python and Redis versions, the commit measured, and what a hand-off
    to Redis costs on this machine (:mod:`bench.handoff`, measured when called: the suite calls it once
    its scenarios are done and the machine is idle)."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        client = redis.Redis.from_url(redis_url)
        redis_version = str(client.info("server").get("redis_version", "unknown"))
        client.close()
    except redis.RedisError:
        redis_version = "unreachable"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "commit": commit.stdout.strip() or "unknown",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "handoff": measure_handoff(redis_url),
    }


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def show(stats: dict[str, float] | None, unit: str = "") -> str:
    if stats is None:
        return "-"
    median, low, high = (_number(stats[k]) for k in ("median", "min", "max"))
    return f"{median}{unit} ({low}\N{EN DASH}{high})" if low != high else f"{median}{unit}"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def _latency(key: str, which: str) -> Metric:
    return lambda result: result[key][which] if result.get(key) else None


REQUESTS_PER_S: Metric = lambda result: result["requests_per_s"]  # noqa: E731
CHUNKS_PER_S: Metric = lambda result: result["chunks_per_s"] if result["stream"] else None  # noqa: E731
COLUMNS: dict[str, Metric] = {
    "req/s": REQUESTS_PER_S,
    "chunks/s": CHUNKS_PER_S,
    "p50 ms": _latency("latency_ms", "p50"),
    "p99 ms": _latency("latency_ms", "p99"),
    "ttft p50 ms": _latency("ttft_ms", "p50"),
}


def group(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    grouped: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        grouped[(run["scenario"], run["target"])].append(run)
    return grouped


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per scenario and target: every column's spread, errors and median CPU per process."""
    rows = []
    for (scenario, target), repeats in group(runs).items():
        results = [run["result"] for run in repeats]
        errors, samples = _errors_of(results)
        row = {"scenario": scenario, "title": repeats[0]["title"], "target": target, "repeats": len(results)}
        row |= {"columns": {name: spread([metric(r) for r in results]) for name, metric in COLUMNS.items()}}
        row |= {"errors": errors, "error_samples": samples, "requests": sum(r["requests"] for r in results)}
        row |= {"cpu_percent": _median_cpu(results)}
        rows.append(row)
    return rows


def _errors_of(results: Sequence[dict[str, Any]]) -> tuple[dict[str, int], dict[str, str]]:
    """Errors by kind summed over repeats, and the first message seen of each kind."""
    errors: dict[str, int] = defaultdict(int)
    samples: dict[str, str] = {}
    for result in results:
        for kind, count in result["errors"].items():
            errors[kind] += count
        for kind, text in result.get("error_samples", {}).items():
            samples.setdefault(kind, text)
    return dict(errors), samples


def _median_cpu(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    percents: dict[str, list[float]] = defaultdict(list)
    for result in results:
        for name, usage in result["processes"].items():
            percents[name].append(usage["cpu_percent"])
    return {name: statistics.median(percents[name]) for name in sorted(percents)}


SERVER_TIMING_ORDER = ("admit", "enqueue", "pickup", "prep", "upstream", "upstream-total", "total")
"""The ``Server-Timing`` entries AIOrouter sends, in the order a request spends them."""
BREAKDOWN_SCENARIOS = ("nonstream_c1", "open100_lat50", "ttft_c1")


def time_breakdown(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per scenario of :data:`BREAKDOWN_SCENARIOS` that AIOrouter ran: the median over repeats of each
    ``Server-Timing`` entry's per-run median, beside the client's own p50 (latency, or time to first
    token for a stream)."""
    rows = []
    for scenario in BREAKDOWN_SCENARIOS:
        repeats = [r for r in runs if r["scenario"] == scenario and r["target"] == AIOROUTER]
        timed = [r["result"].get("server_timing_ms") or {} for r in repeats]
        if not any(timed):
            continue
        client_key = "ttft_ms" if repeats[0]["result"]["stream"] else "latency_ms"
        client = [r["result"][client_key]["p50"] for r in repeats if r["result"].get(client_key)]
        entries = {
            name: statistics.median(values)
            for name in SERVER_TIMING_ORDER
            if (values := [t[name] for t in timed if name in t])
        }
        row = {"scenario": scenario, "title": repeats[0]["title"], "stream": repeats[0]["result"]["stream"]}
        rows.append(
            row | {"client_p50_ms": statistics.median(client) if client else None, "entries": entries}
        )
    return rows
