"""Issue 5's targets for AIOrouter with 1 ingress + 1 worker process, checked against a suite's runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import CHUNKS_PER_S, REQUESTS_PER_S, Metric, Run, show, spread
from bench.scenarios import AIOROUTER, DIRECT, SCALING_WORKERS


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target: what was asked, what was measured, and whether it was met (None: not measured)."""

    name: str
    goal: str
    measured: str
    met: bool | None


def _runs(runs: Sequence[Run], scenario: str, target: str) -> list[Run]:
    return sorted(
        (r for r in runs if r["scenario"] == scenario and r["target"] == target), key=lambda r: r["repeat"]
    )


def _values(runs: Sequence[Run], scenario: str, target: str, metric: Metric) -> list[float]:
    values = (metric(r["result"]) for r in _runs(runs, scenario, target))
    return [v for v in values if v is not None]


def _errors(runs: Sequence[Run], scenario: str, target: str = AIOROUTER) -> int:
    return sum(sum(r["result"]["errors"].values()) for r in _runs(runs, scenario, target))


def _over_direct(runs: Sequence[Run], scenario: str, key: str, which: str) -> list[float]:
    """Per repeat, AIOrouter's figure minus the direct one (the repeats ran back to back)."""
    direct = {r["repeat"]: r["result"] for r in _runs(runs, scenario, DIRECT)}
    added = []
    for run in _runs(runs, scenario, AIOROUTER):
        base = direct.get(run["repeat"])
        if base is not None and base.get(key) and run["result"].get(key):
            added.append(run["result"][key][which] - base[key][which])
    return added


def _at_least(name: str, goal: str, values: list[float], floor: float, unit: str, errors: int) -> TargetCheck:
    if not values:
        return TargetCheck(name, goal, "not measured", None)
    measured = show(spread(values), unit) + (f", {errors} errors" if errors else ", 0 errors")
    return TargetCheck(name, goal, measured, statistics.median(values) >= floor and errors == 0)


def _at_most(name: str, goal: str, values: list[float], ceiling: float) -> TargetCheck:
    if not values:
        return TargetCheck(name, goal, "not measured", None)
    return TargetCheck(name, goal, show(spread(values), " ms"), statistics.median(values) <= ceiling)


def check_targets(runs: Sequence[Run]) -> list[TargetCheck]:
    checks = [
        _at_least(
            "Non-stream at 64 clients",
            "≥ 700 req/s (moonshot ≥ 1,000)",
            _values(runs, "nonstream_c64", AIOROUTER, REQUESTS_PER_S),
            700,
            " req/s",
            _errors(runs, "nonstream_c64"),
        ),
        _at_least(
            "50-token streams at 16 clients",
            "≥ 25,000 chunks/s, every chunk in order",
            _values(runs, "stream50_c16", AIOROUTER, CHUNKS_PER_S),
            25_000,
            " chunks/s",
            _errors(runs, "stream50_c16"),
        ),
        _at_most(
            "Added latency p50, 100 req/s, 50 ms upstream",
            "≤ 3 ms",
            _over_direct(runs, "open100_lat50", "latency_ms", "p50"),
            3,
        ),
        _at_most(
            "Added latency p99, 100 req/s, 50 ms upstream",
            "≤ 6 ms",
            _over_direct(runs, "open100_lat50", "latency_ms", "p99"),
            6,
        ),
        _at_most(
            "Time to first token at 1 client, over direct",
            "≤ 3 ms",
            _over_direct(runs, "ttft_c1", "ttft_ms", "p50"),
            3,
        ),
    ]
    return checks + _slow_stream_checks(runs) + _scaling_checks(runs)


def _slow_stream_checks(runs: Sequence[Run]) -> list[TargetCheck]:
    repeats = _runs(runs, "slow_streams", AIOROUTER)
    if not repeats:
        missing = "not measured"
        return [
            TargetCheck("2,000 concurrent slow streams: errors", "0, all streaming at once", missing, None),
            TargetCheck(
                "2,000 concurrent slow streams: RSS per stream", "< 100 KiB (ingress + worker)", missing, None
            ),
        ]
    errors = _errors(runs, "slow_streams")
    requests = sum(r["result"]["requests"] for r in repeats)
    per_stream = [_rss_per_stream_kib(run) for run in repeats]
    concurrent = min(r["result"]["peak_streaming"] for r in repeats)
    measured = f"{errors} of {requests} streams; at most {concurrent} streamed at once"
    return [
        TargetCheck(
            "2,000 concurrent slow streams: errors",
            "0, all streaming at once",
            measured,
            errors == 0 and concurrent >= repeats[0]["result"]["clients"],
        ),
        TargetCheck(
            "2,000 concurrent slow streams: RSS per stream",
            "< 100 KiB (ingress + worker)",
            show(spread(per_stream), " KiB"),
            statistics.median(per_stream) < 100,
        ),
    ]


def _rss_per_stream_kib(run: Run) -> float:
    """Peak RSS growth of the ingress and worker over their idle size, per stream streaming at the peak."""
    result: dict[str, Any] = run["result"]
    grown = 0.0
    for name, baseline in run["rss_baseline_mib"].items():
        if name != "upstream" and name in result["processes"]:
            grown += result["processes"][name]["rss_peak_mib"] - baseline
    return float(grown * 1024 / max(result["peak_streaming"], 1))


def _scaling_checks(runs: Sequence[Run]) -> list[TargetCheck]:
    goal = "grows until the CPU is spent"
    return [
        _scaling_check(
            runs,
            "Non-stream at 64 clients over 1, 2, 4 worker processes",
            goal,
            "nonstream_c64",
            REQUESTS_PER_S,
            " req/s",
        ),
        _scaling_check(
            runs,
            "50-token streams at 16 clients over 1, 2, 4 worker processes",
            goal,
            "stream50_c16",
            CHUNKS_PER_S,
            " chunks/s",
        ),
    ]


def _scaling_check(
    runs: Sequence[Run], name: str, goal: str, base: str, metric: Metric, unit: str
) -> TargetCheck:
    per_workers = {
        workers: _values(runs, base if workers == 1 else f"scaling_{base}_w{workers}", AIOROUTER, metric)
        for workers in SCALING_WORKERS
    }
    if not all(per_workers.values()):
        return TargetCheck(name, goal, "not measured", None)
    medians = {workers: statistics.median(values) for workers, values in per_workers.items()}
    measured = "; ".join(
        f"{workers}: {show(spread(values), unit)}" for workers, values in per_workers.items()
    )
    return TargetCheck(name, goal, measured, medians[2] > medians[1])
