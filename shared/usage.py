"""Usage: one record per request, and per-day per-model totals for reports.

:func:`usage_commands` append the record to the account's stream and to the operators' stream (both
trimmed, ``XADD MAXLEN ~``) and adds it to the account's hash for that UTC day
(:func:`shared.keys.usage_daily`, fields ``<model>|<counter>``); a worker sends these commands in the
round trip that publishes the job's final frame.  The day hashes expire after
:data:`shared.keys.USAGE_DAILY_TTL`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import redis.asyncio as aredis

from shared import keys
from shared.lua import LuaScript, ScriptCall
from shared.redis_commands import Command

OK = "ok"
"""The status of a request that completed; any other status (an error code, :data:`CLIENT_CLOSED`) counts
as an error in the daily totals."""
CLIENT_CLOSED = "client_closed"
"""The status of a request whose client left after a worker started its job: charged for what the job
produced until it was stopped (:mod:`workers.settlement`)."""

MAX_REPORT_DAYS = 366
FIRST_DAY = date(1970, 1, 1)
"""The earliest day a report may name: usage is stamped with Unix time, and a report of N days ending on
any day from here to ``date.max`` stays inside what ``datetime.date`` can hold."""
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
COUNTERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micros",
    "latency_ms",
)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    request_id: str
    account_id: str
    key_id: str
    model: str
    provider: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    latency_ms: int
    status: str
    at: float  # unix seconds when the request ended
    cached_tokens: int = 0  # of prompt_tokens, read from the upstream's cache (priced as cached input)
    reasoning_tokens: int = 0  # of completion_tokens, spent reasoning

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).date().isoformat()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_fields(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in _RECORD_FIELDS}  # scalars: no asdict's deep copy

    @classmethod
    def from_fields(cls, data: Mapping[Any, Any]) -> UsageRecord:
        text = {_text(k): _text(v) for k, v in data.items()}
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = text.get(spec.name, "")
            if spec.type == "int":
                values[spec.name] = int(raw or 0)
            elif spec.type == "float":
                values[spec.name] = float(raw or 0)
            else:
                values[spec.name] = raw
        return cls(**values)


_RECORD_FIELDS = tuple(spec.name for spec in fields(UsageRecord))


@dataclass(frozen=True, slots=True)
class DailyModelUsage:
    day: str  # YYYY-MM-DD, UTC
    model: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    latency_ms: int = 0  # summed; divide by requests for the mean

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def usage_commands(record: UsageRecord) -> list[Command]:
    """The commands that append one request's record to the account's stream and to the operators'
    stream and add it to its day's totals, built as raw commands (they ride in the round trip of a job's
    final frame, so they are built without a pipeline object)."""
    daily_key = keys.usage_daily(record.account_id, record.day)
    entry: list[str] = []
    for pair in record.to_fields().items():
        entry += pair
    increments = (
        ("requests", 1),
        ("errors", 0 if record.status == OK else 1),
        ("prompt_tokens", record.prompt_tokens),
        ("completion_tokens", record.completion_tokens),
        ("cached_tokens", record.cached_tokens),
        ("reasoning_tokens", record.reasoning_tokens),
        ("cost_micros", record.cost_micros),
        ("latency_ms", record.latency_ms),
    )
    commands: list[Command] = [
        (("XADD", stream, "MAXLEN", "~", str(maxlen), "*", *entry), {})
        for stream, maxlen in (
            (keys.usage_records(record.account_id), keys.USAGE_RECORDS_MAXLEN),
            (keys.USAGE_ALL_RECORDS, keys.USAGE_ALL_RECORDS_MAXLEN),
        )
    ]
    commands += [
        (("HINCRBY", daily_key, f"{record.model}|{counter}", amount), {})
        for counter, amount in increments
        if amount
    ]
    commands.append((("EXPIRE", daily_key, keys.USAGE_DAILY_TTL), {}))
    return commands


USAGE_CHARGED: Final = LuaScript.load("usage_charged")


def charged_usage_call(record: UsageRecord, reservation_key: str) -> ScriptCall:
    """:func:`usage_commands` as one script call that writes, in place of ``record``'s cost, what the
    settlement of the reservation at ``reservation_key`` charged (it must run before, in the same round
    trip): 0 when the hold had been released already, less than the tokens' cost when the balance could
    not cover it all."""
    cost_field = f"{record.model}|cost_micros"
    flat: list[Any] = []
    positions: list[int] = []
    for args, _ in usage_commands(record):
        flat.append(len(args))
        first = len(flat) + 1  # the 1-based position of args[0]
        if args[0] == "XADD":  # XADD key [MAXLEN ~ N] * field value ...: the value after cost_micros
            pairs = args.index("*", 2) + 1
            positions += [first + j + 1 for j in range(pairs, len(args) - 1, 2) if args[j] == "cost_micros"]
        elif args[0] == "HINCRBY" and args[2] == cost_field:
            positions.append(first + 3)
        flat.extend(args)
    ttl = keys.CREDIT_RESERVATION_TOMBSTONE_TTL
    return ScriptCall(USAGE_CHARGED, [reservation_key], [ttl, len(positions), *positions, *flat])


async def recent_usage(
    redis: aredis.Redis, account_id: str | None = None, *, count: int = 100
) -> list[UsageRecord]:
    """The most recent records, newest first: one account's, or (``account_id`` None) everyone's."""
    stream = keys.usage_records(account_id) if account_id is not None else keys.USAGE_ALL_RECORDS
    rows = await redis.xrevrange(stream, count=count)
    return [UsageRecord.from_fields(data or {}) for _, data in rows or ()]


def parse_day(text: str) -> date:
    """A UTC day written ``YYYY-MM-DD`` in ASCII digits, from :data:`FIRST_DAY` on; ValueError otherwise."""
    if not _DAY.fullmatch(text):
        raise ValueError(f"{text[:40]!r} is not a date written YYYY-MM-DD")
    day = date.fromisoformat(text)
    if day < FIRST_DAY:
        raise ValueError(f"{text} is before {FIRST_DAY.isoformat()}")
    return day


def days_between(start: date, end: date) -> list[date]:
    """Every day from ``start`` to ``end`` inclusive; at most :data:`MAX_REPORT_DAYS`."""
    if end < start:
        raise ValueError("the report ends before it starts")
    count = (end - start).days + 1
    if count > MAX_REPORT_DAYS:
        raise ValueError(f"a report covers at most {MAX_REPORT_DAYS} days")
    return [start + timedelta(days=n) for n in range(count)]


async def daily_usage(redis: aredis.Redis, account_id: str, start: date, end: date) -> list[DailyModelUsage]:
    """Per-day per-model totals of one account, by day then model; days without usage are left out."""
    days = days_between(start, end)
    async with redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(keys.usage_daily(account_id, day.isoformat()))
        rows = await pipe.execute()
    report: list[DailyModelUsage] = []
    for day, row in zip(days, rows, strict=True):
        report.extend(_day_rows(day.isoformat(), row))
    return report


def totals_by_model(rows: Iterable[DailyModelUsage]) -> list[DailyModelUsage]:
    """The rows of a report summed per model over its days (``day`` is left empty)."""
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        model_totals = totals.setdefault(row.model, dict.fromkeys(COUNTERS, 0))
        for counter in COUNTERS:
            model_totals[counter] += getattr(row, counter)
    return [DailyModelUsage(day="", model=model, **counts) for model, counts in sorted(totals.items())]


def _day_rows(day: str, row: Mapping[Any, Any]) -> list[DailyModelUsage]:
    per_model: dict[str, dict[str, int]] = {}
    for field, value in row.items():
        model, _, counter = _text(field).rpartition("|")
        if counter in COUNTERS:
            per_model.setdefault(model, {})[counter] = int(value)
    return [DailyModelUsage(day=day, model=model, **counts) for model, counts in sorted(per_model.items())]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
