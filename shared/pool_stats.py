"""Per pool and minute, how its jobs ended and how long their first content took: the operator's live view.

Each job a worker runs adds one to one field of its pool's hash for the current minute
(:func:`shared.keys.pool_minute`, minute = unix time // 60, expiring after ``POOL_MINUTE_TTL``), with two
commands (``HINCRBY``, ``EXPIRE``) in the round trip that writes its end: its final frame
(:func:`workers.completion.complete`), or rq's record of a job the worker stopped.  The fields are disjoint
outcomes, so a minute's jobs are the sum of its fields:

    t<i>   succeeded; its first content came within bucket i of :data:`TTFT_BUCKETS_MS` (the time from the
           worker starting the job to the first content, queueing excluded); ``t<len>`` is over the last
    ok     succeeded without any content to time
    err    failed (upstream error, time limit, circuit open, worker shutdown, ...)
    gone   stopped because nobody waited for the answer any more (not an error of the pool)

:func:`summarize` folds a window of minutes into requests per minute, error rate and TTFT p50/p99, the
percentiles estimated from the buckets by linear interpolation inside the bucket holding the rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared import keys
from shared.redis_commands import Command

TTFT_BUCKETS_MS: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 60000)
"""Upper bounds (inclusive) of the TTFT buckets, in milliseconds; one more bucket holds what is over."""

OK = "ok"
ERROR = "err"
GONE = "gone"
WINDOW_MINUTES = 5
"""Minutes before the current one that the operator's view summarizes (the current, partial one too)."""


def minute_of(now: float) -> int:
    """The minute (unix time // 60) that ``now`` falls in."""
    return int(now // 60)


def ttft_field(ttft_ms: float) -> str:
    """The field of the bucket that a time to first token of ``ttft_ms`` falls in."""
    for index, bound in enumerate(TTFT_BUCKETS_MS):
        if ttft_ms <= bound:
            return f"t{index}"
    return f"t{len(TTFT_BUCKETS_MS)}"


def outcome_field(*, failed: bool, gone: bool, ttft_seconds: float | None) -> str:
    """The one field a job that ended this way counts in."""
    if gone:
        return GONE
    if failed:
        return ERROR
    return OK if ttft_seconds is None else ttft_field(ttft_seconds * 1000)


def record_commands(pool: str, field: str, *, now: float) -> list[Command]:
    """The two commands that count one job of ``pool`` under ``field`` in the minute of ``now``."""
    key = keys.pool_minute(pool, str(minute_of(now)))
    return [(("HINCRBY", key, field, 1), {}), (("EXPIRE", key, keys.POOL_MINUTE_TTL), {})]


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """One pool's jobs of one minute, by outcome."""

    minute: int
    buckets: tuple[int, ...]  # jobs per TTFT bucket, len(TTFT_BUCKETS_MS) + 1
    ok: int = 0
    errors: int = 0
    gone: int = 0

    @property
    def jobs(self) -> int:
        return sum(self.buckets) + self.ok + self.errors + self.gone

    @classmethod
    def parse(cls, minute: int, fields: Mapping[Any, Any]) -> MinuteCounts:
        """From a :func:`shared.keys.pool_minute` hash as Redis returns it (bytes or str); unknown fields
        are ignored."""
        counts = {_text(name): _int(value) for name, value in fields.items()}
        buckets = tuple(counts.get(f"t{i}", 0) for i in range(len(TTFT_BUCKETS_MS) + 1))
        return cls(minute, buckets, counts.get(OK, 0), counts.get(ERROR, 0), counts.get(GONE, 0))


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in milliseconds of the samples counted in ``buckets``; None without
    samples.  Interpolates linearly inside the bucket holding the rank (the first bucket starts at 0);
    a rank in the overflow bucket answers the last bound."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            if index == len(TTFT_BUCKETS_MS):
                return float(TTFT_BUCKETS_MS[-1])
            lower = TTFT_BUCKETS_MS[index - 1] if index else 0
            upper = TTFT_BUCKETS_MS[index]
            return lower + (upper - lower) * max(0.0, rank - below) / count
        below += count
    return float(TTFT_BUCKETS_MS[-1])


def summarize(minutes: Sequence[MinuteCounts], *, now: float) -> dict[str, Any]:
    """The operator's figures over ``minutes`` (the window up to the one of ``now``, oldest first): jobs
    per minute over the time the window covers so far, error rate of the jobs that ended for a reason of
    the pool, TTFT p50/p99, and the per-minute series."""
    buckets = [sum(m.buckets[i] for m in minutes) for i in range(len(TTFT_BUCKETS_MS) + 1)]
    jobs = sum(m.jobs for m in minutes)
    errors = sum(m.errors for m in minutes)
    judged = jobs - sum(m.gone for m in minutes)
    elapsed = max(len(minutes) - 1, 0) + (now % 60) / 60 if minutes else 0.0
    return {
        "jobs": jobs,
        "errors": errors,
        "requests_per_minute": round(jobs / elapsed, 2) if elapsed > 0 else 0.0,
        "error_rate": round(errors / judged, 4) if judged else None,
        "ttft_p50_ms": _rounded(quantile(buckets, 0.5)),
        "ttft_p99_ms": _rounded(quantile(buckets, 0.99)),
        "minutes": [{"start": m.minute * 60, "jobs": m.jobs, "errors": m.errors} for m in minutes],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
