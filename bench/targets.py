"""AIOrouter's performance targets with 1 ingress + 1 worker process, checked against a suite's runs, and
its key figures beside the pass-through relay's from the same run.

Most targets are set against the relay measured in the same run (a ratio, or the relay's figure plus a
margin), since absolute times move with the box; without the relay's runs those are "not measured"."""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import CHUNKS_PER_S, REQUESTS_PER_S, Metric, Run, show, spread
from bench.scenarios import AIOROUTER, DIRECT, RELAY, SCALING_WORKERS


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target: what was asked, what was measured, and whether it was met (None: not measured)."""

    name: str
    goal: str
    measured: str
    met: bool | None
    relay: str = "-"  # the relay's figure in the same run, where it has one


@dataclass(frozen=True, slots=True)
class RelayComparison:
    """One key figure of AIOrouter and of the relay in the same run; ratio: AIOrouter's median over the
    relay's ("-" when either is missing, or the relay's is not above zero)."""

    name: str
    aiorouter: str
    relay: str
    ratio: str


@dataclass(frozen=True, slots=True)
class Figure:
    """A key figure of one scenario: per repeat of a target, a throughput or a latency added over direct."""

    name: str
    scenario: str
    unit: str
    values: Callable[[Sequence[Run], str], list[float]]  # (runs, target) -> one value per repeat


def _runs(runs: Sequence[Run], scenario: str, target: str) -> list[Run]:
    return sorted(
        (r for r in runs if r["scenario"] == scenario and r["target"] == target), key=lambda r: r["repeat"]
    )


def _values(runs: Sequence[Run], scenario: str, target: str, metric: Metric) -> list[float]:
    values = (metric(r["result"]) for r in _runs(runs, scenario, target))
    return [v for v in values if v is not None]


def _errors(runs: Sequence[Run], scenario: str, target: str = AIOROUTER) -> int:
    return sum(sum(r["result"]["errors"].values()) for r in _runs(runs, scenario, target))


def _over_direct(runs: Sequence[Run], scenario: str, key: str, which: str, target: str) -> list[float]:
    """Per repeat, the target's figure minus the direct one (the repeats ran back to back)."""
    direct = {r["repeat"]: r["result"] for r in _runs(runs, scenario, DIRECT)}
    added = []
    for run in _runs(runs, scenario, target):
        base = direct.get(run["repeat"])
        if base is not None and base.get(key) and run["result"].get(key):
            added.append(run["result"][key][which] - base[key][which])
    return added


def _throughput(name: str, scenario: str, metric: Metric, unit: str) -> Figure:
    return Figure(name, scenario, unit, lambda runs, target: _values(runs, scenario, target, metric))


def _added_latency(name: str, scenario: str, key: str, which: str) -> Figure:
    return Figure(
        name, scenario, " ms", lambda runs, target: _over_direct(runs, scenario, key, which, target)
    )


NONSTREAM_C1 = _throughput("Non-stream at 1 client", "nonstream_c1", REQUESTS_PER_S, " req/s")
NONSTREAM_C64 = _throughput("Non-stream at 64 clients", "nonstream_c64", REQUESTS_PER_S, " req/s")
STREAM50_C16 = _throughput("50-token streams at 16 clients", "stream50_c16", CHUNKS_PER_S, " chunks/s")
ADDED_P50 = _added_latency(
    "Added latency p50, 100 req/s, 50 ms upstream", "open100_lat50", "latency_ms", "p50"
)
ADDED_P99 = _added_latency(
    "Added latency p99, 100 req/s, 50 ms upstream", "open100_lat50", "latency_ms", "p99"
)
TTFT_ADDED = _added_latency("Time to first token at 1 client, over direct", "ttft_c1", "ttft_ms", "p50")
SYSTEM_PROCESSES = ("ingress", "worker-", "redis", "relay")
"""The processes of the system measured (AIOrouter's, with its Redis when local; the relay), not the load
generator's nor the upstream's."""


def cpu_ms_per_request(result: dict[str, Any]) -> float | None:
    """CPU milliseconds the system's processes spent together per request answered (a stream counts
    once): how much of the machine one request takes, whatever the processes it crosses."""
    rate = float(result.get("requests_per_s") or 0.0)
    processes: dict[str, dict[str, float]] = result.get("processes", {})
    cpu = [usage["cpu_percent"] for name, usage in processes.items() if name.startswith(SYSTEM_PROCESSES)]
    if rate <= 0 or not cpu:
        return None
    return round(sum(cpu) / 100.0 / rate * 1000.0, 3)


