"""The settings file the benchmark gives AIOrouter is valid and routes every scenario's model."""

from __future__ import annotations

import tomllib

from bench.router_config import PLAN, PROVIDER, router_config
from bench.scenarios import QUICK, model_id, router_models, scenarios
from shared.settings import settings_from_mapping


def test_config_loads_and_routes_each_model_to_the_simulated_upstream() -> None:
    """AIOrouter's own settings loader accepts the file; each model reaches the upstream by its behaviour."""
    models = router_models(scenarios(QUICK))
    text = router_config("http://127.0.0.1:9/v1", models, concurrency=2048)
    settings = settings_from_mapping(tomllib.loads(text), {})
    provider = settings.provider(PROVIDER)
    assert (provider.kind, provider.base_url, provider.concurrency, provider.upstream_stream) == (
        "openai",
        "http://127.0.0.1:9/v1",
        2048,
        "always",
    )
    for public_id, upstream_model in models.items():
        (deployment,) = settings.models[public_id].deployments
        assert (deployment.provider, deployment.upstream_model) == (PROVIDER, upstream_model)
    assert settings.default_plan == PLAN
    rate_limit = settings.plans[PLAN].requests_per_minute
    assert rate_limit >= 100_000 * 60  # never binds at any rate this machine can reach
    assert 60_000_000 // rate_limit >= 1  # the limiter's whole-microsecond interval stays positive


def test_json_calls_can_be_measured() -> None:
    """``--upstream-stream as_requested`` gives the provider that setting, which the loader accepts."""
    text = router_config("http://127.0.0.1:9/v1", {"m": "sim"}, 64, upstream_stream="as_requested")
    assert settings_from_mapping(tomllib.loads(text), {}).provider(PROVIDER).upstream_stream == "as_requested"


def test_model_ids_are_distinct_per_behaviour() -> None:
    """Different upstream behaviours never share a catalog id."""
    behaviours = [s.upstream_model for s in scenarios(QUICK)]
    assert len({model_id(b) for b in set(behaviours)}) == len(set(behaviours))
