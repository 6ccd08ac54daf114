"""Settlement commands on the real Redis: a completed job is charged what it used (beyond its hold only
from the credit still available), a failed one leaves its hold to the ingress, and every job leaves a
usage record."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aredis

from ingress.control import accounts
from shared import credits, keys, usage
from shared.errors import IngressGone, UpstreamError
from shared.job_billing import EXTRA_KEY, JobBilling
from shared.jobs import CompletionJob
from shared.redis_commands import Command, replay
from shared.settings import ModelEntry, settings_from_mapping
from tests.store_calls import hold_credit
from workers.settlement import billing_commands, final_commands

SETTINGS = settings_from_mapping({}, env={})
MODEL = ModelEntry(id="m/priced", deployments=(), input_price_per_m=2.0, output_price_per_m=4.0)
FUNDS = 1_000_000


async def funded(redis: aredis.Redis) -> None:
    await accounts.create_account(redis, SETTINGS, account_id="acme", plan="developer")
    await credits.add_credit(redis, "acme", FUNDS)


async def billed_job(redis: aredis.Redis, amount: int, **billing: Any) -> tuple[CompletionJob, JobBilling]:
    reservation = await hold_credit(redis, SETTINGS, "acme", amount)
    job_billing = JobBilling.for_model(reservation, MODEL, admitted_at=time.time() - 0.25, **billing)
    job = CompletionJob(
        request_id="req-1",
        reply_to="chan",
        model=MODEL.id,
        provider="simulated",
        upstream_model="echo",
        stream=False,
        include_usage=False,
        body={},
        created=int(time.time()),
        account_id="acme",
        key_id="key_1",
        extra={EXTRA_KEY: job_billing.to_wire()},
    )
    return job, job_billing


async def run(redis: aredis.Redis, commands: list[Command], *, listened: bool = True) -> None:
    """Run ``commands`` while the job's ingress listens on its reply channel (``listened``), as it does
    when a worker publishes the job's final frame."""
    listener = redis.pubsub()
    if listened:
        await listener.subscribe("chan")
    try:
        async with redis.pipeline(transaction=False) as pipe:
            replay(pipe, commands)
            await pipe.execute()
    finally:
        await listener.aclose()


async def records(redis: aredis.Redis) -> list[usage.UsageRecord]:
    return await usage.recent_usage(redis, "acme")


async def test_an_answer_nobody_can_receive_is_not_charged(aredis_client: aredis.Redis) -> None:
    """A job that completes after its ingress stopped listening (it died, or lost Redis and failed the
    request) releases its hold: the client never got the answer.  Its usage record says it cost 0."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000)
    tokens = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens), listened=False)
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved, balance.balance) == (0, 0, FUNDS)
    [record] = await records(aredis_client)
    assert (record.cost_micros, record.completion_tokens) == (0, 50)


async def test_a_batch_line_is_charged_with_nobody_listening(aredis_client: aredis.Redis) -> None:
    """A batch line's frames have no reader by design (its result goes to the batch): it is charged."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000)
    line = dataclasses.replace(job, reply_to=keys.BATCH_REPLY_CHANNEL)
    tokens = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    await run(aredis_client, billing_commands(line, error=None, token_usage=tokens), listened=False)
    assert (await credits.get_balance(aredis_client, "acme")).spent == 400


async def test_a_completed_job_is_charged_its_tokens(aredis_client: aredis.Redis) -> None:
    """Prompt and completion tokens at the quoted prices are charged, the rest of the hold released, and
    the usage record and day totals carry the same cost."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000)
    tokens = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens))
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved, balance.balance) == (400, 0, FUNDS - 400)
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros, record.prompt_tokens, record.completion_tokens) == (
        usage.OK,
        400,
        100,
        50,
    )
    assert (record.key_id, record.provider, record.request_id) == ("key_1", "simulated", "req-1")
    assert 200 <= record.latency_ms < 60_000
    today = datetime.now(UTC).date()
    [day] = await usage.daily_usage(aredis_client, "acme", today, today)
    assert (day.requests, day.errors, day.cost_micros) == (1, 0, 400)


async def test_usage_beyond_the_hold_is_charged_and_lands_once(aredis_client: aredis.Redis) -> None:
    """Usage beyond the reserved worst case (a prompt the estimate undercounted) is charged what it cost,
    and replaying the settlement (a retried round trip) charges nothing more and records it once; the
    usage record says what was charged."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 300)
    tokens = {"prompt_tokens": 1_000, "completion_tokens": 1_000}
    commands = billing_commands(job, error=None, token_usage=tokens)
    await run(aredis_client, commands)
    await run(aredis_client, commands)
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved) == (6_000, 0)
    assert [record.cost_micros for record in await records(aredis_client)] == [6_000]


