"""Optional per-plan token limits, checked with the request limit in the same round trip."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from shared import keys, ratelimit
from shared.errors import RateLimitExceeded
from shared.ratelimit import RateLimitDecision
from shared.settings import MAX_PLAN_LIMIT, settings_from_mapping
from tests.store_calls import count_request

SETTINGS = settings_from_mapping(
    {
        "plans": {
            "metered": {"requests_per_minute": 100, "tokens_per_minute": 1000},
            "tiny": {"requests_per_minute": 2, "tokens_per_minute": 1000},
        }
    },
    env={},
)


async def check(
    redis: aredis.Redis, tokens: int, plan: str = "metered", account: str = "acct_t"
) -> RateLimitDecision:
    return await count_request(redis, SETTINGS, account_id=account, key_plan=plan, tokens=tokens)


async def refund(redis: aredis.Redis, tokens: int, plan: str) -> None:
    """Give back tokens a request did not use, as settlement does."""
    interval_us = ratelimit.token_interval_us(SETTINGS, plan)
    call = ratelimit.refund_call("acct_t", tokens=tokens, interval_us=interval_us)
    if call is not None:
        await call.run(redis)


async def test_tokens_are_counted_and_refusal_names_the_token_limit(store: aredis.Redis) -> None:
    """Estimated tokens come off the token limit; a request that does not fit is refused by 'tokens', with
    Retry-After the time until it fits (200 missing tokens at 1000/min = 12 s), and uses no request."""
    first = await check(store, 400)
    assert (first.allowed, first.token_limit, first.token_remaining, first.token_reset_seconds) == (
        True,
        1000,
        600,
        24,
    )
    assert first.headers()["X-RateLimit-Remaining-Tokens"] == "600"
    second = await check(store, 400)
    assert (second.token_remaining, second.remaining) == (200, 98)
    refused = await check(store, 400)
    assert (refused.allowed, refused.refused_by, refused.retry_after_seconds) == (False, "tokens", 12)
    assert (refused.remaining, refused.token_remaining) == (98, 200)
    assert refused.headers()["Retry-After"] == "12"
    with pytest.raises(RateLimitExceeded, match="1000 tokens per minute"):
        refused.raise_if_refused()
    assert (await check(store, 100)).allowed


async def test_unused_tokens_are_given_back(store: aredis.Redis) -> None:
    """Refunding what a request did not use makes room again at once; a full refund clears the limit."""
    await check(store, 900)
    assert not (await check(store, 500)).allowed
    await refund(store, 600, plan="metered")
    after = await check(store, 500)
    assert (after.allowed, after.token_remaining) == (True, 200)
    await refund(store, 10_000, plan="metered")
    assert not await store.exists(keys.rate_limit("acct_t", "tokens"))


async def test_estimates_above_the_limit_are_capped_and_zero_is_not_counted(
    store: aredis.Redis,
) -> None:
    """An estimate above the whole token limit still runs on an idle account; 0 tokens only reads it."""
    huge = await check(store, 50_000)
    assert (huge.allowed, huge.token_remaining) == (True, 0)
    free = await check(store, 0)
    assert (free.allowed, free.token_remaining, free.token_reset_seconds) == (True, 0, 60)


async def test_request_refusal_does_not_spend_tokens(store: aredis.Redis) -> None:
    """A request refused by the request limit leaves the token limit untouched."""
    await check(store, 100, plan="tiny")
    second = await check(store, 100, plan="tiny")
    refused = await check(store, 100, plan="tiny")
    assert (refused.allowed, refused.refused_by, refused.retry_after_seconds) == (False, "requests", 30)
    assert refused.token_remaining == second.token_remaining == 800


async def test_plans_without_a_token_limit_ignore_tokens(store: aredis.Redis) -> None:
    """Without tokens_per_minute, tokens are neither counted nor reported."""
    decision = await check(store, 10_000, plan="developer")
    assert (decision.allowed, decision.token_limit) == (True, 0)
    assert not any("Tokens" in name for name in decision.headers())
    assert not await store.exists(keys.rate_limit("acct_t", "tokens"))
    await refund(store, 5, plan="developer")


async def test_a_plan_at_the_highest_limit_admits_and_counts(store: aredis.Redis) -> None:
    """At one request and one token per microsecond a plan still works: admitted and counted (its
    limit state expires after a whole number of milliseconds, never 0, which Redis refuses)."""
    settings = settings_from_mapping(
        {"plans": {"top": {"requests_per_minute": MAX_PLAN_LIMIT, "tokens_per_minute": MAX_PLAN_LIMIT}}},
        env={},
    )
    decision = await count_request(store, settings, account_id="acct_top", key_plan="top", tokens=10)
    assert decision.allowed and (decision.limit, decision.remaining) == (MAX_PLAN_LIMIT, MAX_PLAN_LIMIT - 1)
