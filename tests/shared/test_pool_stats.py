"""shared.pool_stats: the per-pool minute counts the workers write and the operator's figures from them."""

from __future__ import annotations

import redis.asyncio as aredis

from shared import keys, pool_stats
from shared.pool_stats import TTFT_BUCKETS_MS, MinuteCounts, quantile
from shared.redis_commands import replay

OVERFLOW = len(TTFT_BUCKETS_MS)


def buckets(**counts: int) -> list[int]:
    """Bucket counts from ``t<i>=count`` keywords, zero elsewhere."""
    return [counts.get(f"t{i}", 0) for i in range(OVERFLOW + 1)]


def test_ttft_field_puts_a_bound_in_its_own_bucket() -> None:
    """A time equal to a bucket's upper bound counts in that bucket; one just above, in the next; beyond the
    last bound, in the overflow bucket."""
    assert pool_stats.ttft_field(0) == "t0"
    assert pool_stats.ttft_field(10) == "t0"
    assert pool_stats.ttft_field(10.5) == "t1"
    assert pool_stats.ttft_field(1000) == f"t{TTFT_BUCKETS_MS.index(1000)}"
    assert pool_stats.ttft_field(TTFT_BUCKETS_MS[-1] + 1) == f"t{OVERFLOW}"


def test_outcome_field_names_one_disjoint_outcome() -> None:
    """A job whose client went away counts as gone even though it failed; a failure as err; a success by
    its TTFT bucket, or ok without one."""
    assert pool_stats.outcome_field(failed=True, gone=True, ttft_seconds=0.02) == "gone"
    assert pool_stats.outcome_field(failed=True, gone=False, ttft_seconds=0.02) == "err"
    assert pool_stats.outcome_field(failed=False, gone=False, ttft_seconds=0.02) == "t1"
    assert pool_stats.outcome_field(failed=False, gone=False, ttft_seconds=None) == "ok"


def test_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    """Ten samples in (100, 250] ms: the median is halfway through that bucket, p99 near its top."""
    counts = buckets(t4=10)
    assert quantile(counts, 0.5) == 175.0
    assert quantile(counts, 0.99) == 100 + 150 * 9.9 / 10


def test_quantile_separates_a_slow_tail_from_the_median() -> None:
    """99 fast samples and 2 slow ones: p50 stays in the fast bucket, p99 lands in the slow one."""
    counts = buckets(t1=99, t8=2)
    p50, p99 = quantile(counts, 0.5), quantile(counts, 0.99)
    assert p50 is not None and 10 < p50 <= 25
    assert p99 is not None and 2500 < p99 <= 5000


def test_quantile_without_samples_is_none_and_overflow_answers_the_last_bound() -> None:
    """No sample: None; every sample over the last bound: the last bound (nothing larger is known)."""
    assert quantile(buckets(), 0.5) is None
    assert quantile(buckets(**{f"t{OVERFLOW}": 3}), 0.99) == float(TTFT_BUCKETS_MS[-1])


def test_quantile_skips_empty_leading_buckets() -> None:
    """A rank that falls exactly on a bucket's end is answered from that bucket, not from an empty one
    before or after it."""
    counts = buckets(t2=1, t5=1)
    assert quantile(counts, 0.5) == 50.0
    assert quantile(counts, 1.0) == 500.0


def test_summarize_rates_over_the_time_the_window_covers() -> None:
    """Six minutes (five whole and half of the current one) with 55 jobs read 10 a minute; gone jobs count
    as jobs but not in the error rate's denominator; the series lists each minute oldest first."""
    now = 6000 * 60 + 30
    minutes = [MinuteCounts(6000 - 5 + i, tuple(buckets(t3=10))) for i in range(5)]
    minutes.append(MinuteCounts(6000, tuple(buckets()), errors=4, gone=1))
    summary = pool_stats.summarize(minutes, now=now)
    assert summary["jobs"] == 55 and summary["requests_per_minute"] == 10.0
    assert summary["errors"] == 4 and summary["error_rate"] == round(4 / 54, 4)
    assert summary["ttft_p50_ms"] == 75.0
    assert [m["start"] for m in summary["minutes"]] == [m * 60 for m in range(5995, 6001)]
    assert summary["minutes"][-1] == {"start": 6000 * 60, "jobs": 5, "errors": 4}


def test_summarize_of_an_idle_pool_has_no_rates() -> None:
    """Minutes without a job: zero throughput, and no error rate or TTFT rather than a made-up zero."""
    summary = pool_stats.summarize([MinuteCounts(1, tuple(buckets()))], now=90)
    assert summary["requests_per_minute"] == 0.0
    assert summary["error_rate"] is None and summary["ttft_p50_ms"] is None and summary["ttft_p99_ms"] is None


async def test_record_commands_count_into_the_minute_and_expire(store: aredis.Redis) -> None:
    """Two commands per job: the field of its outcome goes up by one in its minute's hash, which expires
    after POOL_MINUTE_TTL; the counts parse back."""
    now = 1_000_000.0
    commands = [
        *pool_stats.record_commands("p", "t3", now=now),
        *pool_stats.record_commands("p", "t3", now=now + 1),
        *pool_stats.record_commands("p", "err", now=now + 2),
    ]
    assert len(commands) == 6
    async with store.pipeline(transaction=False) as pipe:
        replay(pipe, commands)
        await pipe.execute()
    key = keys.pool_minute("p", str(pool_stats.minute_of(now)))
    assert 0 < await store.ttl(key) <= keys.POOL_MINUTE_TTL
    counts = MinuteCounts.parse(pool_stats.minute_of(now), await store.hgetall(key))
    assert counts.buckets[3] == 2 and counts.errors == 1 and counts.jobs == 3