async def test_usage_beyond_the_hold_never_takes_the_balance_below_zero(aredis_client: aredis.Redis) -> None:
    """Usage that costs more than the whole balance is charged what the balance holds, and the usage
    record says that."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 300)
    tokens = {"prompt_tokens": 1_000_000, "completion_tokens": 0}
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens))
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.balance, balance.reserved, balance.spent) == (0, 0, FUNDS)
    assert [record.cost_micros for record in await records(aredis_client)] == [FUNDS]


async def test_a_job_whose_hold_was_released_first_records_no_cost(aredis_client: aredis.Redis) -> None:
    """A job that ends after its request released its hold (the ingress failed the request, Redis lost
    meanwhile) is charged nothing, and its usage record and the day's totals say so, not the cost of
    its tokens."""
    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 10_000)
    assert (await credits.release(aredis_client, billing.reservation)).outcome == "settled"
    tokens = {"prompt_tokens": 100, "completion_tokens": 50}
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens))
    assert (await credits.get_balance(aredis_client, "acme")).spent == 0
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros, record.prompt_tokens) == (usage.OK, 0, 100)
    today = datetime.now(UTC).date()
    [day] = await usage.daily_usage(aredis_client, "acme", today, today)
    assert (day.requests, day.prompt_tokens, day.cost_micros) == (1, 100, 0)


async def test_a_failed_job_leaves_the_hold_and_records_its_error(aredis_client: aredis.Redis) -> None:
    """A failed attempt charges nothing and keeps the hold (the ingress may fall back, then releases it),
    and its usage record says which error ended it."""
    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 5_000)
    await run(aredis_client, billing_commands(job, error=UpstreamError("boom"), token_usage=None))
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved) == (0, 5_000)
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros) == ("upstream_error", 0)
    assert (await credits.release(aredis_client, billing.reservation)).outcome == "settled"


async def counted_ahead(redis: aredis.Redis) -> int:
    """Set the account's token limit 10 s ahead of Redis' clock (tokens counted, 1 ms each); returns
    that theoretical arrival time in µs."""
    server_seconds, _ = await redis.time()
    start = (server_seconds + 10) * 1_000_000
    await redis.set(keys.rate_limit("acme", "tokens"), str(start))
    return start


async def given_back(redis: aredis.Redis, start: int) -> int:
    """Tokens (of 1 ms each) the limit was given back since :func:`counted_ahead`."""
    return (start - int(await redis.get(keys.rate_limit("acme", "tokens")) or 0)) // 1_000


async def test_unused_counted_tokens_are_refunded(aredis_client: aredis.Redis) -> None:
    """On a plan with a token limit, the tokens counted at admission beyond those used are given back."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    tokens = {"prompt_tokens": 100, "completion_tokens": 50}
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens))
    assert await given_back(aredis_client, start) == 850


@pytest.mark.parametrize("first_landed", [True, False])
async def test_a_resent_final_round_trip_charges_refunds_and_records_once(
    aredis_client: aredis.Redis, first_landed: bool
) -> None:
    """The final round trip's reply was lost: the worker sends its retry commands again.  Whether the
    first one landed or not, the charge, the token refund and the usage record land exactly once."""
    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    tokens = {"prompt_tokens": 100, "completion_tokens": 50}
    commands, retry = final_commands(job, error=None, token_usage=tokens)
    if first_landed:
        await run(aredis_client, commands)
    await run(aredis_client, retry)
    await run(aredis_client, retry)
    balance = await credits.get_balance(aredis_client, "acme")
    cost = billing.cost(100, 50)
    assert cost > 0 and (balance.spent, balance.reserved) == (cost, 0)
    assert [record.cost_micros for record in await records(aredis_client)] == [cost]
    assert await given_back(aredis_client, start) == 850  # once


