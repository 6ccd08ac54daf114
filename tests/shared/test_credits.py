"""Credit arithmetic, reservations, settlement, expiry and the ledger; races on the real Redis only."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from ingress.admission import sweep_reservations
from ingress.control import accounts
from shared import credits, keys
from shared.credits import Reservation
from shared.errors import InsufficientQuota, InvalidRequest, NotFound
from shared.redis_client import async_client
from shared.settings import Deployment, ModelEntry, Settings
from tests.store_calls import hold_credit

SETTINGS = Settings()
MODEL = ModelEntry(
    id="m", deployments=(Deployment("simulated", "m"),), input_price_per_m=0.10, output_price_per_m=0.20
)


async def funded_account(redis: aredis.Redis, micros: int) -> str:
    account, _ = await accounts.create_account(redis, SETTINGS, name="test")
    await credits.add_credit(redis, account.id, micros, reason="test grant", actor="tests")
    return account.id


def test_price_is_exact_micro_usd_rounded_up() -> None:
    """A price in USD per million tokens is micro-USD per token: exact decimals, fractions rounded up."""
    assert credits.price_micros(10, 0.1) == 1
    assert credits.price_micros(30, 0.1) == 3
    assert credits.price_micros(1, 0.1) == 1
    assert credits.price_micros(0, 5.0) == 0
    assert credits.price_micros(1_000_000, 2.5) == 2_500_000
    assert credits.cost_micros(MODEL, prompt_tokens=100, completion_tokens=50) == 10 + 10


def test_completion_cap_is_max_tokens_or_the_default_cap() -> None:
    """The completion part of the worst case is the request's max tokens, else the configured cap."""
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert credits.estimate_prompt_tokens(body) > 0
    default_cap = SETTINGS.credit_default_max_tokens
    assert credits.max_completion_tokens(SETTINGS, MODEL, body) == default_cap
    assert credits.max_completion_tokens(SETTINGS, MODEL, {**body, "max_tokens": 10}) == 10
    newer = {**body, "max_tokens": 10, "max_completion_tokens": 20}
    assert credits.max_completion_tokens(SETTINGS, MODEL, newer) == 20


def test_prompt_estimate_grows_with_the_prompt() -> None:
    """A longer prompt is estimated at more tokens, and at least one per 4 bytes of its text."""
    text = "word " * 400
    estimate = credits.estimate_prompt_tokens({"messages": [{"role": "user", "content": text}]})
    assert estimate >= len(text) / 4
    assert estimate > credits.estimate_prompt_tokens({"messages": [{"role": "user", "content": "word"}]})


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        *((10, 10_000_000), ("12.50", 12_500_000), (0.000001, 1), ("0.25", 250_000), (1.1, 1_100_000)),
        *(
            (" 7 ", 7_000_000),
            (".5", 500_000),
            ("5.", 5_000_000),
            ("1000000000", 10**15),
            ("2.500000000", 2_500_000),
        ),
    ],
)
def test_parse_usd_accepts_positive_amounts(value: object, micros: int) -> None:
    """USD amounts as JSON numbers or decimal strings become exact micro-USD."""
    assert credits.parse_usd(value) == micros


@pytest.mark.parametrize(
    "value",
    [
        *(0, -5, "-1", "abc", None, True, [], "1e400", "nan", "0.0000001", {}),
        *("1e999999", "1E2", "1_000", "\u0661\u0662", "\uff11\uff12", "\u00b2", "Infinity", "-inf", "NaN"),
        *("+5", "0x10", "1.2.3", ".", "", "9" * 40, "1." + "0" * 40, 1e300, float("inf"), 10**30),
    ],
)
def test_parse_usd_refuses_everything_else(value: object) -> None:
    """Zero, negative, non-numeric, non-finite and sub-micro amounts are a 400, and so is anything but a
    plain ASCII decimal: exponents, digit separators, other scripts' digits, NaN, Infinity, 40 digits."""
    with pytest.raises(InvalidRequest):
        credits.parse_usd(value)


