"""The shared circuit breaker on the real Redis and fakeredis: transitions, the one half-open probe, reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import fakeredis
import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.breaker import CircuitBreaker, outcome_of
from shared.errors import (
    ServiceUnavailable,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from shared.settings import BreakerSettings
from tests.store_calls import allow, record, record_failure, record_success
from tests.waiting import eventually

DEP = "prov-a/model-x"
OTHER = "prov-b/model-x"


def make(store: aredis.Redis, **overrides: float) -> CircuitBreaker:
    values: dict[str, float] = {
        "failure_threshold": 3,
        "window": 30.0,
        "cooldown": 30.0,
        "probe_timeout": 30.0,
    }
    values.update(overrides)
    return CircuitBreaker(store, BreakerSettings(**values))  # type: ignore[arg-type]


async def trip(store: aredis.Redis, breaker: CircuitBreaker, dep: str = DEP) -> None:
    for _ in range(breaker.settings.failure_threshold):
        await record_failure(store, breaker, dep)


async def half_open(breaker: CircuitBreaker) -> None:
    """Wait until the cooldown of DEP ran out (read-only: does not claim the probe)."""

    async def cooled() -> bool:
        return DEP not in await breaker.open_deployments()

    await eventually(cooled)


async def test_closed_breaker_admits_and_counts_failures(store: aredis.Redis) -> None:
    """Below the threshold the breaker stays closed, admits requests and reports the window's count."""
    breaker = make(store)
    assert (await allow(store, breaker, DEP)).verdict == "closed"
    first = await record_failure(store, breaker, DEP)
    second = await record_failure(store, breaker, DEP)
    assert (first.status, first.failures) == ("closed", 1)
    assert (second.status, second.failures, second.retry_after) == ("closed", 2, 0.0)
    assert (await allow(store, breaker, DEP)).allowed
    assert await breaker.open_deployments() == {}


async def test_threshold_failures_open_the_breaker(store: aredis.Redis) -> None:
    """The Nth failure in the window opens the breaker: requests are refused with a Retry-After."""
    breaker = make(store, cooldown=20.0)
    await record_failure(store, breaker, DEP)
    await record_failure(store, breaker, DEP)
    outcome = await record_failure(store, breaker, DEP)
    assert outcome.status == "open"
    assert 15.0 < outcome.retry_after <= 20.0
    decision = await allow(store, breaker, DEP)
    assert not decision.allowed and decision.verdict == "open"
    assert 15.0 < decision.retry_after <= 20.0
    assert (await allow(store, breaker, OTHER)).allowed
    open_now = await breaker.open_deployments()
    assert list(open_now) == [DEP] and 15.0 < open_now[DEP] <= 20.0


async def test_failures_older_than_the_window_do_not_count(store: aredis.Redis) -> None:
    """Failures slide out of the window: two old plus two new do not reach a threshold of three."""
    breaker = make(store, window=0.3)
    await record_failure(store, breaker, DEP)
    await record_failure(store, breaker, DEP)
    await asyncio.sleep(0.5)  # past the window: the passing time is what is tested
    await record_failure(store, breaker, DEP)
    outcome = await record_failure(store, breaker, DEP)
    assert (outcome.status, outcome.failures) == ("closed", 2)


async def test_half_open_admits_exactly_one_probe_under_concurrency(
    store: aredis.Redis, connect_store: Callable[[], aredis.Redis]
) -> None:
    """After the cooldown, 200 concurrent callers on eight connections get exactly one probe."""
    breaker = make(store, cooldown=0.2)
    await trip(store, breaker)
    await half_open(breaker)
    connections = [connect_store() for _ in range(8)]
    decisions = await asyncio.gather(*(allow(connections[i % 8], breaker, DEP) for i in range(200)))
    verdicts = [d.verdict for d in decisions]
    assert verdicts.count("probe") == 1
    assert verdicts.count("probing") == 199
    assert DEP in await breaker.open_deployments()  # the probe is in flight: routing skips it


async def test_probe_success_closes_the_breaker(store: aredis.Redis) -> None:
    """A successful probe closes the breaker and clears the failure window."""
    breaker = make(store, cooldown=0.2)
    await trip(store, breaker)
    await half_open(breaker)
    assert (await allow(store, breaker, DEP)).is_probe
    assert await record_success(store, breaker, DEP) == "closed"
    assert (await allow(store, breaker, DEP)).verdict == "closed"
    assert await breaker.open_deployments() == {}
    assert (await record_failure(store, breaker, DEP)).failures == 1  # the window starts afresh


async def test_probe_failure_reopens_for_another_cooldown(store: aredis.Redis) -> None:
    """A failed probe re-opens the breaker at once for a full cooldown."""
    breaker = make(store, cooldown=0.2)
    await trip(store, breaker)
    await half_open(breaker)
    assert (await allow(store, breaker, DEP)).is_probe
    slow = make(store, cooldown=20.0)
    outcome = await record_failure(store, slow, DEP)
    assert outcome.status == "open" and outcome.retry_after > 15.0
    assert (await allow(store, breaker, DEP)).verdict == "open"
    views = await breaker.views()
    assert views[0].status == "open" and views[0].trips == 2