async def test_a_resend_after_the_reservation_record_is_gone_still_writes_once(
    aredis_client: aredis.Redis,
) -> None:
    """A hold whose record expired before the answer (its tombstone too): the marks live on a record of
    their own, so a resent final round trip writes neither the usage record nor the refund twice."""
    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    reservation_key = keys.credit_reservation(billing.reservation.id)
    await aredis_client.delete(reservation_key)
    start = await counted_ahead(aredis_client)
    commands, retry = final_commands(
        job, error=None, token_usage={"prompt_tokens": 100, "completion_tokens": 50}
    )
    await run(aredis_client, commands)  # landed, its reply lost
    await run(aredis_client, retry)  # sent again
    assert len(await records(aredis_client)) == 1
    assert await given_back(aredis_client, start) == 850
    assert 0 < await aredis_client.ttl(reservation_key) <= keys.CREDIT_RESERVATION_TOMBSTONE_TTL


async def test_the_ingress_release_and_a_later_answer_refund_the_tokens_once(
    aredis_client: aredis.Redis,
) -> None:
    """The client left, the ingress released the hold and gave back every counted token; the worker's
    answer lands after: not charged (settled already), and it gives back nothing more."""
    from ingress.deferred_cleanup import release_hold

    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    await release_hold(aredis_client, billing)
    await run(
        aredis_client,
        billing_commands(job, error=None, token_usage={"prompt_tokens": 100, "completion_tokens": 50}),
    )
    assert await given_back(aredis_client, start) == 1_000
    assert (await credits.get_balance(aredis_client, "acme")).spent == 0


async def test_a_job_without_billing_is_only_recorded(aredis_client: aredis.Redis) -> None:
    """A job some other producer enqueued (no billing) gets its usage record and touches no credit."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 100)
    bare = CompletionJob(**{**job.to_wire(), "extra": {}})
    commands = billing_commands(bare, error=None, token_usage={"prompt_tokens": 5, "completion_tokens": 5})
    assert all(args[0] != "EVAL" for args, _ in commands)
    await run(aredis_client, commands)
    assert (await credits.get_balance(aredis_client, "acme")).reserved == 100
    [record] = await records(aredis_client)
    assert record.cost_micros == 0 and record.prompt_tokens == 5


async def test_cached_prompt_tokens_are_charged_at_the_cached_price(aredis_client: aredis.Redis) -> None:
    """A model with a cached input price charges the prompt's cached tokens at it, and the record and day
    totals carry the cached and reasoning tokens."""
    await funded(aredis_client)
    reservation = await hold_credit(aredis_client, SETTINGS, "acme", 10_000)
    cheap_cache = ModelEntry(
        id="m/priced",
        deployments=(),
        input_price_per_m=2.0,
        output_price_per_m=4.0,
        cached_input_price_per_m=0.5,
    )
    job_billing = JobBilling.for_model(reservation, cheap_cache, admitted_at=time.time())
    job, _ = await billed_job(aredis_client, 1)  # a job shell; its billing is replaced below
    job = dataclasses.replace(job, extra={EXTRA_KEY: job_billing.to_wire()})
    tokens = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 80},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    await run(aredis_client, billing_commands(job, error=None, token_usage=tokens))
    # 20 uncached x 2 + 80 cached x 0.5 + 50 x 4 = 40 + 40 + 200 micro-USD
    record = next(r for r in await records(aredis_client) if r.cached_tokens)
    assert (record.cost_micros, record.cached_tokens, record.reasoning_tokens) == (280, 80, 30)
    today = datetime.now(UTC).date()
    days = await usage.daily_usage(aredis_client, "acme", today, today)
    assert sum(d.cached_tokens for d in days) == 80 and sum(d.reasoning_tokens for d in days) == 30


def test_the_quoted_cached_price_travels_with_the_job() -> None:
    """JobBilling keeps the cached input price on the wire (None when the model has none)."""
    reservation = credits.Reservation(id="r-1", account_id="acme", amount=100, deadline_ms=0)
    model = ModelEntry(id="m", deployments=(), input_price_per_m=1.0, cached_input_price_per_m=0.25)
    billing = JobBilling.for_model(reservation, model, admitted_at=1.0)
    assert JobBilling.from_wire(billing.to_wire()).cached_input_price_per_m == 0.25
    plain = JobBilling.for_model(reservation, MODEL, admitted_at=1.0)
    assert JobBilling.from_wire(plain.to_wire()).cached_input_price_per_m is None


async def test_a_job_whose_ingress_is_gone_releases_its_hold(aredis_client: aredis.Redis) -> None:
    """A job stopped because its ingress is gone releases its hold itself (that ingress may not be there
    to): nobody received the answer, nobody pays; its usage record keeps the tokens produced, at no cost."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000)
    tokens = {"prompt_tokens": 100, "completion_tokens": 5}
    await run(aredis_client, billing_commands(job, error=IngressGone(), token_usage=tokens))
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved) == (0, 0)
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros, record.completion_tokens) == ("ingress_gone", 0, 5)


