"""Admission in the ingress: rate-limit headers on every authenticated answer, 429/402/401 before anything
is queued, the reservation in the job, and its release when no worker answered."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from ingress import api_keys
from ingress.control import accounts
from shared import credits, keys
from shared.errors import UpstreamError
from shared.job_billing import JobBilling
from tests.ingress.conftest import MESSAGES, MODEL, TEST_CREDIT_MICROS, Ingress, IngressFactory, asgi_chat
from tests.ingress.test_app import assert_error
from tests.store_calls import hold_credit
from tests.waiting import eventually

RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
TINY_PLAN = {"plans": {"tiny": {"requests_per_minute": 2}}}


def assert_rate_limit_headers(response: httpx.Response, limit: int) -> None:
    for name in RATE_LIMIT_HEADERS:
        assert response.headers[name].isdigit(), (name, response.headers.get(name))
    assert int(response.headers["x-ratelimit-limit"]) == limit


async def queued(ingress: Ingress) -> int:
    return int(await ingress.redis.llen(keys.rq_queue_key("simulated")))


async def wait_for_balance(ingress: Ingress, reserved: int) -> credits.Balance:
    async def balance_reserving() -> credits.Balance | None:
        balance = await credits.get_balance(ingress.redis, "acct-test")
        return balance if balance.reserved == reserved else None

    return await eventually(balance_reserving)


async def test_completion_carries_rate_limit_headers_and_its_reservation(ingress: Ingress) -> None:
    """An admitted completion holds its worst case while it runs, names the hold in its job and answers
    with X-RateLimit-*; after an answer the ingress leaves the hold to the worker that settles it."""
    task = ingress.chat_task()
    taken = await ingress.worker.take()
    billing = JobBilling.of_job(taken.job)
    assert billing is not None and billing.reservation.account_id == "acct-test"
    assert billing.reservation.amount > 0
    assert (billing.input_price_per_m, billing.output_price_per_m) == (0.10, 0.20)
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == billing.reservation.amount
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "hi")
    response = await task
    assert response.status_code == 200
    assert_rate_limit_headers(response, 60)
    assert response.headers["x-ratelimit-remaining"] == "59"
    balance = await credits.get_balance(ingress.redis, "acct-test")
    assert balance.reserved == billing.reservation.amount  # a real worker settles it with its D frame
    record = await api_keys.lookup(ingress.redis, api_keys.digest(ingress.api_key))
    assert record is not None and abs(record.last_used - time.time()) < 60  # set by the admission


async def test_a_final_error_releases_the_hold(ingress: Ingress) -> None:
    """A request that ends with a worker's (non-retryable) error releases its whole reservation."""
    task = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.error(taken, UpstreamError("the upstream broke"))
    response = await task
    assert response.status_code == 500
    assert_rate_limit_headers(response, 60)
    balance = await wait_for_balance(ingress, 0)
    assert (balance.balance, balance.spent) == (TEST_CREDIT_MICROS, 0)


