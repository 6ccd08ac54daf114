"""The per-account GCRA rate limit (real Redis and fakeredis): bursts, headers, plans, suspension."""

from __future__ import annotations

import hashlib
import math
import secrets

import pytest
import redis.asyncio as aredis

from ingress import api_keys
from ingress.control import accounts
from shared import keys
from shared.errors import AuthenticationError, RateLimitExceeded
from shared.lua import LuaScript
from shared.ratelimit import RateLimitDecision
from shared.settings import Settings
from tests.store_calls import count_request

SETTINGS = Settings()


async def burst(
    redis: aredis.Redis, account_id: str, count: int, plan: str = "unverified"
) -> list[RateLimitDecision]:
    return [await count_request(redis, SETTINGS, account_id=account_id, key_plan=plan) for _ in range(count)]


async def test_a_burst_admits_exactly_the_limit_with_exact_headers(store: aredis.Redis) -> None:
    """10/min admits 10 at once, remaining counting down, reset growing by 6 s per request; the 11th is
    refused with Retry-After of the 6 s until one request's worth is restored."""
    decisions = await burst(store, "acct_a", 11)
    admitted, refused = decisions[:10], decisions[10]
    assert all(d.allowed for d in admitted)
    assert [d.remaining for d in admitted] == list(range(9, -1, -1))
    assert [d.reset_seconds for d in admitted] == [6 * n for n in range(1, 11)]
    assert {d.limit for d in decisions} == {10}
    assert not refused.allowed
    assert (refused.remaining, refused.reset_seconds, refused.retry_after_seconds) == (0, 60, 6)
    assert refused.headers() == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "Retry-After": "6",
    }
    assert "Retry-After" not in admitted[0].headers()


async def test_refusal_raises_429_with_every_header(store: aredis.Redis) -> None:
    """A refused decision raises rate_limit_exceeded carrying the X-RateLimit headers and Retry-After."""
    *_, refused = await burst(store, "acct_b", 11)
    refused_again = await count_request(store, SETTINGS, account_id="acct_b", key_plan="unverified")
    assert refused_again.retry_after_seconds <= refused.retry_after_seconds
    with pytest.raises(RateLimitExceeded) as caught:
        refused.raise_if_refused()
    error = caught.value
    assert (error.status, error.type, error.code) == (429, "rate_limit_exceeded", "rate_limit_exceeded")
    assert error.headers["Retry-After"] == "6" and error.headers["X-RateLimit-Limit"] == "10"
    (await burst(store, "acct_c", 1))[0].raise_if_refused()


async def test_limits_are_per_account(store: aredis.Redis) -> None:
    """One account exhausting its limit leaves another's untouched."""
    await burst(store, "acct_busy", 10)
    assert (await burst(store, "acct_busy", 1))[0].allowed is False
    other = (await burst(store, "acct_idle", 1))[0]
    assert (other.allowed, other.remaining) == (True, 9)


async def test_capacity_returns_one_request_per_interval(store: aredis.Redis) -> None:
    """Once one emission interval (6 s at 10/min) has passed, exactly one more request is admitted."""
    await burst(store, "acct_f", 10)
    tat_key = keys.rate_limit("acct_f", "requests")
    tat = int(await store.get(tat_key))
    await store.set(tat_key, tat - 6_000_000, keepttl=True)  # as if 6 s had gone by
    again, refused = await burst(store, "acct_f", 2)
    assert (again.allowed, again.remaining) == (True, 0)
    assert (refused.allowed, refused.retry_after_seconds) == (False, 6)


async def test_the_accounts_plan_decides_and_changes_apply_at_once(store: aredis.Redis) -> None:
    """The account's plan sets the limit (not the key's copy); a plan change applies on the next request."""
    account, _ = await accounts.create_account(store, SETTINGS, plan="developer")
    first = await count_request(store, SETTINGS, account_id=account.id, key_plan="unverified")
    assert (first.plan, first.limit, first.remaining) == ("developer", 60, 59)
    await accounts.update_account(store, SETTINGS, account.id, plan="business")
    second = await count_request(store, SETTINGS, account_id=account.id, key_plan="unverified")
    assert (second.plan, second.limit) == ("business", 300)