async def test_reserve_settle_and_release_arithmetic(store: aredis.Redis) -> None:
    """A hold lowers what is available; settling charges the actual cost and frees the rest; a release
    frees everything; settling twice changes nothing."""
    account_id = await funded_account(store, 1_000)
    first = await hold_credit(store, SETTINGS, account_id, 300)
    second = await hold_credit(store, SETTINGS, account_id, 200)
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved, balance.available) == (1_000, 500, 500)

    settled = await credits.settle(store, first, 120)
    assert (settled.outcome, settled.charged) == ("settled", 120)
    released = await credits.release(store, second)
    assert (released.outcome, released.charged) == ("settled", 0)
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved, balance.spent) == (880, 0, 120)

    again = await credits.settle(store, first, 120)
    assert (again.outcome, again.charged) == ("already", 0)
    assert await credits.get_balance(store, account_id) == balance
    assert await store.zcard(keys.CREDIT_RESERVATIONS) == 0


async def test_a_cost_above_the_hold_is_charged_from_what_is_available(store: aredis.Redis) -> None:
    """An actual cost above the hold (the prompt estimate fell short) is charged in full while the
    available credit covers it, else down to zero available: never another request's hold, never a
    negative balance."""
    account_id = await funded_account(store, 1_000)
    small = await hold_credit(store, SETTINGS, account_id, 100)
    settled = await credits.settle(store, small, 250)
    assert (settled.outcome, settled.charged) == ("settled", 250)
    assert (await credits.get_balance(store, account_id)).balance == 750

    small = await hold_credit(store, SETTINGS, account_id, 100)
    other = await hold_credit(store, SETTINGS, account_id, 300)
    settled = await credits.settle(store, small, 5_000)
    assert settled.charged == 750 - 300  # all but the other request's hold
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved, balance.available, balance.spent) == (300, 300, 0, 700)
    assert (await credits.settle(store, other, 300)).charged == 300
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved, balance.spent) == (0, 0, 1_000)


async def test_short_credit_is_refused_with_402_and_holds_nothing(store: aredis.Redis) -> None:
    """A request that may cost more than is available gets insufficient_quota and changes nothing."""
    account_id = await funded_account(store, 50)
    with pytest.raises(InsufficientQuota) as caught:
        await hold_credit(store, SETTINGS, account_id, 51)
    assert caught.value.status == 402 and caught.value.code == "insufficient_quota"
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved) == (50, 0)
    with pytest.raises(InsufficientQuota):
        await hold_credit(store, SETTINGS, "acct_without_credit", 1)


async def test_200_concurrent_reservations_never_overspend(
    aredis_client: aredis.Redis, redis_url: str
) -> None:
    """200 concurrent holds of 7 against a balance of 1000: exactly 142 succeed, the rest get 402; settling
    them all concurrently spends exactly what was held."""
    account_id = await funded_account(aredis_client, 1_000)
    wide = aredis.Redis.from_url(redis_url, max_connections=200)  # every call on its own connection
    try:
        results = await asyncio.gather(
            *(hold_credit(wide, SETTINGS, account_id, 7) for _ in range(200)), return_exceptions=True
        )
        held = [r for r in results if isinstance(r, Reservation)]
        refused = [r for r in results if isinstance(r, InsufficientQuota)]
        assert (len(held), len(refused)) == (142, 58)
        balance = await credits.get_balance(wide, account_id)
        assert (balance.reserved, balance.available) == (994, 6)

        await asyncio.gather(*(credits.settle(wide, r, 7) for r in held))
        balance = await credits.get_balance(wide, account_id)
        assert (balance.balance, balance.reserved, balance.spent) == (6, 0, 994)
    finally:
        await wide.aclose()