@pytest.mark.parametrize("resent", [False, True])
async def test_a_job_whose_ingress_is_gone_gives_back_its_counted_tokens(
    aredis_client: aredis.Redis, resent: bool
) -> None:
    """The release by a job whose ingress is gone gives back every token the limit counted for it, as the
    ingress' own release would have (once, however often its round trip is sent): an ingress that died
    leaves nobody else to, and the account's next requests would find its token limit spent."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    tokens = {"prompt_tokens": 100, "completion_tokens": 5}
    commands, retry = final_commands(job, error=IngressGone(), token_usage=tokens)
    await run(aredis_client, commands, listened=False)
    if resent:
        await run(aredis_client, retry, listened=False)
    assert await given_back(aredis_client, start) == 1_000
    assert (await credits.get_balance(aredis_client, "acme")).reserved == 0


@pytest.mark.parametrize("first_landed", [True, False])
async def test_a_job_whose_client_left_is_charged_what_it_produced_once(
    aredis_client: aredis.Redis, first_landed: bool
) -> None:
    """A job stopped because its client left is charged its prompt and the tokens produced so far, even
    with nobody on its reply channel, gives back the counted tokens it did not use and records
    client_closed, each once however often its round trip is sent."""
    await funded(aredis_client)
    job, billing = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    tokens = {"prompt_tokens": 100, "completion_tokens": 30}
    commands, retry = final_commands(job, error=None, token_usage=tokens, client_left=True)
    if first_landed:
        await run(aredis_client, commands, listened=False)
    await run(aredis_client, retry, listened=False)
    await run(aredis_client, retry, listened=False)
    cost = billing.cost(100, 30)
    balance = await credits.get_balance(aredis_client, "acme")
    assert cost > 0 and (balance.spent, balance.reserved, balance.balance) == (cost, 0, FUNDS - cost)
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros, record.prompt_tokens, record.completion_tokens) == (
        usage.CLIENT_CLOSED,
        cost,
        100,
        30,
    )
    assert await given_back(aredis_client, start) == 870


async def test_a_job_whose_client_left_before_any_token_is_not_charged(aredis_client: aredis.Redis) -> None:
    """A job stopped because its client left before its upstream produced anything releases its hold
    and gives back every counted token; its usage record says client_closed at no cost."""
    await funded(aredis_client)
    job, _ = await billed_job(aredis_client, 10_000, counted_tokens=1_000, token_interval_us=1_000)
    start = await counted_ahead(aredis_client)
    await run(aredis_client, billing_commands(job, error=None, token_usage=None, client_left=True))
    balance = await credits.get_balance(aredis_client, "acme")
    assert (balance.spent, balance.reserved) == (0, 0)
    [record] = await records(aredis_client)
    assert (record.status, record.cost_micros) == (usage.CLIENT_CLOSED, 0)
    assert await given_back(aredis_client, start) == 1_000