async def test_key_plan_applies_without_a_known_account_plan(store: aredis.Redis) -> None:
    """Without an account record, or with a plan the settings no longer define, the key's plan decides;
    an unknown key plan falls back to the default plan."""
    no_account = await count_request(store, SETTINGS, account_id="legacy", key_plan="business")
    assert (no_account.plan, no_account.limit) == ("business", 300)
    await store.hset(keys.account("retired"), mapping={"id": "retired", "plan": "gone", "status": "active"})
    retired = await count_request(store, SETTINGS, account_id="retired", key_plan="developer")
    assert (retired.plan, retired.limit) == ("developer", 60)
    unknown = await count_request(store, SETTINGS, account_id="odd", key_plan="nonsense")
    assert (unknown.plan, unknown.limit) == ("unverified", 10)


async def test_suspended_account_is_refused_in_the_same_round_trip(store: aredis.Redis) -> None:
    """A suspended account gets 401 account_suspended and uses none of its limit; reactivated, it is in."""
    account, _ = await accounts.create_account(store, SETTINGS, plan="developer")
    await accounts.update_account(store, SETTINGS, account.id, status="suspended")
    with pytest.raises(AuthenticationError) as caught:
        await count_request(store, SETTINGS, account_id=account.id, key_plan="developer")
    assert (caught.value.status, caught.value.code) == (401, "account_suspended")
    await accounts.update_account(store, SETTINGS, account.id, status="active")
    decision = await count_request(store, SETTINGS, account_id=account.id, key_plan="developer")
    assert (decision.allowed, decision.remaining) == (True, 59)


async def test_a_read_of_the_limits_counts_nothing_and_is_never_refused(store: aredis.Redis) -> None:
    """Not counted, a request reads the limit as it stands (the budget the counted ones left) and is
    admitted even when the budget is spent; a suspended account is still refused."""
    await burst(store, "acct_r", 3)
    read = await count_request(store, SETTINGS, account_id="acct_r", key_plan="unverified", counted=False)
    assert (read.allowed, read.remaining, read.reset_seconds) == (True, 7, 18)
    assert (await burst(store, "acct_r", 1))[0].remaining == 6  # the read took nothing
    await burst(store, "acct_r", 7)
    spent = await count_request(store, SETTINGS, account_id="acct_r", key_plan="unverified", counted=False)
    assert (spent.allowed, spent.remaining) == (True, 0)
    account, _ = await accounts.create_account(store, SETTINGS, plan="developer")
    await accounts.update_account(store, SETTINGS, account.id, status="suspended")
    with pytest.raises(AuthenticationError):
        await count_request(store, SETTINGS, account_id=account.id, key_plan="developer", counted=False)


async def test_admitted_requests_record_the_keys_last_use(store: aredis.Redis) -> None:
    """An admitted request sets its key's last_used to Redis time; a missing key is not created."""
    account, _ = await accounts.create_account(store, SETTINGS)
    secret, record = await accounts.create_key_for_account(store, SETTINGS, account.id)
    assert record.last_used == 0.0
    digest = api_keys.digest(secret)
    seconds, _ = await store.time()
    await count_request(store, SETTINGS, account_id=account.id, key_plan=record.plan, api_key_digest=digest)
    used = await api_keys.lookup(store, digest)
    assert used is not None and math.floor(used.last_used) in (seconds, seconds + 1)
    await count_request(store, SETTINGS, account_id=account.id, key_plan=record.plan, api_key_digest="0" * 64)
    assert not await store.exists(keys.api_key("0" * 64))


async def test_limit_state_expires_once_fully_restored(store: aredis.Redis) -> None:
    """The limiter's key lives only until the limit is fully restored, so idle accounts cost no memory."""
    await burst(store, "acct_ttl", 3)
    ttl_ms = await store.pttl(keys.rate_limit("acct_ttl", "requests"))
    assert 17_000 < ttl_ms <= 18_000


async def test_scripts_reload_after_noscript(store: aredis.Redis) -> None:
    """A script the server does not know is loaded on its NOSCRIPT answer and the call goes through."""
    source = f"return ARGV[1] .. '-{secrets.token_hex(8)}'"
    script = LuaScript(name="probe", source=source, sha=hashlib.sha1(source.encode()).hexdigest())
    assert await store.script_exists(script.sha) == [False]
    assert (await script(store, [], ["hi"])).startswith(b"hi-")
    assert await store.script_exists(script.sha) == [True]