async def test_expired_reservations_are_released_by_the_sweep(store: aredis.Redis) -> None:
    """A hold past its deadline is released by the sweep; one still within it is kept."""
    account_id = await funded_account(store, 1_000)
    stale = await hold_credit(store, SETTINGS, account_id, 400, ttl=0.05)
    live = await hold_credit(store, SETTINGS, account_id, 100)
    await asyncio.sleep(0.1)
    assert await credits.sweep_expired(store) == 1
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved) == (1_000, 100)
    assert await store.zrange(keys.CREDIT_RESERVATIONS, 0, -1) == [live.id.encode()]
    assert await credits.sweep_expired(store) == 0
    assert stale.deadline_ms < live.deadline_ms


async def test_an_expired_hold_of_nothing_is_released_and_the_sweep_goes_on(store: aredis.Redis) -> None:
    """A hold of 0 (a free plan or model) past its deadline is released like any other (Redis refuses
    ``HINCRBY`` by ``-0``: the sweep would fail on it at every pass, and release nothing after it)."""
    account_id = await funded_account(store, 1_000)
    await hold_credit(store, SETTINGS, account_id, 0, ttl=0.01)
    await hold_credit(store, SETTINGS, account_id, 300, ttl=0.02)
    await asyncio.sleep(0.05)
    assert await credits.sweep_expired(store) == 2
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved) == (1_000, 0)
    assert await store.zcard(keys.CREDIT_RESERVATIONS) == 0


async def test_sweep_works_through_more_than_one_batch(store: aredis.Redis) -> None:
    """The sweep keeps going until every expired hold is released, whatever its batch size."""
    account_id = await funded_account(store, 1_000)
    for _ in range(7):
        await hold_credit(store, SETTINGS, account_id, 10, ttl=0.01)
    await asyncio.sleep(0.05)
    assert await credits.sweep_expired(store, batch=3) == 7
    assert (await credits.get_balance(store, account_id)).reserved == 0


async def test_late_settle_charges_only_what_is_available(store: aredis.Redis) -> None:
    """Settling a swept reservation still charges, but never takes the available credit below zero."""
    account_id = await funded_account(store, 100)
    stale = await hold_credit(store, SETTINGS, account_id, 80, ttl=0.01)
    await asyncio.sleep(0.05)
    await credits.sweep_expired(store)
    other = await hold_credit(store, SETTINGS, account_id, 70)
    late = await credits.settle(store, stale, 60)
    assert (late.outcome, late.charged) == ("late", 30)
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved, balance.available) == (70, 70, 0)
    assert (await credits.settle(store, other, 70)).charged == 70


async def test_sweep_does_not_touch_settled_reservations(store: aredis.Redis) -> None:
    """A reservation settled before its deadline is gone from the sweep's view and is not released twice."""
    account_id = await funded_account(store, 100)
    reservation = await hold_credit(store, SETTINGS, account_id, 50, ttl=0.01)
    await credits.settle(store, reservation, 50)
    await asyncio.sleep(0.05)
    assert await credits.sweep_expired(store) == 0
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved) == (50, 0)


async def test_unknown_reservation_settles_to_nothing(store: aredis.Redis) -> None:
    """Settling an id that was never reserved charges nothing."""
    account_id = await funded_account(store, 100)
    ghost = Reservation(id="res_ghost", account_id=account_id, amount=50, deadline_ms=0)
    settled = await credits.settle(store, ghost, 50)
    assert (settled.outcome, settled.charged) == ("unknown", 0)
    assert (await credits.get_balance(store, account_id)).balance == 100


