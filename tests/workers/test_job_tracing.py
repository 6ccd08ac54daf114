"""OpenTelemetry spans of a worker's jobs: a job with a traceparent gets a job span in that trace with an
upstream call under it; a job without one is not traced."""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aredis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job
from workers.job_report import JobReporter
from workers.metrics import WorkerMetrics
from workers.tracing import JobTracer

pytestmark = pytest.mark.redis

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_a_traced_job_joins_the_ingress_trace(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """A job whose extra carries a traceparent records a job span under that parent, and an upstream
    call span with a first-byte event under the job span; an untraced job records nothing."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = worker_settings(redis_url)
    reporter = JobReporter(WorkerMetrics(settings, "simulated"), JobTracer(provider.get_tracer("test")))
    traced = dataclasses.replace(
        completion_job("one two", reply_to=REPLY_CHANNEL),
        extra={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    untraced = completion_job("three", reply_to=REPLY_CHANNEL)
    async with running_worker(settings, reporter=reporter):
        await enqueue(aredis_client, traced, settings)
        await enqueue(aredis_client, untraced, settings)
        await replies.final(traced.request_id)
        await replies.final(untraced.request_id)
        spans = await eventually(lambda: {s.name: s for s in exporter.get_finished_spans()} or None)
    assert set(spans) == {"job", "upstream call"}
    job, call = spans["job"], spans["upstream call"]
    assert f"{job.context.trace_id:032x}" == TRACE_ID
    assert job.parent is not None and f"{job.parent.span_id:016x}" == PARENT_ID
    assert call.parent is not None and call.parent.span_id == job.context.span_id
    assert job.attributes is not None and job.attributes["aiorouter.job_id"] == traced.request_id
    assert [event.name for event in call.events] == ["first byte"]
