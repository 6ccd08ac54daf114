"""The library layer composed as the request path will use it: admit, reserve, settle, record, report."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from ingress.control import accounts
from shared import credits, ratelimit, usage
from shared.credits import Reservation
from shared.errors import InsufficientQuota, RateLimitExceeded
from shared.settings import settings_from_mapping

SETTINGS = settings_from_mapping(
    {
        "default_plan": "metered",
        "plans": {"metered": {"requests_per_minute": 3, "tokens_per_minute": 100_000}},
    },
    env={},
)
MODEL = SETTINGS.models["aiorouter/echo"]


async def serve_one(
    redis: aredis.Redis, secret: str, body: dict[str, object], used: tuple[int, int]
) -> Reservation:
    """What ingress and worker do for one completion, in order."""
    record = await api_keys.lookup(redis, api_keys.digest(secret))
    assert record is not None and not record.revoked
    estimate = credits.estimate_prompt_tokens(body) + credits.max_completion_tokens(SETTINGS, MODEL, body)
    decision = await ratelimit.check_request(
        redis,
        SETTINGS,
        account_id=record.account_id,
        key_plan=record.plan,
        api_key_digest=api_keys.digest(secret),
        tokens=estimate,
    )
    decision.raise_if_refused()
    try:
        reservation = await credits.reserve_for_request(redis, SETTINGS, record.account_id, MODEL, body)
    except InsufficientQuota:  # nothing will run: give the estimated tokens back
        await ratelimit.refund_tokens(
            redis, SETTINGS, account_id=record.account_id, plan=decision.plan, tokens=estimate
        )
        raise
    job_extra = {"reservation": reservation.to_wire()}  # travels in the rq job to the worker

    # --- the worker, when the upstream reports usage ---
    held = Reservation.from_wire(job_extra["reservation"])  # type: ignore[arg-type]
    prompt_tokens, completion_tokens = used
    settlement = await credits.settle_usage(redis, held, MODEL, prompt_tokens, completion_tokens)
    await ratelimit.refund_tokens(
        redis,
        SETTINGS,
        account_id=held.account_id,
        plan=decision.plan,
        tokens=estimate - prompt_tokens - completion_tokens,
    )
    await usage.record_usage(
        redis,
        usage.UsageRecord(
            request_id=f"req_{reservation.id}",
            account_id=held.account_id,
            key_id=record.key_id,
            model=MODEL.id,
            provider="simulated",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_micros=settlement.charged,
            latency_ms=12,
            status=usage.OK,
            at=time.time(),
        ),
    )
    return held


async def test_requests_are_admitted_billed_and_reported_until_limits_bite(store: aredis.Redis) -> None:
    """Each completion is charged its real cost and reported; the 4th in a minute gets 429, and once the
    credit cannot cover a worst case the request gets 402 before anything is reserved."""
    account, _ = await accounts.create_account(store, SETTINGS, name="flow")
    secret, _ = await accounts.create_key_for_account(store, SETTINGS, account.id)
    await credits.add_credit(store, account.id, 1_000)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

    for _ in range(2):
        await serve_one(store, secret, body, used=(20, 30))
    balance = await credits.get_balance(store, account.id)
    per_request = credits.cost_micros(MODEL, 20, 30)
    assert (balance.balance, balance.reserved, balance.spent) == (1_000 - 2 * per_request, 0, 2 * per_request)

    with pytest.raises(InsufficientQuota):
        await serve_one(store, secret, {**body, "max_tokens": 10_000}, used=(0, 0))
    with pytest.raises(RateLimitExceeded) as refused:
        await serve_one(store, secret, body, used=(20, 30))
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.value.headers["X-RateLimit-Remaining-Tokens"]) >= 100_000 - 2 * 50  # only usage counts

    today = datetime.now(UTC).date()
    [row] = await usage.daily_usage(store, account.id, today, today)
    assert (row.model, row.requests, row.prompt_tokens, row.cost_micros) == (MODEL.id, 2, 40, 2 * per_request)
    [key] = await api_keys.list_keys(store, account.id)
    assert key.last_used > 0