async def test_added_credit_is_in_the_ledger(store: aredis.Redis) -> None:
    """Each grant raises the balance and appends a ledger entry with the balance after it."""
    account, _ = await accounts.create_account(store, SETTINGS)
    await credits.add_credit(store, account.id, 5_000_000, reason="welcome", actor="admin")
    balance, entry = await credits.add_credit(store, account.id, 2_500_000, reason="top-up", actor="ops")
    assert balance.balance == 7_500_000
    assert (entry.amount, entry.balance, entry.reason, entry.actor) == (2_500_000, 7_500_000, "top-up", "ops")
    entries = await credits.ledger(store, account.id)
    assert [(e.amount, e.balance, e.reason) for e in entries] == [
        (2_500_000, 7_500_000, "top-up"),
        (5_000_000, 5_000_000, "welcome"),
    ]
    assert entries[0].at_ms >= entries[1].at_ms > 0


async def test_credit_for_an_unknown_account_or_a_bad_amount_is_refused(store: aredis.Redis) -> None:
    """No ledger entry or balance appears for an account that does not exist, or for an amount <= 0."""
    with pytest.raises(NotFound):
        await credits.add_credit(store, "acct_missing", 100)
    assert not await store.exists(keys.credit_balance("acct_missing"), keys.credit_ledger("acct_missing"))
    account, _ = await accounts.create_account(store, SETTINGS)
    for bad in (0, -1):
        with pytest.raises(InvalidRequest):
            await credits.add_credit(store, account.id, bad)


async def test_the_ledger_keeps_its_latest_entries(
    store: aredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger does not grow without bound: past LEDGER_KEPT entries (about) the oldest go."""
    monkeypatch.setattr(credits, "LEDGER_KEPT", 10)
    account, _ = await accounts.create_account(store, SETTINGS)
    for _ in range(300):
        await credits.add_credit(store, account.id, 1)
    assert (await credits.get_balance(store, account.id)).balance == 300
    assert await store.xlen(keys.credit_ledger(account.id)) < 300


def test_reservation_survives_the_job_wire() -> None:
    """A reservation put in a job's JSON comes back equal, for the worker that settles it."""
    reservation = Reservation(id="res_1", account_id="acct_1", amount=42, deadline_ms=1_700_000_000_000)
    assert Reservation.from_wire(reservation.to_wire()) == reservation


async def test_a_request_holds_its_worst_case_and_settles_the_tokens_used(store: aredis.Redis) -> None:
    """A request holds prompt estimate + max_tokens at the model's prices and settles to its real usage."""
    account_id = await funded_account(store, 1_000_000)
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 1_000}
    prompt = credits.estimate_prompt_tokens(body)
    worst = credits.cost_micros(MODEL, prompt, credits.max_completion_tokens(SETTINGS, MODEL, body))
    assert worst >= 200
    reservation = await hold_credit(store, SETTINGS, account_id, worst)
    settled = await credits.settle(store, reservation, credits.cost_micros(MODEL, 12, 30))
    assert settled.charged == 2 + 6
    balance = await credits.get_balance(store, account_id)
    assert (balance.balance, balance.reserved) == (1_000_000 - 8, 0)


async def test_balances_of_many_accounts_in_one_call(store: aredis.Redis) -> None:
    """Many balances read together come back in order, zero for accounts without credit."""
    first = await funded_account(store, 10)
    second = await funded_account(store, 20)
    balances = await credits.get_balances(store, [second, "acct_none", first])
    assert [(b.account_id, b.balance) for b in balances] == [(second, 20), ("acct_none", 0), (first, 10)]
    assert await credits.get_balances(store, []) == []


async def test_concurrent_releases_of_one_reservation_release_it_once(aredis_client: aredis.Redis) -> None:
    """Ten concurrent settles of one reservation: one settles, nine find it already settled."""
    account_id = await funded_account(aredis_client, 100)
    reservation = await hold_credit(aredis_client, SETTINGS, account_id, 60)
    results = await asyncio.gather(*(credits.settle(aredis_client, reservation, 10) for _ in range(10)))
    assert sorted(r.outcome for r in results) == ["already"] * 9 + ["settled"]
    balance = await credits.get_balance(aredis_client, account_id)
    assert (balance.balance, balance.reserved, balance.spent) == (90, 0, 10)


