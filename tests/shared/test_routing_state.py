"""The pure routing strategies: order of deployments to try, skipping, preferences."""

from __future__ import annotations

import random
from collections import Counter
from itertools import cycle

from shared.routing_state import (
    STATS_STRATEGIES,
    DeploymentStats,
    apply_preferences,
    catalog_deployment_ids,
    deployment_id,
    order_deployments,
    soonest_retry,
)
from shared.settings import Deployment, ModelEntry, RoutingStrategy

A = Deployment("prov-a", "m", weight=1.0)
B = Deployment("prov-b", "m-large", weight=3.0)
C = Deployment("prov-c", "vendor/m", weight=0.0)


def model(strategy: RoutingStrategy, *deployments: Deployment) -> ModelEntry:
    return ModelEntry(id="m", deployments=deployments or (A, B, C), strategy=strategy)


def fixed(*values: float) -> cycle[float]:
    return cycle(values)


def test_deployment_id_names_provider_and_upstream_model() -> None:
    """A deployment's id is provider/upstream-model, keeping slashes of the upstream name."""
    assert deployment_id(A) == "prov-a/m"
    assert deployment_id(C) == "prov-c/vendor/m"


def test_priority_keeps_catalog_order_and_skips_open() -> None:
    """priority: catalog order, without the skipped deployments."""
    assert order_deployments(model("priority")) == [A, B, C]
    assert order_deployments(model("priority"), skip={"prov-a/m"}) == [B, C]


def test_every_deployment_skipped_gives_nothing_to_try() -> None:
    """When every deployment is skipped the list is empty, for every strategy (the caller answers 503)."""
    skip = {deployment_id(d) for d in (A, B, C)}
    for strategy in ("priority", "weighted", "least-busy", "latency"):
        assert order_deployments(model(strategy), skip=skip, rand=lambda: 0.5) == []  # type: ignore[arg-type]


def test_weighted_picks_by_weight_with_injected_randomness() -> None:
    """weighted: the draw lands in each deployment's share of the total weight; the rest follow."""
    m = model("weighted")
    values = fixed(0.1)
    assert order_deployments(m, rand=lambda: next(values)) == [A, B, C]  # 0.1*4 = 0.4 falls in A's [0, 1)
    values = fixed(0.3, 0.0)
    assert order_deployments(m, rand=lambda: next(values)) == [B, A, C]  # 0.3*4 = 1.2 falls in B's [1, 4)
    values = fixed(0.999999)
    assert order_deployments(m, skip={"prov-b/m-large"}, rand=lambda: next(values)) == [A, C]


def test_weighted_never_picks_zero_weight_first_and_follows_weights() -> None:
    """weighted: over seeded draws the first pick follows the weights; weight 0 is only a fallback."""
    rng = random.Random(7)
    firsts = Counter(order_deployments(model("weighted"), rand=rng.random)[0] for _ in range(4000))
    assert firsts[C] == 0
    assert 0.2 < firsts[A] / 4000 < 0.3  # expected 0.25
    assert set(order_deployments(model("weighted", C), rand=rng.random)) == {C}


def test_least_busy_orders_by_inflight_plus_queue() -> None:
    """least-busy: fewest in-flight plus queued jobs first; missing stats count as idle; ties keep order."""
    stats = {
        "prov-a/m": DeploymentStats(inflight=5, queue_depth=1),
        "prov-b/m-large": DeploymentStats(inflight=2, queue_depth=0),
        "prov-c/vendor/m": DeploymentStats(inflight=0, queue_depth=6),
    }
    assert order_deployments(model("least-busy"), stats=stats) == [B, A, C]
    assert order_deployments(model("least-busy"), stats={"prov-a/m": DeploymentStats(inflight=1)}) == [
        B,
        C,
        A,
    ]
    assert order_deployments(model("least-busy"), stats={}) == [A, B, C]


def test_latency_prefers_fastest_and_measures_unknown_first() -> None:
    """latency: unmeasured deployments first (to get measured), then lowest decayed TTFT."""
    stats = {
        "prov-a/m": DeploymentStats(ttft=0.9),
        "prov-b/m-large": DeploymentStats(ttft=0.2),
        "prov-c/vendor/m": DeploymentStats(ttft=0.5),
    }
    assert order_deployments(model("latency"), stats=stats) == [B, C, A]
    del stats["prov-c/vendor/m"]
    assert order_deployments(model("latency"), stats=stats) == [C, B, A]
    assert order_deployments(model("latency"), stats=stats, skip={"prov-c/vendor/m"}) == [B, A]


def test_only_least_busy_and_latency_need_statistics() -> None:
    """The ingress reads Redis statistics only for the strategies that use them."""
    assert frozenset({"least-busy", "latency"}) == STATS_STRATEGIES


def test_request_preferences_reorder_and_can_forbid_fallbacks() -> None:
    """provider.order puts named providers first; allow_fallbacks=false drops the others."""
    ordered = [A, B, C]
    assert apply_preferences(ordered, None) == [A, B, C]
    assert apply_preferences(ordered, ["prov-c", "prov-b"]) == [C, B, A]
    assert apply_preferences(ordered, ["prov-c", "prov-x"], allow_fallbacks=False) == [C]
    assert apply_preferences([A, B], ["prov-c"], allow_fallbacks=False) == []


def test_soonest_retry_is_the_first_deployment_to_reopen() -> None:
    """Retry-After of an all-skipped model is the shortest wait among its own deployments."""
    skipped = {"prov-a/m": 12.0, "prov-b/m-large": 3.5, "prov-z/other": 0.1}
    assert soonest_retry(model("priority"), skipped) == 3.5
    assert soonest_retry(model("priority"), {}, default=2.0) == 2.0


def test_catalog_deployment_ids_lists_each_deployment_once() -> None:
    """The catalog's deployment ids, deduplicated across models and sorted, for the operator view."""
    models = {"m": model("priority"), "n": ModelEntry(id="n", deployments=(B, Deployment("prov-d", "x")))}
    assert catalog_deployment_ids(models) == ["prov-a/m", "prov-b/m-large", "prov-c/vendor/m", "prov-d/x"]