async def test_insufficient_credit_is_402_before_anything_is_queued(ingress: Ingress) -> None:
    """A request whose worst case exceeds the available credit gets 402 insufficient_quota, with the
    rate-limit headers, and no job."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 100_000}
    await hold_credit(ingress.redis, ingress.settings, "acct-test", TEST_CREDIT_MICROS - 10)
    response = await ingress.chat(body)
    assert_error(response, 402, "insufficient_quota", "insufficient_quota")
    assert_rate_limit_headers(response, 60)
    assert await queued(ingress) == 0
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == TEST_CREDIT_MICROS - 10


async def test_rate_limit_is_429_with_retry_after_and_holds_nothing(ingress_factory: IngressFactory) -> None:
    """Past the plan's limit a completion gets 429 rate_limit_exceeded with an integer Retry-After of at
    most 120 s and the X-RateLimit-* headers; nothing is queued and no credit stays held."""
    async with ingress_factory(**TINY_PLAN) as ingress:
        await accounts.update_account(ingress.redis, ingress.settings, "acct-test", plan="tiny")
        for remaining in ("1", "0"):
            models = await ingress.client.get("/v1/models", headers=ingress.headers())
            assert models.status_code == 200
            assert models.headers["x-ratelimit-remaining"] == remaining
        response = await ingress.chat()
        assert_error(response, 429, "rate_limit_exceeded", "rate_limit_exceeded")
        assert_rate_limit_headers(response, 2)
        assert 1 <= int(response.headers["retry-after"]) <= 120
        assert await queued(ingress) == 0
        assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == 0


async def test_suspended_account_is_refused_and_holds_nothing(ingress: Ingress) -> None:
    """A suspended account's key gets 401 account_suspended at once, and no credit stays held."""
    await accounts.update_account(ingress.redis, ingress.settings, "acct-test", status="suspended")
    response = await ingress.chat()
    assert_error(response, 401, "authentication_error", "account_suspended")
    assert await queued(ingress) == 0
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [({"model": MODEL}, 400), ({"model": "no/such-model", "messages": MESSAGES}, 404)],
)
async def test_errors_after_authentication_carry_rate_limit_headers(
    ingress: Ingress, body: dict[str, object], status: int
) -> None:
    """A request refused after authentication (bad body, unknown model) counts and says so in its headers."""
    response = await ingress.chat(body)
    assert response.status_code == status, response.text
    assert_rate_limit_headers(response, 60)
    assert response.headers["x-ratelimit-remaining"] == "59"


async def test_unauthenticated_errors_carry_no_rate_limit_headers(ingress: Ingress) -> None:
    """Without a valid key there is no account to count against: no X-RateLimit-* headers."""
    response = await ingress.client.post("/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES})
    assert response.status_code == 401
    assert not any(name in response.headers for name in RATE_LIMIT_HEADERS)


async def test_queue_timeout_releases_the_hold(ingress_factory: IngressFactory) -> None:
    """A request no worker took ends with 503 queue_timeout and its reservation released."""
    async with ingress_factory(queue_timeout=0.3) as ingress:
        response = await ingress.chat()
        assert response.status_code == 503, response.text
        assert_rate_limit_headers(response, 60)
        balance = await wait_for_balance(ingress, 0)
        assert balance.balance == TEST_CREDIT_MICROS
        assert await ingress.redis.zcard(keys.CREDIT_RESERVATIONS) == 0


async def test_client_gone_while_queued_releases_the_hold(ingress: Ingress) -> None:
    """A client that leaves before any worker took its job gets the job withdrawn and its hold released."""
    call = asgi_chat(ingress, {"model": MODEL, "messages": MESSAGES})
    running = asyncio.create_task(call.run())
    await eventually(lambda: queued(ingress))
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved > 0
    call.disconnected.set()
    await asyncio.wait_for(running, 5)
    assert await queued(ingress) == 0
    balance = await wait_for_balance(ingress, 0)
    assert (balance.balance, balance.spent) == (TEST_CREDIT_MICROS, 0)


@pytest.mark.parametrize("late", [False, True])
async def test_an_admission_whose_reply_was_lost_is_neither_queued_nor_charged(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch, late: bool
) -> None:
    """Redis froze with the admission round trip in it: the client gets 503 (Retry-After) after the reply
    timeout, and however the round trip and the deferred clean-up land once Redis answers (the round
    trip before it, or after it: ``late``), nothing stays held or queued for the request."""
    from redis import exceptions as redis_exceptions

    from ingress import admission
    from shared.lua import run_together as real_run_together

    sent: list[Any] = []

    async def reply_lost(redis: Any, calls: Any) -> Any:
        if late:
            sent.append((redis, calls))  # Redis runs it once it answers again, after the clean-up
        else:
            await real_run_together(redis, calls)  # it ran; only its reply was lost
        raise redis_exceptions.TimeoutError("Redis did not answer within 10 s.")

    monkeypatch.setattr(admission, "run_together", reply_lost)
    response = await ingress.chat()
    assert_error(response, 503, "service_unavailable", "service_unavailable")
    assert response.headers["retry-after"] == "1"
    cleanup = ingress.app.state.ingress.cleanup
    await asyncio.wait_for(cleanup.drained.wait(), 5)
    for redis, calls in sent:
        await real_run_together(redis, calls)
    assert await queued(ingress) == 0
    assert (await credits.get_balance(ingress.redis, "acct-test")).reserved == 0