NONSTREAM_C1_CPU = _throughput(
    "CPU per request, non-stream at 1 client", "nonstream_c1", cpu_ms_per_request, " ms"
)
NONSTREAM_C64_CPU = _throughput(
    "CPU per request, non-stream at 64 clients", "nonstream_c64", cpu_ms_per_request, " ms"
)
STREAM50_C16_CPU = _throughput(
    "CPU per 50-token stream at 16 clients", "stream50_c16", cpu_ms_per_request, " ms"
)
KEY_FIGURES = (NONSTREAM_C1, NONSTREAM_C64, STREAM50_C16, ADDED_P50, ADDED_P99, TTFT_ADDED)
CPU_FIGURES = (NONSTREAM_C1_CPU, NONSTREAM_C64_CPU, STREAM50_C16_CPU)
SLOW_TTFT_GOAL_MS = 1000.0


def _cell(figure: Figure, runs: Sequence[Run], target: str) -> str:
    """The target's figure with its range, and its errors when it had any ("-": not measured)."""
    values = figure.values(runs, target)
    errors = _errors(runs, figure.scenario, target)
    return show(spread(values), figure.unit) + (f", {errors} errors" if values and errors else "")


def _at_least(figure: Figure, goal: str, floor: float, runs: Sequence[Run]) -> TargetCheck:
    values, relay = figure.values(runs, AIOROUTER), _cell(figure, runs, RELAY)
    if not values:
        return TargetCheck(figure.name, goal, "not measured", None, relay)
    errors = _errors(runs, figure.scenario)
    measured = show(spread(values), figure.unit) + f", {errors} errors"
    return TargetCheck(figure.name, goal, measured, statistics.median(values) >= floor and errors == 0, relay)


def _at_most(figure: Figure, goal: str, ceiling: float, runs: Sequence[Run]) -> TargetCheck:
    values, relay = figure.values(runs, AIOROUTER), _cell(figure, runs, RELAY)
    if not values:
        return TargetCheck(figure.name, goal, "not measured", None, relay)
    measured = show(spread(values), figure.unit)
    return TargetCheck(figure.name, goal, measured, statistics.median(values) <= ceiling, relay)


def _times_relay(figure: Figure, goal: str, factor: float, runs: Sequence[Run]) -> TargetCheck:
    """AIOrouter's throughput at least ``factor`` times the relay's, same run, without errors."""
    relay = figure.values(runs, RELAY)
    if not relay:
        return TargetCheck(
            figure.name, goal, _measured_or_not(figure, runs), None, _cell(figure, runs, RELAY)
        )
    return _at_least(figure, goal, factor * statistics.median(relay), runs)


def _relay_plus(figure: Figure, goal: str, margin: float, runs: Sequence[Run]) -> TargetCheck:
    """AIOrouter's added latency at most the relay's, same run, plus ``margin`` milliseconds."""
    relay = figure.values(runs, RELAY)
    if not relay:
        return TargetCheck(
            figure.name, goal, _measured_or_not(figure, runs), None, _cell(figure, runs, RELAY)
        )
    return _at_most(figure, goal, statistics.median(relay) + margin, runs)


def _measured_or_not(figure: Figure, runs: Sequence[Run]) -> str:
    values = figure.values(runs, AIOROUTER)
    return show(spread(values), figure.unit) + ", relay not measured" if values else "not measured"


def check_targets(runs: Sequence[Run]) -> list[TargetCheck]:
    checks = [
        _times_relay(NONSTREAM_C64, "≥ 1.5x the relay (moonshot ≥ 1,000 req/s)", 1.5, runs),
        _times_relay(STREAM50_C16, "≥ 2x the relay, every chunk in order", 2.0, runs),
        _times_relay(NONSTREAM_C1, "≥ the relay", 1.0, runs),
        _relay_plus(ADDED_P50, "≤ the relay + 1 ms", 1.0, runs),
        _relay_plus(ADDED_P99, "≤ the relay + 3 ms", 3.0, runs),
        _at_most(TTFT_ADDED, "≤ 2 ms", 2.0, runs),
    ]
    return checks + _slow_stream_checks(runs) + _scaling_checks(runs)