async def test_settles_racing_the_sweep_release_every_hold_exactly_once(aredis_client: aredis.Redis) -> None:
    """Expired reservations settled while sweeps run: every hold is released once and the books balance."""
    account_id = await funded_account(aredis_client, 10_000)
    held = [await hold_credit(aredis_client, SETTINGS, account_id, 100, ttl=0.01) for _ in range(40)]
    await asyncio.sleep(0.05)
    outcomes = await asyncio.gather(
        *(credits.settle(aredis_client, r, 30) for r in held),
        *(credits.sweep_expired(aredis_client, batch=7) for _ in range(3)),
    )
    settlements = outcomes[: len(held)]
    swept = sum(outcomes[len(held) :])
    assert {s.outcome for s in settlements} <= {"settled", "late"}
    assert swept == sum(s.outcome == "late" for s in settlements)
    balance = await credits.get_balance(aredis_client, account_id)
    charged = sum(s.charged for s in settlements)
    assert charged == 40 * 30
    assert (balance.balance, balance.reserved, balance.spent) == (10_000 - charged, 0, charged)
    assert await aredis_client.zcard(keys.CREDIT_RESERVATIONS) == 0


async def test_free_requests_pass_without_credit(store: aredis.Redis) -> None:
    """A request whose worst case costs nothing (a free model) is held even at a zero balance."""
    account, _ = await accounts.create_account(store, SETTINGS)
    reservation = await hold_credit(store, SETTINGS, account.id, 0)
    assert (await credits.settle(store, reservation, 0)).outcome == "settled"
    with pytest.raises(ValueError):
        await hold_credit(store, SETTINGS, account.id, -1)


async def test_the_background_sweeper_releases_expired_holds(clean_redis: object, redis_url: str) -> None:
    """The ingress's reservation sweep, run as a task on its (auto-pipelined) client, releases an expired
    hold within a few seconds, until cancelled.  (On a plain redis-py client a cancel that lands as a
    command completes can be lost on Python 3.11, and awaiting the task would hang.)"""
    client = async_client(redis_url, max_connections=2, auto_pipeline=True)
    try:
        account_id = await funded_account(client, 100)
        await hold_credit(client, SETTINGS, account_id, 60, ttl=0.05)
        sweeper = asyncio.create_task(sweep_reservations(client, interval=0.05))
        try:
            for _ in range(100):
                if (await credits.get_balance(client, account_id)).reserved == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await credits.get_balance(client, account_id)).reserved == 0
        finally:
            sweeper.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sweeper
    finally:
        await client.aclose()


async def test_sweep_drops_entries_without_a_record(store: aredis.Redis) -> None:
    """An expired entry whose record is gone is dropped from the open set without touching any balance."""
    await store.zadd(keys.CREDIT_RESERVATIONS, {"res_orphan": 1})
    assert await credits.sweep_expired(store) == 0
    assert await store.zcard(keys.CREDIT_RESERVATIONS) == 0


async def test_concurrent_grants_keep_the_ledger_consistent(aredis_client: aredis.Redis) -> None:
    """50 concurrent grants: the balance is their sum and each ledger entry's balance-after follows the
    one before it by exactly its amount (grant and entry are one atomic step)."""
    account, _ = await accounts.create_account(aredis_client, SETTINGS)
    await asyncio.gather(*(credits.add_credit(aredis_client, account.id, n) for n in range(1, 51)))
    assert (await credits.get_balance(aredis_client, account.id)).balance == sum(range(1, 51))
    entries = list(reversed(await credits.ledger(aredis_client, account.id)))
    assert len(entries) == 50
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance == running


