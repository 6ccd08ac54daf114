"""OpenTelemetry traces of completions: one trace per request, its context carried in the job as a W3C
traceparent, spans for admission, queue wait, upstream and relay; none of it when tracing is off."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ingress.tracing import RequestTracer
from tests.ingress.conftest import Ingress, IngressFactory


def in_memory_tracer() -> tuple[RequestTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTracer(provider.get_tracer("test")), exporter


async def test_a_request_is_one_trace_carried_in_its_job(ingress_factory: IngressFactory) -> None:
    """The job carries the server span's traceparent; the request's trace has the server span and its
    admission, queue wait, upstream and relay children."""
    tracer, exporter = in_memory_tracer()
    async with ingress_factory(tracer=tracer) as ingress:
        request = ingress.chat_task()
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        await ingress.worker.done(taken, "hi")
        response = await request
    assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    root = spans.pop("POST /v1/chat/completions")
    assert root.kind == SpanKind.SERVER
    assert root.attributes is not None and root.attributes["aiorouter.job_id"] == taken.id
    assert set(spans) == {"admission", "queue wait", "upstream", "relay"}
    trace_id, span_id = f"{root.context.trace_id:032x}", f"{root.context.span_id:016x}"
    assert taken.job.extra["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    for child in spans.values():
        assert child.parent is not None and child.parent.span_id == root.context.span_id
        assert child.start_time is not None and root.start_time is not None
        assert root.start_time <= child.start_time <= (child.end_time or 0) <= (root.end_time or 0)


async def test_without_a_tracer_the_job_carries_no_trace_context(ingress: Ingress) -> None:
    """Tracing off: the job has no traceparent."""
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "hi")
    assert (await request).status_code == 200
    assert "traceparent" not in taken.job.extra