async def test_success_during_cooldown_does_not_close(store: aredis.Redis) -> None:
    """A success that lands during the cooldown (a request from before the trip) leaves it open."""
    breaker = make(store)
    await trip(store, breaker)
    assert await record_success(store, breaker, DEP) == "open"
    assert (await allow(store, breaker, DEP)).verdict == "open"


async def test_lost_probe_frees_the_slot_after_probe_timeout(store: aredis.Redis) -> None:
    """A probe that never reports (its worker died) lets another probe through after probe_timeout."""
    breaker = make(store, cooldown=0.2, probe_timeout=0.3)
    await trip(store, breaker)
    await half_open(breaker)
    assert (await allow(store, breaker, DEP)).is_probe
    refused = await allow(store, breaker, DEP)
    assert refused.verdict == "probing" and 0 < refused.retry_after <= 0.3

    async def probe_again() -> bool:
        return (await allow(store, breaker, DEP)).is_probe

    await eventually(probe_again)


async def test_views_show_every_state_for_operators(store: aredis.Redis) -> None:
    """The operator view lists closed, open and half-open breakers with failures and opens_until."""
    breaker = make(store, cooldown=0.2)
    await record_failure(store, breaker, OTHER)
    await trip(store, breaker)
    await half_open(breaker)
    await allow(store, breaker, DEP)
    slow = make(store, cooldown=20.0)
    await trip(store, slow, "prov-c/model-y")
    before = time.time()
    views = {v.deployment_id: v for v in await breaker.views(["prov-d/idle"])}
    assert sorted(views) == ["prov-a/model-x", "prov-b/model-x", "prov-c/model-y", "prov-d/idle"]
    assert (views[OTHER].status, views[OTHER].failures, views[OTHER].opens_until) == ("closed", 1, None)
    assert views[DEP].status == "half-open" and views[DEP].probe_in_flight
    opened = views["prov-c/model-y"]
    assert opened.status == "open" and opened.opens_until is not None
    assert before + 15.0 < opened.opens_until < before + 25.0
    assert views["prov-d/idle"].to_dict() == {
        "deployment": "prov-d/idle",
        "status": "closed",
        "failures": 0,
        "opens_until": None,
        "probe_in_flight": False,
        "trips": 0,
    }


async def test_unreachable_redis_is_service_unavailable(clean_redis: redis.Redis) -> None:
    """Redis errors surface as our ServiceUnavailable."""
    dead = aredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    breaker = make(dead)
    with pytest.raises(ServiceUnavailable):
        await breaker.open_deployments()
    with pytest.raises(ServiceUnavailable):
        await breaker.views()
    await dead.aclose()


def test_outcome_of_classifies_adapter_errors() -> None:
    """Provider trouble counts as a failure; an answered bad request as a success; a cancel proves nothing."""
    assert outcome_of(None) == "success"
    assert outcome_of(UpstreamBadRequest("context too long")) == "success"
    assert outcome_of(UpstreamUnavailable()) == "failure"
    assert outcome_of(UpstreamTimeout()) == "failure"
    assert outcome_of(UpstreamError("HTTP 401")) == "failure"
    assert outcome_of(asyncio.CancelledError()) == "none"
    assert outcome_of(ServiceUnavailable()) == "none"


async def test_record_feeds_the_breaker_by_outcome(store: aredis.Redis) -> None:
    """Provider failures count, cancels are ignored, and a success closes a half-open breaker."""
    breaker = make(store, cooldown=0.2)
    await record(store, breaker, DEP, UpstreamTimeout())
    await record(store, breaker, DEP, asyncio.CancelledError())
    await record(store, breaker, DEP, UpstreamBadRequest())
    assert [v.failures for v in await breaker.views()] == [1]
    await record(store, breaker, DEP, UpstreamUnavailable())
    await record(store, breaker, DEP, UpstreamError())
    assert (await allow(store, breaker, DEP)).verdict == "open"
    await half_open(breaker)
    assert (await allow(store, breaker, DEP)).is_probe
    await record(store, breaker, DEP, None)
    assert (await allow(store, breaker, DEP)).verdict == "closed"


async def test_cancelled_probe_is_released_for_the_next_caller(store: aredis.Redis) -> None:
    """A probe whose call proved nothing (client left) frees the slot at once, not after probe_timeout."""
    breaker = make(store, cooldown=0.2, probe_timeout=30.0)
    await trip(store, breaker)
    await half_open(breaker)
    assert (await allow(store, breaker, DEP)).is_probe
    assert DEP in await breaker.open_deployments()
    await record(store, breaker, DEP, asyncio.CancelledError(), probe=True)
    assert DEP not in await breaker.open_deployments()
    assert (await allow(store, breaker, DEP)).is_probe
    assert not await record(store, breaker, OTHER, asyncio.CancelledError(), probe=True)  # none claimed there


async def test_scripts_reload_after_the_script_cache_is_flushed() -> None:
    """After SCRIPT FLUSH (a Redis restart) the breaker reloads its scripts (NOSCRIPT) and carries on.
    On fakeredis only: flushing the real server's script cache would disturb other databases' users."""
    store = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    breaker = make(store)
    await record_failure(store, breaker, DEP)
    await store.script_flush()
    assert (await record_failure(store, breaker, DEP)).failures == 2
    assert (await allow(store, breaker, DEP)).verdict == "closed"
    await store.aclose()
