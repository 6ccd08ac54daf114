"""Redis writes made the way production makes them, for tests that need one outside a request.

Each helper is production's own sequence, not a second implementation: the ingress makes its script calls
with :func:`shared.lua.run_together` (the rate limit and the credit hold in one round trip), a worker's
guarded provider makes its breaker and routing-statistics calls the same way, and a worker queues its
end-of-job writes on a recording pipeline and replays them in one pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aredis

from shared import ratelimit, usage
from shared.breaker import BreakerDecision, CircuitBreaker, decision_of
from shared.credits import PendingReservation, Reservation
from shared.errors import UpstreamUnavailable
from shared.lua import ScriptCall, run_together
from shared.ratelimit import RateLimitDecision
from shared.redis_commands import Command, replay
from shared.settings import Settings


async def hold_credit(
    redis: aredis.Redis, settings: Settings, account_id: str, amount: int, *, ttl: float | None = None
) -> Reservation:
    """Hold ``amount`` micro-USD as admission does (a :class:`PendingReservation`), or raise 402."""
    pending = PendingReservation.prepare(settings, account_id, amount, ttl=ttl)
    [reply] = await run_together(redis, [pending.call])
    return pending.outcome(reply)


async def count_request(
    redis: aredis.Redis,
    settings: Settings,
    *,
    account_id: str,
    key_plan: str,
    api_key_digest: str | None = None,
    tokens: int = 0,
    counted: bool = True,
) -> RateLimitDecision:
    """Count one request against its account's limits as admission does (not ``counted``: only read
    them), and read the decision."""
    call = ratelimit.check_call(
        settings,
        account_id=account_id,
        key_plan=key_plan,
        api_key_digest=api_key_digest,
        tokens=tokens,
        counted=counted,
    )
    [reply] = await run_together(redis, [call])
    return ratelimit.decision_from_reply(reply)


async def run_calls(redis: aredis.Redis, *calls: ScriptCall | None) -> list[Any]:
    """Make script calls in one round trip as a worker's guarded provider does (None: nothing to make)."""
    return await run_together(redis, [call for call in calls if call is not None])


async def run_commands(redis: aredis.Redis, commands: Iterable[Command]) -> None:
    """Send commands in one pipeline, as a worker sends a job's final round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        replay(pipe, commands)
        await pipe.execute()


async def record_usage(redis: aredis.Redis, record: usage.UsageRecord) -> None:
    """Write one usage record and its day's totals as a worker does at the end of a job."""
    await run_commands(redis, usage.usage_commands(record))


class RecordedFailure(NamedTuple):
    """The breaker's reply to one recorded failure."""

    status: str  # "closed" or "open"
    failures: int  # failures in the window (0 once open)
    retry_after: float  # seconds until a probe may go through (0 while closed)


async def allow(redis: aredis.Redis, breaker: CircuitBreaker, dep_id: str) -> BreakerDecision:
    """Ask ``dep_id``'s breaker whether a call may go there, as a worker does before its upstream call."""
    [reply] = await run_calls(redis, breaker.allow_call(dep_id))
    return decision_of(reply)


async def record(
    redis: aredis.Redis,
    breaker: CircuitBreaker,
    dep_id: str,
    error: BaseException | None,
    *,
    probe: bool = False,
) -> Any:
    """Report a finished upstream call as a worker does (``error`` None: it succeeded); the script's
    reply, None when the outcome records nothing."""
    replies = await run_calls(redis, breaker.record_call(dep_id, error, probe=probe))
    return replies[0] if replies else None


async def record_failure(redis: aredis.Redis, breaker: CircuitBreaker, dep_id: str) -> RecordedFailure:
    """One failed upstream call of ``dep_id`` (the provider was unavailable), as a worker reports it."""
    status, failures, retry_ms = await record(
        redis, breaker, dep_id, UpstreamUnavailable("the upstream is down")
    )
    return RecordedFailure(_text(status), int(failures), int(retry_ms) / 1000)


async def record_success(redis: aredis.Redis, breaker: CircuitBreaker, dep_id: str) -> str:
    """One successful upstream call of ``dep_id``, as a worker reports it; the breaker's status after it."""
    return _text(await record(redis, breaker, dep_id, None))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def command_names(commands: Sequence[Command]) -> list[str]:
    """The Redis command of each recorded command, e.g. ``["HSET", "EXPIRE"]``."""
    return [str(args[0]) for args, _ in commands]
