"""OpenTelemetry spans of the jobs a worker runs (the optional ``[otel]`` extra, ``otel_enabled``).

A job whose ``extra`` carries a W3C ``traceparent`` (the ingress' server span, :mod:`ingress.tracing`)
gets a ``job`` span in that trace, from its start to its end, and under it an ``upstream call`` span
(the adapter's call, with a ``first byte`` event), built when the job ends from the times it recorded:
nothing is traced while it runs.  Only imported when tracing is on.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.jobs import CompletionJob
from shared.routing_state import deployment_id
from shared.settings import Deployment

_PROPAGATOR = TraceContextTextMapPropagator()


class JobTracer:
    """Builds a traced job's spans when it ends."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def job_ended(
        self,
        job: CompletionJob,
        outcome: str,
        *,
        started_ns: int,
        timing: dict[str, float],
        error: str | None,
    ) -> None:
        traceparent = job.extra.get("traceparent")
        if not isinstance(traceparent, str) or not started_ns:
            return
        parent = _PROPAGATOR.extract({"traceparent": traceparent})
        span = self._tracer.start_span("job", context=parent, kind=SpanKind.CONSUMER, start_time=started_ns)
        span.set_attribute("aiorouter.job_id", job.request_id)
        span.set_attribute("aiorouter.provider", job.provider)
        span.set_attribute(
            "aiorouter.deployment", deployment_id(Deployment(job.provider, job.upstream_model))
        )
        span.set_attribute("aiorouter.outcome", outcome)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        upstream_ms = timing.get("upstream_ms")
        if upstream_ms is not None:
            call = self._tracer.start_span(
                "upstream call",
                context=trace.set_span_in_context(span),
                kind=SpanKind.CLIENT,
                start_time=started_ns,
            )
            ttfb_ms = timing.get("ttfb_ms")
            if ttfb_ms is not None:
                call.add_event("first byte", timestamp=started_ns + int(ttfb_ms * 1e6))
            call.end(end_time=started_ns + int(upstream_ms * 1e6))
        span.end(end_time=time.time_ns())
