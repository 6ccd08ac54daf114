"""A worker process' Prometheus metrics, served on its own port (``--metrics-port``).

One job is recorded once, when it ends, from its :class:`~workers.completion.JobEnding` (nothing per
chunk); the labelled children are cached.  The slot gauges read the worker's own counters when Prometheus
scrapes.  Label values come from the configuration (:mod:`shared.metric_labels`); an error's ``kind`` is
one of the codes of :mod:`shared.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from shared import errors
from shared.jobs import CompletionJob
from shared.metric_labels import LabelSet
from shared.settings import Settings

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OUTCOMES: Final = ("ok", "error", "retryable", "cancelled", "timeout", "shutdown")


def _codes(cls: type[errors.AIORouterError]) -> set[str]:
    """The default codes of ``cls`` and its subclasses."""
    codes = {cls.default_code} if cls.default_code else set()
    for sub in cls.__subclasses__():
        codes |= _codes(sub)
    return codes


# The codes of the error hierarchy, plus those the worker gives an UpstreamUnavailable of its own.
ERROR_KINDS: Final = frozenset(_codes(errors.AIORouterError) | {"circuit_open", "provider_capacity"})


class WorkerMetrics:
    """One worker process' registry and the metrics of its jobs."""

    def __init__(self, settings: Settings, pool: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.pool = pool
        self.model = LabelSet(settings.models)
        self.kind = LabelSet(ERROR_KINDS)
        r = self.registry
        self.jobs = Counter(
            "aiorouter_worker_jobs", "Jobs run, by outcome.", ["pool", "model", "outcome"], registry=r
        )
        self.ttfb = Histogram(
            "aiorouter_worker_upstream_ttfb_seconds",
            "Job start to the upstream's first delta.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "aiorouter_worker_job_duration_seconds",
            "Job start to the end of its upstream call.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "aiorouter_worker_upstream_errors",
            "Jobs that ended in an error, by kind.",
            ["pool", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "aiorouter_worker_tokens", "Tokens of the jobs run.", ["pool", "model", "direction"], registry=r
        )
        self.running = Gauge(
            "aiorouter_worker_jobs_running", "Jobs this worker runs now.", ["pool"], registry=r
        )
        self.free = Gauge(
            "aiorouter_worker_free_slots", "Jobs this worker could start now.", ["pool"], registry=r
        )
        self.concurrency = Gauge(
            "aiorouter_worker_concurrency", "Jobs this worker runs at most at once.", ["pool"], registry=r
        )
        self.loop_lag = Gauge(
            "aiorouter_worker_loop_lag_seconds",
            "How late this worker's event loop runs a ready callback (smoothed).",
            ["pool"],
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def watch_slots(self, running: Callable[[], int], concurrency: int) -> None:
        """Read the running jobs from ``running`` at each scrape."""
        self.concurrency.labels(self.pool).set(concurrency)
        self.running.labels(self.pool).set_function(running)
        self.free.labels(self.pool).set_function(lambda: max(0, concurrency - running()))

    def watch_loop_lag(self, lag: Callable[[], float]) -> None:
        """Read the loop's lag from ``lag`` at each scrape."""
        self.loop_lag.labels(self.pool).set_function(lag)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def record(
        self,
        job: CompletionJob,
        outcome: str,
        *,
        error: errors.AIORouterError | None = None,
        timing: dict[str, float] | None = None,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """A job that ended: ``outcome`` is one of :data:`OUTCOMES`."""
        pool, model, child = self.pool, self.model(job.model), self._child
        child(self.jobs, pool, model, outcome).inc()
        if error is not None:
            child(self.errors, pool, self.kind(error.code)).inc()
        if timing:
            if "ttfb_ms" in timing:
                child(self.ttfb, pool).observe(timing["ttfb_ms"] / 1000)
            if "upstream_ms" in timing:
                child(self.duration, pool).observe(timing["upstream_ms"] / 1000)
        if usage:
            child(self.tokens, pool, model, "in").inc(int(usage.get("prompt_tokens") or 0))
            child(self.tokens, pool, model, "out").inc(int(usage.get("completion_tokens") or 0))

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``port`` from a daemon thread (prometheus-client's own server)."""
        start_http_server(port, addr=host, registry=self.registry)
