"""The ingress' model router on the real Redis: each strategy's order from live statistics, open
breakers skipped, preferences applied, and the immediate 503 when nothing is left."""

from __future__ import annotations

import pytest
import redis.asyncio as aredis

from ingress.open_set import OpenSetCache
from ingress.provider_preferences import ProviderPreferences
from ingress.routing import ModelRouter, automated_decision
from shared import keys
from shared.breaker import CircuitBreaker
from shared.errors import ModelNotFound, ServiceUnavailable
from shared.routing_state import InflightTracker, ttft_call
from shared.settings import BreakerSettings, Deployment, ModelEntry, RoutingStatsSettings, RoutingStrategy
from tests.store_calls import record_failure, run_calls

DEPLOYMENTS = (Deployment("a", "m"), Deployment("b", "m"), Deployment("c", "m"))


def model(strategy: RoutingStrategy) -> ModelEntry:
    return ModelEntry(id="x/model", deployments=DEPLOYMENTS, strategy=strategy)


async def router_for(
    redis: aredis.Redis, entry: ModelEntry
) -> tuple[ModelRouter, CircuitBreaker, OpenSetCache]:
    breaker = CircuitBreaker(redis, BreakerSettings(failure_threshold=1, cooldown=30))
    open_set = OpenSetCache(breaker)
    return ModelRouter({entry.id: entry}, redis=redis, open_set=open_set), breaker, open_set


def providers(deployments: tuple[Deployment, ...]) -> list[str]:
    return [d.provider for d in deployments]


async def test_priority_keeps_catalog_order_and_skips_open_breakers(aredis_client: aredis.Redis) -> None:
    """priority: a, b, c; with a's breaker open (as the refreshed open set says) b, c."""
    router, breaker, open_set = await router_for(aredis_client, model("priority"))
    assert providers((await router.route("x/model")).deployments) == ["a", "b", "c"]
    await record_failure(aredis_client, breaker, "a/m")
    await open_set.refresh()
    assert providers((await router.route("x/model")).deployments) == ["b", "c"]


async def test_least_busy_orders_by_inflight_plus_queued(aredis_client: aredis.Redis) -> None:
    """least-busy: a with 2 running jobs and b with 1 queued job come after idle c, b before a."""
    router, _, _ = await router_for(aredis_client, model("least-busy"))
    tracker = InflightTracker(aredis_client, "w1", lease=30)
    await run_calls(aredis_client, tracker.started_call("a/m"))
    await run_calls(aredis_client, tracker.started_call("a/m"))
    await aredis_client.rpush(keys.rq_queue_key("b"), "queued-job")
    plan = await router.route("x/model")
    assert providers(plan.deployments) == ["c", "b", "a"]
    assert plan.stats is not None and plan.stats["b/m"].queue_depth == 1


async def test_latency_prefers_unmeasured_then_fastest(aredis_client: aredis.Redis) -> None:
    """latency: unmeasured c first (to measure it), then b (0.1 s) before a (0.5 s)."""
    router, _, _ = await router_for(aredis_client, model("latency"))
    stats = RoutingStatsSettings()
    await run_calls(aredis_client, ttft_call("a/m", 0.5, stats), ttft_call("b/m", 0.1, stats))
    assert providers((await router.route("x/model")).deployments) == ["c", "b", "a"]


async def test_weighted_returns_every_healthy_deployment(aredis_client: aredis.Redis) -> None:
    """weighted: some order of all three (the rest is the fallback order), reading no statistics."""
    router, _, _ = await router_for(aredis_client, model("weighted"))
    plan = await router.route("x/model")
    assert sorted(providers(plan.deployments)) == ["a", "b", "c"] and plan.stats is None


async def test_preferences_reorder_and_restrict(aredis_client: aredis.Redis) -> None:
    """provider.order puts c first; without fallbacks only c remains."""
    router, _, _ = await router_for(aredis_client, model("priority"))
    plan = await router.route("x/model", ProviderPreferences(("c",)))
    assert providers(plan.deployments) == ["c", "a", "b"]
    plan = await router.route("x/model", ProviderPreferences(("c",), allow_fallbacks=False))
    assert providers(plan.deployments) == ["c"]


async def test_all_open_is_503_with_the_soonest_retry(aredis_client: aredis.Redis) -> None:
    """Every breaker open: 503 service_unavailable, Retry-After within the cooldown."""
    router, breaker, open_set = await router_for(aredis_client, model("priority"))
    for dep in ("a/m", "b/m", "c/m"):
        await record_failure(aredis_client, breaker, dep)
    await open_set.refresh()
    with pytest.raises(ServiceUnavailable) as caught:
        await router.route("x/model")
    assert caught.value.code == "service_unavailable"
    assert caught.value.message == "All providers temporarily unavailable."
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 30


async def test_unknown_model_is_404(aredis_client: aredis.Redis) -> None:
    """A model the catalog does not have is model_not_found on `model`."""
    router, _, _ = await router_for(aredis_client, model("priority"))
    with pytest.raises(ModelNotFound):
        await router.route("nope")


def test_decision_header_names_strategy_and_fallbacks() -> None:
    """X-Automated-Decision names the strategy and model, and the fallbacks taken when there were any."""
    entry = model("latency")
    assert automated_decision(entry) == (
        "provider selected automatically by AIOrouter routing (strategy=latency, model=x/model)"
    )
    assert automated_decision(entry, fallbacks=2).endswith("(strategy=latency, model=x/model, fallbacks=2)")
