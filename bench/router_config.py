"""The TOML settings AIOrouter runs with in the benchmark: one ``openai`` provider at the simulated
upstream, one catalog model per upstream behaviour, and a plan whose limits never bind."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

PROVIDER = "sim"
PLAN = "bench"


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable text is a valid TOML basic string


def router_config(
    upstream_base_url: str, models: Mapping[str, str], concurrency: int, upstream_stream: str = "always"
) -> str:
    """Settings text; ``models`` maps each public model id to the upstream model name it routes to;
    ``upstream_stream`` is the provider's (its default, ``always``, is left out)."""
    lines = [
        f"default_plan = {_quote(PLAN)}",
        "queue_timeout = 60.0",
        "",
        f"[plans.{PLAN}]",
        "requests_per_minute = 6000000",  # 100,000 req/s: never binds, and GCRA keeps a 10 µs interval
        "",
        f"[providers.{PROVIDER}]",
        'kind = "openai"',
        f"base_url = {_quote(upstream_base_url)}",
        'api_key = "sk-simulated"',
        f"concurrency = {concurrency}",
        "queue_limit = 1000000",
        *([f"upstream_stream = {_quote(upstream_stream)}"] if upstream_stream != "always" else []),
        "",
        f"[providers.{PROVIDER}.timeouts]",
        "connect = 10.0",
        "first_token = 120.0",
        "idle = 120.0",
        "total = 900.0",
    ]
    for model_id, upstream_model in models.items():
        lines += [
            "",
            "[[models]]",
            f"id = {_quote(model_id)}",
            f"provider = {_quote(PROVIDER)}",
            f"upstream_model = {_quote(upstream_model)}",
        ]
    return "\n".join(lines) + "\n"


def write_router_config(
    path: Path,
    upstream_base_url: str,
    models: Mapping[str, str],
    concurrency: int,
    upstream_stream: str = "always",
) -> Path:
    path.write_text(router_config(upstream_base_url, models, concurrency, upstream_stream))
    return path
