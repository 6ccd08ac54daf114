"""Usage records and per-day per-model reports, on the real Redis and on fakeredis."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import redis.asyncio as aredis

from shared import keys, usage
from shared.redis_commands import Command
from shared.usage import DailyModelUsage, UsageRecord
from tests.store_calls import record_usage

DAY1 = datetime(2026, 6, 1, 23, 59, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 6, 2, 0, 1, tzinfo=UTC).timestamp()


def make_record(
    n: int, *, account: str = "acct_u", model: str = "m/a", status: str = "ok", at: float = DAY1
) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{n}",
        account_id=account,
        key_id="key_1",
        model=model,
        provider="simulated",
        prompt_tokens=10 * n,
        completion_tokens=n,
        cost_micros=3 * n,
        latency_ms=100 + n,
        status=status,
        at=at,
    )


async def test_records_come_back_newest_first_per_account_and_overall(store: aredis.Redis) -> None:
    """Each record is readable, intact, from its account's stream and from the operators' stream."""
    first, second = make_record(1), make_record(2, account="acct_v")
    await record_usage(store, first)
    await record_usage(store, second)
    assert await usage.recent_usage(store, "acct_u") == [first]
    assert await usage.recent_usage(store, "acct_v") == [second]
    assert await usage.recent_usage(store) == [second, first]
    assert await usage.recent_usage(store, count=1) == [second]


async def test_daily_report_sums_per_day_and_model(store: aredis.Redis) -> None:
    """Records land in their UTC day and model; errors are counted apart; other accounts do not leak in."""
    for record in (
        make_record(1),
        make_record(2),
        make_record(3, model="m/b", status="upstream_timeout"),
        make_record(4, at=DAY2),
        make_record(5, account="acct_other"),
    ):
        await record_usage(store, record)
    report = await usage.daily_usage(store, "acct_u", date(2026, 5, 31), date(2026, 6, 3))
    assert report == [
        DailyModelUsage("2026-06-01", "m/a", requests=2, errors=0, prompt_tokens=30, completion_tokens=3,
                        cost_micros=9, latency_ms=203),
        DailyModelUsage("2026-06-01", "m/b", requests=1, errors=1, prompt_tokens=30, completion_tokens=3,
                        cost_micros=9, latency_ms=103),
        DailyModelUsage("2026-06-02", "m/a", requests=1, errors=0, prompt_tokens=40, completion_tokens=4,
                        cost_micros=12, latency_ms=104),
    ]  # fmt: skip
    totals = usage.totals_by_model(report)
    assert [(t.model, t.requests, t.prompt_tokens, t.cost_micros) for t in totals] == [
        ("m/a", 3, 70, 21),
        ("m/b", 1, 30, 9),
    ]
    assert await usage.daily_usage(store, "acct_u", date(2026, 6, 3), date(2026, 6, 9)) == []
    ttl = await store.ttl(keys.usage_daily("acct_u", "2026-06-01"))
    assert keys.USAGE_DAILY_TTL - 10 < ttl <= keys.USAGE_DAILY_TTL


async def test_streams_stay_bounded(store: aredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record streams are trimmed near their maximum length instead of growing without end."""
    monkeypatch.setattr(keys, "USAGE_RECORDS_MAXLEN", 10)
    monkeypatch.setattr(keys, "USAGE_ALL_RECORDS_MAXLEN", 20)
    for n in range(600):
        await record_usage(store, make_record(n))
    assert await store.xlen(keys.usage_records("acct_u")) < 200
    assert await store.xlen(keys.USAGE_ALL_RECORDS) < 200
    report = await usage.daily_usage(store, "acct_u", date(2026, 6, 1), date(2026, 6, 1))
    assert report[0].requests == 600


def test_report_ranges_are_checked() -> None:
    """A report runs forwards and covers at most a year and a day."""
    assert len(usage.days_between(date(2026, 1, 1), date(2026, 1, 31))) == 31
    with pytest.raises(ValueError):
        usage.days_between(date(2026, 2, 1), date(2026, 1, 1))
    with pytest.raises(ValueError):
        usage.days_between(date(2025, 1, 1), date(2026, 1, 3))


def test_record_round_trips_through_stream_fields() -> None:
    """A record's stream fields (all strings) read back into an equal record."""
    record = make_record(7, model="odd|model")
    as_bytes = {k.encode(): v.encode() for k, v in record.to_fields().items()}
    assert UsageRecord.from_fields(as_bytes) == record
    assert record.day == "2026-06-01"


def test_usage_commands_are_what_redis_py_would_send() -> None:
    """The hand-built commands match redis-py's own XADD/HINCRBY/EXPIRE for the same record, on the wire:
    what the records and reports read back does not depend on which builds them."""
    from shared.rq_bridge import recorded, recording_pipeline

    for record in (make_record(3), make_record(0, status="upstream_error")):
        pipe = recording_pipeline()
        entry: dict[Any, Any] = record.to_fields()
        for stream, maxlen in (
            (keys.usage_records(record.account_id), keys.USAGE_RECORDS_MAXLEN),
            (keys.USAGE_ALL_RECORDS, keys.USAGE_ALL_RECORDS_MAXLEN),
        ):
            pipe.xadd(stream, entry, maxlen=maxlen, approximate=True)
        daily = keys.usage_daily(record.account_id, record.day)
        errors = 0 if record.status == usage.OK else 1
        counters = {
            "requests": 1,
            "errors": errors,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens,
            "reasoning_tokens": record.reasoning_tokens,
            "cost_micros": record.cost_micros,
            "latency_ms": record.latency_ms,
        }
        for counter, amount in counters.items():
            if amount:
                pipe.hincrby(daily, f"{record.model}|{counter}", amount)
        pipe.expire(daily, keys.USAGE_DAILY_TTL)
        assert _wire(usage.usage_commands(record)) == _wire(recorded(pipe))


def _wire(commands: list[Command]) -> list[list[bytes]]:
    """Each command's arguments as the bytes Redis receives (str as UTF-8, numbers in decimal)."""
    return [[a if isinstance(a, bytes) else str(a).encode() for a in args] for args, _ in commands]