def test_every_choice_is_reserved() -> None:
    """A request for n choices may produce n times its completion cap, and its hold covers all of them."""
    assert credits.max_completion_tokens(SETTINGS, MODEL, {"max_tokens": 10}) == 10
    assert credits.max_completion_tokens(SETTINGS, MODEL, {"max_tokens": 10, "n": 3}) == 30
    default = credits.max_completion_tokens(SETTINGS, MODEL, {})
    assert credits.max_completion_tokens(SETTINGS, MODEL, {"n": 2}) == 2 * default


def test_cached_tokens_cost_the_cached_price_and_never_more_than_the_prompt() -> None:
    """Cached prompt tokens take the cached price (the input price when none), at most the whole prompt."""
    prices = {"input_price_per_m": 2.0, "output_price_per_m": 4.0}
    assert credits.tokens_cost(100, 50, 80, cached_input_price_per_m=0.5, **prices) == 40 + 40 + 200
    assert credits.tokens_cost(100, 50, 80, cached_input_price_per_m=None, **prices) == 200 + 200
    assert credits.tokens_cost(10, 0, 80, cached_input_price_per_m=0.0, **prices) == 0


async def test_a_settled_reservations_record_expires_within_minutes(store: aredis.Redis) -> None:
    """A settled or released reservation leaves its small record for minutes, not a day."""
    account_id = await funded_account(store, 1_000)
    reservation = await hold_credit(store, SETTINGS, account_id, 100)
    await credits.settle(store, reservation, 10)
    ttl = await store.ttl(keys.credit_reservation(reservation.id))
    assert 0 < ttl <= keys.CREDIT_RESERVATION_TOMBSTONE_TTL <= 300


async def test_a_renewed_hold_outlives_its_first_deadline_and_lapses_once_renewals_stop(
    store: aredis.Redis,
) -> None:
    """A hold is a lease: renewed (its worker runs the job) it survives the sweep past its first deadline;
    once renewals stop (ingress and worker died) the sweep releases it; a settled one is never renewed."""
    account_id = await funded_account(store, 1_000)
    held = await hold_credit(store, SETTINGS, account_id, 400, ttl=0.2)
    renewed = await credits.extend_call(held, 0.6).run(store)
    assert renewed > held.deadline_ms
    await asyncio.sleep(0.3)  # past the first deadline
    assert await credits.sweep_expired(store) == 0
    await asyncio.sleep(0.4)  # past the renewed one
    assert await credits.sweep_expired(store) == 1
    assert (await credits.get_balance(store, account_id)).reserved == 0
    assert await credits.extend_call(held, 60).run(store) == 0


def test_a_new_hold_covers_each_attempt_waiting_for_a_worker_then_one_lease() -> None:
    """Before any worker renews it, a hold lasts as long as each of the request's attempts may wait for a
    worker (twice queue_timeout), plus one lease: not the whole job's time limit."""
    settings = Settings(queue_timeout=10.0, reservation_lease=60.0, job_timeout=900)
    assert credits.reservation_ttl(settings, attempts=2) == 2 * 2 * 10.0 + 60.0


async def test_a_release_that_comes_before_its_hold_refuses_the_hold(aredis_client: aredis.Redis) -> None:
    """The ingress gave up on an admission round trip Redis had not answered (frozen) and released its
    hold before the round trip ran: the hold is then refused, so nothing is held (or queued, or charged)
    for a request already answered 503."""
    from shared.credits import PendingReservation
    from shared.lua import run_together

    account = await funded_account(aredis_client, 1_000_000)
    pending = PendingReservation.prepare(SETTINGS, account, 500)
    settled = await credits.release(aredis_client, pending.expected())
    assert settled.outcome == "unknown"
    [reply] = await run_together(aredis_client, [pending.call])  # the late round trip
    with pytest.raises(InsufficientQuota):
        pending.outcome(reply)
    assert (await credits.get_balance(aredis_client, account)).reserved == 0
    ttl = await aredis_client.ttl(keys.credit_reservation(pending.id))
    assert 0 < ttl <= keys.CREDIT_RESERVATION_TOMBSTONE_TTL