def compare_with_relay(runs: Sequence[Run]) -> list[RelayComparison]:
    """Every key figure of AIOrouter beside the relay's, or nothing when the relay was not measured."""
    if not any(run["target"] == RELAY for run in runs):
        return []
    comparisons = []
    for figure in (*KEY_FIGURES, *CPU_FIGURES):
        ours, relay = figure.values(runs, AIOROUTER), figure.values(runs, RELAY)
        ratio = "-"
        if ours and relay and statistics.median(relay) > 0:
            ratio = f"{statistics.median(ours) / statistics.median(relay):.2f}"
        cells = _cell(figure, runs, AIOROUTER), _cell(figure, runs, RELAY)
        comparisons.append(RelayComparison(figure.name, *cells, ratio))
    return comparisons


def _slow_stream_checks(runs: Sequence[Run]) -> list[TargetCheck]:
    errors_name = "2,000 concurrent slow streams: errors"
    ttft_name = "2,000 concurrent slow streams: time to first token p50"
    rss_name = "2,000 concurrent slow streams: RSS per stream"
    errors_goal, ttft_goal, rss_goal = "0, all streaming at once", "≤ 1 s", "< 100 KiB (ingress + worker)"
    repeats = _runs(runs, "slow_streams", AIOROUTER)
    if not repeats:
        missing = "not measured"
        return [
            TargetCheck(errors_name, errors_goal, missing, None),
            TargetCheck(ttft_name, ttft_goal, missing, None),
            TargetCheck(rss_name, rss_goal, missing, None),
        ]
    errors = _errors(runs, "slow_streams")
    requests = sum(r["result"]["requests"] for r in repeats)
    per_stream = [_rss_per_stream_kib(run) for run in repeats]
    concurrent = min(r["result"]["peak_streaming"] for r in repeats)
    measured = f"{errors} of {requests} streams; at most {concurrent} streamed at once"
    ttfts = [r["result"]["ttft_ms"]["p50"] for r in repeats if r["result"].get("ttft_ms")]
    ttft_check = TargetCheck(ttft_name, ttft_goal, "not measured", None)
    if ttfts:
        ttft_check = TargetCheck(
            ttft_name, ttft_goal, show(spread(ttfts), " ms"), statistics.median(ttfts) <= SLOW_TTFT_GOAL_MS
        )
    return [
        TargetCheck(
            errors_name, errors_goal, measured, errors == 0 and concurrent >= repeats[0]["result"]["clients"]
        ),
        ttft_check,
        TargetCheck(
            rss_name, rss_goal, show(spread(per_stream), " KiB"), statistics.median(per_stream) < 100
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


CPU_SPENT = 0.85
"""Share of the machine's cores in use (every process of the run: the system, the load generator, the
upstream) from which adding a worker process can no longer add throughput."""
SCALING_NOISE = 0.9
"""Once the CPU is spent, a step keeps at least this share of the throughput before it: fewer is a loss."""


def machine_cpu_share(result: dict[str, Any], cores: int) -> float:
    """The share of the machine's ``cores`` a run's processes used together."""
    processes: dict[str, dict[str, float]] = result.get("processes", {})
    return sum(usage["cpu_percent"] for usage in processes.values()) / (100.0 * cores)


def _scaling_check(
    runs: Sequence[Run], name: str, goal: str, base: str, metric: Metric, unit: str
) -> TargetCheck:
    """Each step to more worker processes grows the throughput, unless both it and the step before it
    spent the machine's CPU (then it must hold it, within :data:`SCALING_NOISE`)."""
    scenarios = {
        workers: base if workers == 1 else f"scaling_{base}_w{workers}" for workers in SCALING_WORKERS
    }
    per_workers = {
        workers: _values(runs, scenario, AIOROUTER, metric) for workers, scenario in scenarios.items()
    }
    if not all(per_workers.values()):
        return TargetCheck(name, goal, "not measured", None)
    medians = {workers: statistics.median(values) for workers, values in per_workers.items()}
    cores = len(os.sched_getaffinity(0))  # the cores this process, and the suite's, may run on
    spent = {
        workers: statistics.median(
            machine_cpu_share(r["result"], cores) for r in _runs(runs, scenario, AIOROUTER)
        )
        for workers, scenario in scenarios.items()
    }
    steps = list(itertools.pairwise(SCALING_WORKERS))
    met = all(
        medians[more] > medians[fewer]
        or (min(spent[fewer], spent[more]) >= CPU_SPENT and medians[more] >= SCALING_NOISE * medians[fewer])
        for fewer, more in steps
    )
    measured = "; ".join(
        f"{workers}: {show(spread(values), unit)}, CPU {spent[workers]:.0%}"
        for workers, values in per_workers.items()
    )
    return TargetCheck(name, goal, measured + f" (of {cores} cores)", met)
