"""The paired comparison of two stacks, against two simulated upstreams over real sockets."""

from __future__ import annotations

from bench.loadgen import LoadSpec
from bench.paired import WARMUP_PAIRS, Side, compare
from bench.upstream import start_upstream


async def test_pairs_alternate_between_the_stacks_and_are_summarised() -> None:
    """Every pair sends one checked request to each stack (plus the warm-up); the report has both
    stacks' percentiles and the median difference of the pairs."""
    first, second = await start_upstream(), await start_upstream()
    try:
        a = Side("a", LoadSpec(first.base_url, model="sim?tokens=5", stream=True))
        b = Side("b", LoadSpec(second.base_url, model="sim?tokens=5", stream=True))
        report = await compare(a, b, pairs=30, gap=0.0)
    finally:
        await first.close()
        await second.close()
    assert first.stats.requests == second.stats.requests == 30 + WARMUP_PAIRS
    assert len(a.samples) == len(b.samples) == 30
    assert all(0 < content <= whole for content, whole in a.samples + b.samples)
    assert report["pairs"] == 30 and set(report) >= {"a", "b", "a_less_b_ms"}
    assert isinstance(report["a_less_b_ms"], dict) and "first_content_median" in report["a_less_b_ms"]
