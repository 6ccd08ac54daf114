"""Issue 5's targets are computed from the runs the way the issue defines them."""

from __future__ import annotations

from typing import Any

from bench.markdown_table import render
from bench.report import summarize
from bench.targets import check_targets


def result(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "clients": 1,
        "stream": False,
        "requests": 10,
        "errors": {},
        "requests_per_s": 100.0,
        "chunks_per_s": 0.0,
        "latency_ms": {"p50": 50.0, "p90": 51.0, "p99": 52.0, "mean": 50.0, "max": 53.0},
        "ttft_ms": None,
        "peak_in_flight": 1,
        "peak_streaming": 1,
        "processes": {},
    }
    return base | overrides


def run(scenario: str, target: str, repeat: int, **overrides: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "title": scenario,
        "target": target,
        "repeat": repeat,
        "rss_baseline_mib": {},
        "result": result(**overrides),
    }


def by_name(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {check.name: check for check in check_targets(runs)}


def test_added_latency_pairs_each_repeat_with_its_direct_run() -> None:
    """Added latency is AIOrouter minus direct per repeat; the median decides the target."""
    runs = []
    for repeat, (direct, ours) in enumerate([(50.0, 52.0), (51.0, 55.0), (50.0, 52.5)]):
        runs.append(run("open100_lat50", "direct", repeat, latency_ms={"p50": direct, "p99": direct + 1}))
        runs.append(run("open100_lat50", "aiorouter", repeat, latency_ms={"p50": ours, "p99": ours + 8}))
    checks = by_name(runs)
    p50 = checks["Added latency p50, 100 req/s, 50 ms upstream"]
    assert p50.met is True
    assert p50.measured.startswith("2.50 ms (2.00")
    assert checks["Added latency p99, 100 req/s, 50 ms upstream"].met is False


def test_throughput_target_fails_on_errors_even_when_fast() -> None:
    """Enough requests per second with any error does not meet the non-stream target."""
    fast = run("nonstream_c64", "aiorouter", 0, requests_per_s=1200.0)
    faulty = run("nonstream_c64", "aiorouter", 0, requests_per_s=1200.0, errors={"http_503": 1})
    assert by_name([fast])["Non-stream at 64 clients"].met is True
    assert by_name([faulty])["Non-stream at 64 clients"].met is False


def test_rss_per_stream_counts_growth_of_ingress_and_worker_only() -> None:
    """RSS per stream is the peak growth of ingress and worker over their idle size, divided by streams."""
    slow = run(
        "slow_streams",
        "aiorouter",
        0,
        clients=2000,
        requests=2000,
        peak_streaming=2000,
        processes={
            "ingress": {"rss_peak_mib": 150.0},
            "worker-1": {"rss_peak_mib": 140.0},
            "upstream": {"rss_peak_mib": 900.0},
        },
    )
    slow["rss_baseline_mib"] = {"ingress": 50.0, "worker-1": 40.0, "upstream": 30.0}
    checks = by_name([slow])
    assert checks["2,000 concurrent slow streams: RSS per stream"].measured == "102 KiB"
    assert checks["2,000 concurrent slow streams: RSS per stream"].met is False
    assert checks["2,000 concurrent slow streams: errors"].met is True


def test_unmeasured_targets_say_so() -> None:
    """Without runs every target is reported as not measured rather than met or missed."""
    assert all(check.met is None and check.measured == "not measured" for check in check_targets([]))


def test_scaling_reads_one_worker_from_the_main_scenario() -> None:
    """Scaling compares the 1-worker main scenario with the 2- and 4-worker ones."""
    runs = [
        run("nonstream_c64", "aiorouter", 0, requests_per_s=500.0),
        run("scaling_nonstream_c64_w2", "aiorouter", 0, requests_per_s=800.0),
        run("scaling_nonstream_c64_w4", "aiorouter", 0, requests_per_s=790.0),
    ]
    check = by_name(runs)["Non-stream at 64 clients over 1, 2, 4 worker processes"]
    assert check.met is True
    assert check.measured == "1: 500 req/s; 2: 800 req/s; 4: 790 req/s"


def test_summary_and_markdown_show_medians_ranges_and_errors() -> None:
    """The table row of a scenario shows the median with its range and the errors of every repeat."""
    runs = [
        run("nonstream_c1", "direct", 0, requests_per_s=100.0, processes={"upstream": {"cpu_percent": 10.0}}),
        run("nonstream_c1", "direct", 1, requests_per_s=300.0, errors={"timeout": 2}, processes={}),
        run("nonstream_c1", "direct", 2, requests_per_s=200.0, processes={"upstream": {"cpu_percent": 30.0}}),
    ]
    (row,) = summarize(runs)
    assert row["columns"]["req/s"] == {"median": 200.0, "min": 100.0, "max": 300.0}
    assert row["errors"] == {"timeout": 2}
    assert row["cpu_percent"] == {"upstream": 20.0}
    machine = {"date": "d", "cpu": "c", "cores": 2, "kernel": "k", "python": "p", "redis": "r", "commit": "x"}
    config: dict[str, Any] = {"repeat": 3, "warmup_s": 1.0, "duration_s": 5.0, "slow_repeat": 3}
    config |= {"slow_stream_s": 30.0, "command": "python -m bench.run"}
    page = render(machine, config, summarize(runs), check_targets(runs))
    assert "| nonstream_c1 | direct | 200 (100\N{EN DASH}300) | - |" in page
    assert "timeout: 2" in page


def test_slow_streams_that_never_ran_together_miss_the_target() -> None:
    """Zero errors is not enough when the streams were not all streaming at the same time."""
    slow = run("slow_streams", "aiorouter", 0, clients=2000, requests=2000, peak_streaming=700)
    check = by_name([slow])["2,000 concurrent slow streams: errors"]
    assert check.met is False
    assert check.measured == "0 of 2000 streams; at most 700 streamed at once"


def test_table_marks_load_generator_bound_rows_and_sums_aiorouter_cpu() -> None:
    """A row whose load generator was saturated is starred; AIOrouter's processes get a CPU total."""
    usage = {"loadgen": {"cpu_percent": 95.0}, "ingress": {"cpu_percent": 40.0}}
    usage |= {"worker-1": {"cpu_percent": 30.0}, "worker-2": {"cpu_percent": 20.0}}
    runs = [run("stream50_c64", "aiorouter", 0, processes=usage)]
    config: dict[str, Any] = {"repeat": 1, "warmup_s": 1.0, "duration_s": 5.0, "slow_repeat": 1}
    config |= {"slow_stream_s": 30.0, "command": "python -m bench.run"}
    machine = {"date": "d", "cpu": "c", "cores": 2, "kernel": "k", "python": "p", "redis": "r", "commit": "x"}
    page = render(machine, config, summarize(runs), check_targets(runs))
    assert "| stream50_c64 | aiorouter \\* |" in page
    assert "ingress 40, loadgen 95, worker-1 30, worker-2 20 (aiorouter 90) |" in page
