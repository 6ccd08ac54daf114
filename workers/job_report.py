"""What a worker reports when one of its jobs ends: its metrics (:mod:`workers.metrics`), one
structured log line (logger ``aiorouter.job``), joined to the ingress' request line by ``request_id``,
and, when tracing is on, its spans (:mod:`workers.tracing`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.errors import AIORouterError, IngressGone
from shared.jobs import CompletionJob
from shared.routing_state import deployment_id
from shared.settings import Deployment
from workers.completion import JobEnding
from workers.metrics import WorkerMetrics

if TYPE_CHECKING:  # imported only when tracing is on: the [otel] extra may not be installed
    from workers.tracing import JobTracer

log = logging.getLogger("aiorouter.job")


class JobReporter:
    """Turns a job's end into metrics and a log line; one per worker process."""

    def __init__(self, metrics: WorkerMetrics, tracer: JobTracer | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer  # OpenTelemetry spans (otel_enabled); None: off

    def ended(self, job: CompletionJob, ending: JobEnding) -> None:
        """A job that ran to its final frame."""
        if ending.error is None:
            outcome = "ok"
        else:
            outcome = "retryable" if ending.meta.get("retryable") else "error"
        usage = ending.meta.get("usage")
        usage = usage if isinstance(usage, dict) else None
        self.metrics.record(job, outcome, error=ending.error, timing=ending.timing, usage=usage)
        _log_job(job, outcome, ending.error, ending.timing, usage)
        if self.tracer is not None:
            code = ending.error.code if ending.error is not None else None
            self.tracer.job_ended(
                job, outcome, started_ns=ending.started_ns, timing=ending.timing, error=code
            )

    def stopped(self, job: CompletionJob, reason: str) -> None:
        """A job stopped before its end: ``cancelled``, ``ingress_gone``, ``timeout`` or ``shutdown``."""
        if reason == "ingress_gone":  # as for a job that learned it at a delta: an error, ingress_gone
            error = IngressGone()
            self.metrics.record(job, "error", error=error)
            _log_job(job, "error", error, {}, None)
            return
        outcome = reason or "cancelled"
        self.metrics.record(job, outcome)
        _log_job(job, outcome, None, {}, None)


def _log_job(
    job: CompletionJob,
    outcome: str,
    error: AIORouterError | None,
    timing: dict[str, float],
    usage: dict[str, Any] | None,
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    usage = usage or {}
    fields: dict[str, Any] = {
        "request_id": job.extra.get("client_request_id"),
        "job_id": job.request_id,
        "provider": job.provider,
        "deployment": deployment_id(Deployment(job.provider, job.upstream_model)),
        "outcome": outcome,
        "error": error.code if error is not None else None,
        "upstream_ttfb_ms": timing.get("ttfb_ms"),
        "duration_ms": timing.get("upstream_ms"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }
    log.info("job", extra={"fields": fields})
