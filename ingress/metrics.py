"""The ingress' Prometheus metrics, and ``GET /metrics``.

Every label value comes from the configuration (:mod:`shared.metric_labels`): model ids of the catalog,
provider (= pool) names, HTTP status classes of the API.  A finished request is recorded once, from its
:class:`~ingress.request_record.RequestRecord`; the labelled children are cached, so recording costs a few
dictionary lookups and counter increments per request and nothing per chunk.

The per-pool gauges (queue depth, jobs running, workers alive) are read from Redis when Prometheus
scrapes, in one pipelined round trip, and the breaker gauge from the process' copy of the open set
(:mod:`ingress.metrics_route` serves them).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Final

import redis.asyncio as aredis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError

from ingress.request_record import RequestRecord
from shared import keys
from shared.metric_labels import LabelSet
from shared.routing_state import deployment_id
from shared.settings import Settings

# Seconds; LLM answers take from milliseconds (a cached short reply) to minutes (long generations).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
STATUSES: Final = ("200", "400", "401", "402", "404", "408", "413", "429", "499", "500", "502", "503", "504")
REFUSALS: Final = {"rate_limit_exceeded": "rate_limit", "insufficient_quota": "credit"}


class IngressMetrics:
    """One process' registry and the metrics of its requests."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.settings = settings
        self.model = LabelSet(settings.models)
        self.provider = LabelSet(settings.providers)
        self.status = LabelSet(STATUSES)
        r = self.registry
        self.requests = Counter(
            "aiorouter_requests",
            "Completion requests by outcome.",
            ["model", "provider", "status", "mode"],
            registry=r,
        )
        self.duration = Histogram(
            "aiorouter_request_duration_seconds",
            "Completion requests: arrival to last byte.",
            ["model", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "aiorouter_time_to_first_token_seconds",
            "Completion requests: arrival to the first content.",
            ["model", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "aiorouter_queue_wait_seconds",
            "Jobs: enqueued to started by a worker (the S frame's arrival).",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "aiorouter_router_overhead_seconds",
            "Time to first content minus queue wait and the upstream's time to first byte.",
            ["mode"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "aiorouter_tokens", "Tokens of answered requests.", ["model", "direction"], registry=r
        )
        self.cost = Counter(
            "aiorouter_cost_usd", "List-price cost of answered requests.", ["model"], registry=r
        )
        self.fallbacks = Counter(
            "aiorouter_fallbacks",
            "Deployments that failed before content and were fallen back from.",
            ["model"],
            registry=r,
        )
        self.refusals = Counter(
            "aiorouter_admission_refusals", "Requests refused at admission.", ["reason"], registry=r
        )
        self.breaker_open = Gauge(
            "aiorouter_breaker_open",
            "1 while a deployment's circuit breaker is open.",
            ["deployment"],
            registry=r,
        )
        self.pool_queued = Gauge(
            "aiorouter_pool_queue_depth", "Jobs waiting in a pool's queue.", ["pool"], registry=r
        )
        self.pool_running = Gauge(
            "aiorouter_pool_jobs_running", "Jobs a pool's workers run now.", ["pool"], registry=r
        )
        self.pool_workers = Gauge(
            "aiorouter_pool_workers_alive", "Workers of a pool with a recent heartbeat.", ["pool"], registry=r
        )
        self.scrape_errors = Counter(
            "aiorouter_metrics_redis_errors",
            "Scrapes whose Redis read of the pool gauges failed.",
            registry=r,
        )
        self._series: dict[tuple[str, str, str, str], _Series] = {}

    def _series_of(self, record: RequestRecord) -> _Series:
        """The labelled children one request records into, built once per label combination: the hot
        path then pays one dictionary lookup, not prometheus-client's ``labels()`` each time."""
        model, status = self.model(record.model), self.status(str(record.status))
        provider = self.provider(record.provider) if record.provider else "none"
        key = (model, provider, record.mode, status)  # bounded: a client's made-up model id is "other"
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, *key)
        return series

    def record(self, record: RequestRecord) -> None:
        """A finished completion request."""
        series = self._series_of(record)
        series.requests.inc()
        series.duration.observe(record.total())
        if record.fallbacks:
            series.fallbacks.inc(record.fallbacks)
        if record.error_code is not None and record.error_code in REFUSALS:
            self.refusals.labels(REFUSALS[record.error_code]).inc()
        queue = record.queue_wait()
        if queue is not None:
            series.queue_wait.observe(queue)
        ttft = record.ttft()
        if ttft is not None:
            series.ttft.observe(ttft)
            overhead = record.overhead()
            if overhead is not None:
                series.overhead.observe(overhead)
        usage = record.usage
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            series.tokens_in.inc(prompt)
            series.tokens_out.inc(completion)
            series.cost.inc(prompt * series.input_price + completion * series.output_price)

    async def refresh_gauges(self, redis: aredis.Redis, blocked: Collection[str]) -> None:
        """Read the per-pool gauges from Redis (one round trip); ``blocked``: the open breakers."""
        pools = sorted(self.settings.providers)
        since = time.time() - self.settings.worker_dead_after
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for pool in pools:
                    pipe.llen(keys.rq_queue_key(pool))
                    pipe.zcard(keys.rq_started_registry(pool))
                    pipe.zcount(keys.pool_workers(pool), since, "+inf")
                replies = await pipe.execute()
        except RedisError:
            self.scrape_errors.inc()
        else:
            for i, pool in enumerate(pools):
                self.pool_queued.labels(pool).set(int(replies[3 * i]))
                self.pool_running.labels(pool).set(int(replies[3 * i + 1]))
                self.pool_workers.labels(pool).set(int(replies[3 * i + 2]))
        for model in self.settings.models.values():
            for deployment in model.deployments:
                dep = deployment_id(deployment)
                self.breaker_open.labels(dep).set(1 if dep in blocked else 0)


class _Series:
    """The children of one (model, provider, mode, status) combination."""

    __slots__ = (
        "cost",
        "duration",
        "fallbacks",
        "input_price",
        "output_price",
        "overhead",
        "queue_wait",
        "requests",
        "tokens_in",
        "tokens_out",
        "ttft",
    )

    def __init__(self, metrics: IngressMetrics, model: str, provider: str, mode: str, status: str) -> None:
        self.requests = metrics.requests.labels(model, provider, status, mode)
        self.duration = metrics.duration.labels(model, mode)
        self.fallbacks = metrics.fallbacks.labels(model)
        self.queue_wait = metrics.queue_wait.labels(provider)
        self.ttft = metrics.ttft.labels(model, provider)
        self.overhead = metrics.overhead.labels(mode)
        self.tokens_in = metrics.tokens.labels(model, "in")
        self.tokens_out = metrics.tokens.labels(model, "out")
        self.cost = metrics.cost.labels(model)
        entry = metrics.settings.models.get(model)  # "other" has no prices
        self.input_price = entry.input_price_per_m / 1e6 if entry is not None else 0.0
        self.output_price = entry.output_price_per_m / 1e6 if entry is not None else 0.0
