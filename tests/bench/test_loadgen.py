"""The load generator against the simulated upstream over a real socket."""

from __future__ import annotations

import os

import pytest

from bench.loadgen import LoadSpec, run_load
from bench.sim_behaviour import DEFAULT_TOKENS
from bench.upstream import Upstream, start_upstream


async def test_closed_loop_counts_requests_the_upstream_answered(upstream: Upstream) -> None:
    """A counted closed-loop run reports exactly the requests the upstream received, all ok."""
    spec = LoadSpec(upstream.base_url, model="sim?tokens=4", clients=4, requests_per_client=25)
    result = await run_load(spec)
    assert (result.requests, result.ok, result.errors) == (100, 100, {})
    assert upstream.stats.requests == 100
    assert upstream.stats.connections == 4
    assert result.latency_ms is not None and result.latency_ms["p50"] > 0
    assert result.ttft_ms is None


async def test_streams_are_verified_and_chunks_counted(upstream: Upstream) -> None:
    """Streamed answers are checked whole and every content chunk is counted, with a time to first token."""
    spec = LoadSpec(upstream.base_url, model="sim?tokens=50", stream=True, clients=2, requests_per_client=10)
    result = await run_load(spec)
    assert (result.ok, result.errors, result.chunks) == (20, {}, 20 * 50)
    assert result.ttft_ms is not None and result.ttft_ms["p50"] <= result.latency_ms["p50"]  # type: ignore[index]


async def test_usage_chunks_do_not_break_verification(upstream: Upstream) -> None:
    """Streams with ``include_usage`` pass the checks too."""
    spec = LoadSpec(
        upstream.base_url, model="sim?tokens=3", stream=True, include_usage=True, requests_per_client=5
    )
    result = await run_load(spec)
    assert (result.ok, result.errors) == (5, {})


async def test_timed_window_drops_warmup_and_reports_rates(upstream: Upstream) -> None:
    """A timed run counts only the window after warm-up, and its rate is ok requests per window second."""
    spec = LoadSpec(upstream.base_url, clients=2, duration_s=0.5, warmup_s=0.2)
    result = await run_load(spec)
    assert result.ok > 0 and result.errors == {}
    assert upstream.stats.requests > result.ok
    assert result.requests_per_s == pytest.approx(result.ok / 0.5, rel=0.01)


async def test_open_loop_sends_at_the_offered_rate(upstream: Upstream) -> None:
    """An open-loop run starts rate times duration requests, whatever the answers' latency."""
    spec = LoadSpec(upstream.base_url, model="sim?latency_ms=100", rate=40, duration_s=1.0, warmup_s=0)
    result = await run_load(spec)
    assert result.mode == "open"
    assert 38 <= upstream.stats.requests <= 41
    assert result.ok == upstream.stats.requests  # the last ones, finishing after the window, count too
    assert result.errors == {}
    assert result.latency_ms is not None and result.latency_ms["p50"] >= 100


@pytest.mark.parametrize(
    ("model", "stream", "kind"),
    [
        ("sim?status=503", False, "http_503"),
        ("sim?status=429", True, "http_429:rate_limit_exceeded"),
        ("sim?cut=2", True, "disconnected"),
        ("sim?bad_json", True, "bad_json"),
        ("sim?bad_json", False, "bad_json"),
        ("sim?hang", False, "timeout"),
    ],
)
async def test_errors_are_counted_by_kind(upstream: Upstream, model: str, stream: bool, kind: str) -> None:
    """Error statuses, cut streams, malformed JSON and hung requests each count under their own kind."""
    spec = LoadSpec(upstream.base_url, model=model, stream=stream, requests_per_client=3, timeout_s=0.2)
    result = await run_load(spec)
    assert (result.ok, result.errors) == (0, {kind: 3})
    assert bool(result.error_samples) == kind.startswith("http_")


async def test_connect_failures_are_errors_not_crashes() -> None:
    """A closed port shows as connect errors."""
    upstream = await start_upstream()
    url = upstream.base_url
    await upstream.close()
    result = await run_load(LoadSpec(url, duration_s=0.3, warmup_s=0))
    assert result.ok == 0
    assert set(result.errors) == {"connect"}
    counted = await run_load(LoadSpec(url, clients=2, requests_per_client=3))
    assert counted.errors == {"connect": 6}


async def test_watched_processes_report_cpu_and_memory(upstream: Upstream) -> None:
    """Watched pids get CPU seconds and peak RSS over the window; the generator watches itself too."""
    spec = LoadSpec(upstream.base_url, clients=2, duration_s=0.3, warmup_s=0, watch={"me": os.getpid()})
    result = await run_load(spec)
    assert set(result.processes) == {"loadgen", "me"}
    assert result.processes["me"]["cpu_s"] > 0
    assert result.processes["me"]["rss_peak_mib"] > 1


async def test_open_loop_replaces_connections_the_server_closed(upstream: Upstream) -> None:
    """In open loop a dropped connection is not reused: every request of a cut stream opens a new one."""
    spec = LoadSpec(upstream.base_url, model="sim?cut=1", stream=True, rate=20, duration_s=0.5, warmup_s=0)
    result = await run_load(spec)
    assert result.ok == 0
    assert result.errors == {"disconnected": upstream.stats.requests}
    assert upstream.stats.connections == upstream.stats.requests


async def test_peaks_show_how_many_streams_ran_at_once(upstream: Upstream) -> None:
    """Slow streams from 20 clients are all open and all streaming at the same time at their peak."""
    spec = LoadSpec(
        upstream.base_url, model="sim?tokens=10&itl_ms=20", stream=True, clients=20, requests_per_client=1
    )
    result = await run_load(spec)
    assert (result.ok, result.peak_in_flight, result.peak_streaming) == (20, 20, 20)


def test_the_expected_answer_follows_the_model_the_router_knows() -> None:
    """A benchmark catalog id (``bench/sim-tokens-50``, what AIOrouter serves) expects the tokens of the
    behaviour it names, as the simulated upstream's own name does; ``--tokens`` overrides both."""
    url = "http://127.0.0.1:1/v1"
    assert LoadSpec(url, model="bench/sim-tokens-50").expected_tokens == 50
    assert LoadSpec(url, model="bench/sim-tokens-600-itl_ms-50").expected_tokens == 600
    assert LoadSpec(url, model="sim?tokens=50").expected_tokens == 50
    assert LoadSpec(url, model="bench/sim").expected_tokens == DEFAULT_TOKENS
    assert LoadSpec(url, model="bench/sim-tokens-50", tokens=7).expected_tokens == 7
