"""The request path's billing, composed as ingress and worker run it: admit, settle and record, report."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from ingress.admission import Admission
from ingress.context import IngressContext
from ingress.control import accounts
from ingress.deferred_cleanup import DeferredCleanup
from ingress.metrics import IngressMetrics
from shared import credits, usage
from shared.errors import InsufficientQuota, RateLimitExceeded
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.jobs import CompletionJob
from shared.settings import Settings, settings_from_mapping
from tests.store_calls import count_request, run_commands
from workers.settlement import billing_commands

SETTINGS = settings_from_mapping(
    {
        "default_plan": "metered",
        "plans": {"metered": {"requests_per_minute": 3, "tokens_per_minute": 100_000}},
    },
    env={},
)
MODEL = SETTINGS.models["aiorouter/echo"]


async def serve_one(
    redis: aredis.Redis,
    secret: str,
    body: dict[str, object],
    used: tuple[int, int],
    settings: Settings = SETTINGS,
) -> JobBilling:
    """What ingress and worker do for one completion, in order: admission, then the job's end."""
    record = await api_keys.lookup(redis, api_keys.digest(secret))
    assert record is not None and not record.revoked
    # Admission reads only the settings and the Redis client of its ingress' context.
    context = IngressContext(
        settings,
        "flow",
        redis,
        hub=None,
        auth=None,
        router=None,
        cleanup=DeferredCleanup(redis),  # type: ignore[arg-type]
        metrics=IngressMetrics(settings),
    )
    admitted = await Admission(context, record, f"Bearer {secret}").admit(MODEL, body)
    job = CompletionJob(
        request_id=f"req_{admitted.billing.reservation.id}",
        reply_to="chan",
        model=MODEL.id,
        provider="simulated",
        upstream_model="echo",
        stream=False,
        include_usage=False,
        body=body,
        created=int(time.time()),
        account_id=record.account_id,
        key_id=record.key_id,
        extra={EXTRA_KEY: admitted.billing.to_wire()},  # travels in the rq job to the worker
    )

    # --- the worker, when the upstream reports usage, while the ingress listens on its reply channel ---
    prompt_tokens, completion_tokens = used
    token_usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    ingress_listening = redis.pubsub()
    await ingress_listening.subscribe(job.reply_to)
    try:
        await run_commands(redis, billing_commands(job, error=None, token_usage=token_usage))
    finally:
        await ingress_listening.aclose()
    return admitted.billing


async def test_requests_are_admitted_billed_and_reported_until_limits_bite(store: aredis.Redis) -> None:
    """Each completion is charged its real cost and reported; the 4th in a minute gets 429, and once the
    credit cannot cover a worst case the request gets 402 before anything is reserved, its counted tokens
    given back."""
    account, _ = await accounts.create_account(store, SETTINGS, name="flow")
    secret, _ = await accounts.create_key_for_account(store, SETTINGS, account.id)
    await credits.add_credit(store, account.id, 1_000)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}

    for _ in range(2):
        await serve_one(store, secret, body, used=(20, 30))
    balance = await credits.get_balance(store, account.id)
    per_request = credits.cost_micros(MODEL, 20, 30)
    assert (balance.balance, balance.reserved, balance.spent) == (1_000 - 2 * per_request, 0, 2 * per_request)

    greedy = {**body, "max_tokens": 10_000}
    with pytest.raises(InsufficientQuota) as poor:
        await serve_one(store, secret, greedy, used=(0, 0))
    estimate = credits.estimate_prompt_tokens(greedy) + credits.max_completion_tokens(SETTINGS, MODEL, greedy)
    remaining_tokens = int(poor.value.headers["X-RateLimit-Remaining-Tokens"])
    assert remaining_tokens >= 100_000 - 2 * 50 - estimate  # of the answered ones, only usage counts
    with pytest.raises(RateLimitExceeded) as refused:
        await serve_one(store, secret, body, used=(20, 30))
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"
    # the 402's worst case was given back: only the answered requests' usage still counts
    assert int(refused.value.headers["X-RateLimit-Remaining-Tokens"]) >= 100_000 - 2 * 50 - 1

    today = datetime.now(UTC).date()
    [row] = await usage.daily_usage(store, account.id, today, today)
    assert (row.model, row.requests, row.prompt_tokens, row.cost_micros) == (MODEL.id, 2, 40, 2 * per_request)
    [key] = await api_keys.list_keys(store, account.id)
    assert key.last_used > 0


async def test_an_estimate_above_the_token_limit_gives_back_only_what_it_counted(store: aredis.Redis) -> None:
    """A request whose estimate exceeds the whole token limit is counted for the limit only, so the
    refund of what it did not use gives back no more than that: the tokens it used stay counted."""
    settings = settings_from_mapping(
        {
            "default_plan": "small",
            "plans": {"small": {"requests_per_minute": 60, "tokens_per_minute": 1_000}},
        },
        env={},
    )
    account, _ = await accounts.create_account(store, settings, name="small")
    secret, _ = await accounts.create_key_for_account(store, settings, account.id)
    await credits.add_credit(store, account.id, 1_000_000)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5_000}

    billing = await serve_one(store, secret, body, used=(10, 890), settings=settings)
    assert billing.counted_tokens == 1_000
    record = await api_keys.lookup(store, api_keys.digest(secret))
    assert record is not None
    after = await count_request(store, settings, account_id=account.id, key_plan=record.plan)
    assert after.token_remaining < 500  # the 900 used still count (1,000 before; 1 comes back every 60 ms)


async def test_a_prompt_the_estimate_undercounted_is_charged_in_full_and_reported(
    store: aredis.Redis,
) -> None:
    """A prompt that counts far more tokens than its bytes (an image URL) costs more than the request's
    hold: it is charged in full, and the balance, the usage record and the day's totals agree."""
    account, _ = await accounts.create_account(store, SETTINGS, name="images")
    secret, _ = await accounts.create_key_for_account(store, SETTINGS, account.id)
    await credits.add_credit(store, account.id, 1_000_000)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"messages": [{"role": "user", "content": [image]}], "max_tokens": 10}

    billing = await serve_one(store, secret, body, used=(1_105, 10))
    cost = credits.cost_micros(MODEL, 1_105, 10)
    assert cost > billing.reservation.amount
    balance = await credits.get_balance(store, account.id)
    assert (balance.balance, balance.reserved, balance.spent) == (1_000_000 - cost, 0, cost)
    [record] = await usage.recent_usage(store, account.id)
    today = datetime.now(UTC).date()
    [row] = await usage.daily_usage(store, account.id, today, today)
    assert record.cost_micros == row.cost_micros == cost
