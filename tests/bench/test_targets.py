"""The performance targets are computed from the runs as bench.targets defines them."""

from __future__ import annotations

import os
from typing import Any

from bench.markdown_table import render
from bench.report import summarize, time_breakdown
from bench.targets import check_targets, compare_with_relay

MACHINE = {"date": "d", "cpu": "c", "cores": 2, "kernel": "k", "python": "p", "redis": "r", "commit": "x"}
CONFIG: dict[str, Any] = {"repeat": 1, "warmup_s": 1.0, "duration_s": 5.0, "slow_repeat": 1}
CONFIG |= {"slow_stream_s": 30.0, "command": "python -m bench.run"}


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


SCALING_NONSTREAM = "Non-stream at 64 clients over 1, 2, 4 worker processes"


def by_name(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {check.name: check for check in check_targets(runs)}


def test_added_latency_pairs_each_repeat_with_its_direct_run() -> None:
    """Added latency is AIOrouter minus direct per repeat; the median decides the target (the relay's
    added p50 of 1.5 ms plus 1 ms: met by 2.5 ms; its p99 of 1.5 ms plus 3 ms: missed by 10.5 ms)."""
    runs = []
    for repeat, (direct, ours) in enumerate([(50.0, 52.0), (51.0, 55.0), (50.0, 52.5)]):
        runs.append(run("open100_lat50", "direct", repeat, latency_ms={"p50": direct, "p99": direct + 1}))
        runs.append(run("open100_lat50", "aiorouter", repeat, latency_ms={"p50": ours, "p99": ours + 8}))
        relay = direct + 1.5
        runs.append(run("open100_lat50", "relay", repeat, latency_ms={"p50": relay, "p99": relay + 1}))
    checks = by_name(runs)
    p50 = checks["Added latency p50, 100 req/s, 50 ms upstream"]
    assert p50.met is True
    assert p50.measured.startswith("2.50 ms (2.00")
    assert checks["Added latency p99, 100 req/s, 50 ms upstream"].met is False


def test_throughput_target_fails_on_errors_even_when_fast() -> None:
    """Enough requests per second with any error does not meet the non-stream target."""
    relay = run("nonstream_c64", "relay", 0, requests_per_s=400.0)
    fast = run("nonstream_c64", "aiorouter", 0, requests_per_s=1200.0)
    faulty = run("nonstream_c64", "aiorouter", 0, requests_per_s=1200.0, errors={"http_503": 1})
    assert by_name([fast, relay])["Non-stream at 64 clients"].met is True
    assert by_name([faulty, relay])["Non-stream at 64 clients"].met is False


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


def _machine_share(share: float) -> dict[str, Any]:
    """Processes using ``share`` of this machine's cores together."""
    cores = len(os.sched_getaffinity(0))
    return {
        "worker-1": {"cpu_percent": 100.0 * cores * share * 0.75},
        "loadgen": {"cpu_percent": 100.0 * cores * share * 0.25},
    }


def _scaling_runs(
    rates: tuple[float, float, float], shares: tuple[float, float, float]
) -> list[dict[str, Any]]:
    names = ("nonstream_c64", "scaling_nonstream_c64_w2", "scaling_nonstream_c64_w4")
    return [
        run(name, "aiorouter", 0, requests_per_s=rate, processes=_machine_share(share))
        for name, rate, share in zip(names, rates, shares, strict=True)
    ]


def test_scaling_reads_one_worker_from_the_main_scenario() -> None:
    """Scaling compares the 1-worker main scenario with the 2- and 4-worker ones, each with the share of
    the machine's CPU its run used."""
    check = by_name(_scaling_runs((500.0, 800.0, 790.0), (0.5, 0.9, 0.95)))[SCALING_NONSTREAM]
    assert check.met is True  # grew from 1 to 2; 2 had spent the CPU, and 4 held its throughput
    cores = len(os.sched_getaffinity(0))
    assert (
        check.measured
        == f"1: 500 req/s, CPU 50%; 2: 800 req/s, CPU 90%; 4: 790 req/s, CPU 95% (of {cores} cores)"
    )


def test_scaling_must_grow_while_the_cpu_is_not_spent() -> None:
    """A step that does not grow counts against the target unless it and the step before both spent the
    CPU, and even then it must hold the throughput within the noise."""
    assert by_name(_scaling_runs((500.0, 800.0, 790.0), (0.5, 0.6, 0.7)))[SCALING_NONSTREAM].met is False
    assert by_name(_scaling_runs((1000.0, 980.0, 960.0), (0.9, 0.95, 0.95)))[SCALING_NONSTREAM].met is True
    assert by_name(_scaling_runs((1000.0, 700.0, 690.0), (0.9, 0.95, 0.95)))[SCALING_NONSTREAM].met is False
    # the larger step left the CPU idle and lost throughput: a stall, not a spent machine
    assert by_name(_scaling_runs((1000.0, 950.0, 940.0), (0.9, 0.7, 0.7)))[SCALING_NONSTREAM].met is False


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
    page = render(MACHINE, CONFIG, summarize(runs), check_targets(runs))
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
    page = render(MACHINE, CONFIG, summarize(runs), check_targets(runs))
    assert "| stream50_c64 | aiorouter \\* |" in page
    assert "ingress 40, loadgen 95, worker-1 30, worker-2 20 (aiorouter 90) |" in page


def relay_comparison_runs() -> list[dict[str, Any]]:
    """One repeat of every key scenario for direct, AIOrouter and the relay."""
    runs = [
        run("nonstream_c64", "aiorouter", 0, requests_per_s=300.0),
        run("nonstream_c64", "relay", 0, requests_per_s=500.0),
        run("stream50_c16", "aiorouter", 0, stream=True, chunks_per_s=9000.0),
        run("stream50_c16", "relay", 0, stream=True, chunks_per_s=12000.0, errors={"no_done": 1}),
    ]
    for target, p50, p99 in (("direct", 50.0, 52.0), ("aiorouter", 56.0, 70.0), ("relay", 52.0, 52.0)):
        runs.append(run("open100_lat50", target, 0, latency_ms={"p50": p50, "p99": p99}))
    for target, ttft in (("direct", 0.2), ("aiorouter", 6.2), ("relay", 2.2)):
        runs.append(run("ttft_c1", target, 0, stream=True, ttft_ms={"p50": ttft}))
    return runs


def test_relay_comparison_sets_each_key_figure_beside_the_relays() -> None:
    """Throughputs compare as measured and latencies as added over direct, each with AIOrouter/relay."""
    compared = {c.name: c for c in compare_with_relay(relay_comparison_runs())}
    nonstream = compared["Non-stream at 64 clients"]
    assert (nonstream.aiorouter, nonstream.relay, nonstream.ratio) == ("300 req/s", "500 req/s", "0.60")
    stream = compared["50-token streams at 16 clients"]
    assert (stream.relay, stream.ratio) == ("12,000 chunks/s, 1 errors", "0.75")
    p50 = compared["Added latency p50, 100 req/s, 50 ms upstream"]
    assert (p50.aiorouter, p50.relay, p50.ratio) == ("6.00 ms", "2.00 ms", "3.00")
    ttft = compared["Time to first token at 1 client, over direct"]
    assert (ttft.aiorouter, ttft.relay, ttft.ratio) == ("6.00 ms", "2.00 ms", "3.00")


def test_relay_ratio_is_left_out_when_the_relay_adds_no_latency() -> None:
    """A relay figure of zero or less has no meaningful ratio, so none is shown."""
    compared = {c.name: c for c in compare_with_relay(relay_comparison_runs())}
    p99 = compared["Added latency p99, 100 req/s, 50 ms upstream"]
    assert (p99.aiorouter, p99.relay, p99.ratio) == ("18.0 ms", "0.00 ms", "-")


def test_page_renders_the_relay_section_and_the_relay_column_of_targets() -> None:
    """The page compares with the relay in its own section and beside each target, and lists relay rows."""
    runs = relay_comparison_runs()
    page = render(MACHINE, CONFIG, summarize(runs), check_targets(runs), compare_with_relay(runs))
    assert "## Against the pass-through relay, same run" in page
    assert "| Non-stream at 64 clients | 300 req/s | 500 req/s | 0.60 |" in page
    assert (
        "| Non-stream at 64 clients | ≥ 1.5x the relay (moonshot ≥ 1,000 req/s) "
        "| 300 req/s, 0 errors | **no** |" in page
    )
    assert "| **no** | 500 req/s |" in page
    assert "| nonstream_c64 | relay | 500 |" in page


def test_page_without_relay_runs_has_no_relay_section() -> None:
    """A suite run without the relay shows no comparison section and '-' for the relay beside targets."""
    runs = [run("nonstream_c64", "aiorouter", 0, requests_per_s=300.0)]
    assert compare_with_relay(runs) == []
    page = render(MACHINE, CONFIG, summarize(runs), check_targets(runs), compare_with_relay(runs))
    assert "Against the pass-through relay" not in page
    assert "| 300 req/s, relay not measured | not measured | - |" in page


def test_targets_against_the_relay_use_its_figure_from_the_same_run() -> None:
    """Throughput targets are multiples of the relay's and latency targets the relay's plus a margin; without
    the relay's runs they are not measured, though AIOrouter's figure is shown."""
    runs = relay_comparison_runs()
    runs += [run("nonstream_c1", "aiorouter", 0, requests_per_s=400.0), run("nonstream_c1", "relay", 0)]
    checks = by_name(runs)
    assert checks["Non-stream at 64 clients"].met is False  # 300 < 1.5 x 500
    assert checks["Non-stream at 1 client"].met is True  # 400 ≥ 100
    assert checks["Added latency p50, 100 req/s, 50 ms upstream"].met is False  # 6 > 2 + 1
    assert checks["Time to first token at 1 client, over direct"].met is False  # 6 > 2
    alone = by_name([run("nonstream_c1", "aiorouter", 0, requests_per_s=400.0)])["Non-stream at 1 client"]
    assert (alone.met, alone.measured) == (None, "400 req/s, relay not measured")


def test_slow_streams_time_to_first_token_is_its_own_target() -> None:
    """The 2,000 slow streams must also start quickly: their TTFT p50 at most one second."""
    slow = run("slow_streams", "aiorouter", 0, clients=2000, requests=2000, peak_streaming=2000)
    slow["result"]["ttft_ms"] = {"p50": 4200.0}
    check = by_name([slow])["2,000 concurrent slow streams: time to first token p50"]
    assert (check.met, check.measured) == (False, "4,200 ms")


def test_breakdown_shows_the_median_server_timing_beside_the_clients_p50() -> None:
    """The page's breakdown lists each Server-Timing entry's median over repeats, in the request's order."""
    runs = [
        run(
            "nonstream_c1", "aiorouter", repeat, server_timing_ms={"total": total, "admit": 0.5, "prep": 0.25}
        )
        for repeat, total in enumerate((3.0, 4.0, 5.0))
    ]
    (row,) = time_breakdown(runs)
    assert row["entries"] == {"admit": 0.5, "prep": 0.25, "total": 4.0}
    page = render(MACHINE, CONFIG, summarize(runs), check_targets(runs), (), time_breakdown(runs))
    assert "| scenario | client p50 | admit | prep | total |" in page
    assert "| nonstream_c1 | 50.00 | 0.50 | 0.25 | 4.00 |" in page


def test_cpu_per_request_counts_the_systems_processes_only() -> None:
    """AIOrouter's ingress, workers and Redis (or the relay) per request answered; the load generator
    and the upstream are not the system measured."""
    cpu = lambda **percents: {name: {"cpu_percent": p} for name, p in percents.items()}  # noqa: E731
    ours = cpu(ingress=50.0, **{"worker-1": 80.0, "worker-2": 10.0}, redis=20.0, loadgen=90.0, upstream=40.0)
    runs = [
        run("nonstream_c64", "aiorouter", 0, requests_per_s=1000.0, processes=ours),
        run("nonstream_c64", "relay", 0, requests_per_s=250.0, processes=cpu(relay=100.0, loadgen=5.0)),
        run("stream50_c16", "aiorouter", 0, requests_per_s=0.0, processes=ours),
        run("stream50_c16", "relay", 0, requests_per_s=500.0, processes={}),
        run("nonstream_c1", "aiorouter", 0, requests_per_s=500.0, processes=ours),
        run("nonstream_c1", "relay", 0, requests_per_s=1000.0, processes=cpu(relay=90.0, loadgen=9.0)),
    ]
    compared = {c.name: c for c in compare_with_relay(runs)}
    one_client = compared["CPU per request, non-stream at 1 client"]
    assert (one_client.aiorouter, one_client.relay, one_client.ratio) == ("3.20 ms", "0.90 ms", "3.56")
    per_request = compared["CPU per request, non-stream at 64 clients"]
    assert (per_request.aiorouter, per_request.relay, per_request.ratio) == ("1.60 ms", "4.00 ms", "0.40")
    per_stream = compared["CPU per 50-token stream at 16 clients"]  # nothing answered, nothing watched
    assert (per_stream.aiorouter, per_stream.relay, per_stream.ratio) == ("-", "-", "-")
