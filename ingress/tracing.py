"""OpenTelemetry traces of completion requests (the optional ``[otel]`` extra, ``otel_enabled``).

One trace per request: a server span from its arrival to its end, and under it ``admission``, ``queue
wait`` (the last attempt's enqueue to its start), ``upstream`` (the start to the first content) and
``relay`` (the first content to the end), built when the request ends from the times its
:class:`~ingress.request_record.RequestRecord` collected, so nothing is traced on the way.  The server
span's context goes into the job as a W3C ``traceparent`` (``CompletionJob.extra``): the worker's spans
join the same trace (:mod:`workers.tracing`).

Only imported when tracing is on; the request path holds ``None`` otherwise and pays one comparison.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ingress.request_record import RequestRecord

_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTracer:
    """Starts a :class:`RequestTrace` per completion request."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def start(self, record: RequestRecord) -> RequestTrace:
        return RequestTrace(self._tracer, record)


class RequestTrace:
    """One request's trace: its server span now, the phases when it ends."""

    def __init__(self, tracer: Tracer, record: RequestRecord) -> None:
        self._tracer = tracer
        # Epoch nanoseconds of the record's perf_counter origin: phases are placed from its readings.
        self._epoch_ns = time.time_ns() - int((time.perf_counter() - record.received_at) * 1e9)
        self._received_at = record.received_at
        self.span: Span = tracer.start_span(
            "POST /v1/chat/completions", kind=SpanKind.SERVER, start_time=self._epoch_ns
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.span))
        self.traceparent = carrier.get("traceparent", "")

    def _ns(self, reading: float) -> int:
        return self._epoch_ns + int((reading - self._received_at) * 1e9)

    def _phase(self, name: str, start: float, end: float) -> None:
        if start and end and end >= start:
            context = trace.set_span_in_context(self.span)
            span = self._tracer.start_span(name, context=context, start_time=self._ns(start))
            span.end(end_time=self._ns(end))

    def end(self, record: RequestRecord) -> None:
        """Add the phases the record saw and end the server span."""
        ended = record.ended_at or time.perf_counter()
        self._phase("admission", record.received_at, record.admitted_at)
        self._phase("queue wait", record.enqueued_at, record.started_at)
        self._phase("upstream", record.started_at, record.first_content_at)
        self._phase("relay", record.first_content_at, ended)
        span = self.span
        span.set_attribute("aiorouter.request_id", record.request_id)
        span.set_attribute("aiorouter.job_id", record.job_id)
        span.set_attribute("aiorouter.model", record.model)
        span.set_attribute("aiorouter.provider", record.provider)
        span.set_attribute("aiorouter.mode", record.mode)
        span.set_attribute("aiorouter.fallbacks", record.fallbacks)
        span.set_attribute("http.response.status_code", record.status)
        if record.status >= 500:
            span.set_status(Status(StatusCode.ERROR, record.error_code or ""))
        span.end(end_time=self._ns(ended))
