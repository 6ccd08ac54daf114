"""A worker's Prometheus metrics: a job recorded by outcome with its upstream times and tokens, the slot
gauges, an error's kind, and the metrics port serving them."""

from __future__ import annotations

import dataclasses
import logging
import socket
import urllib.request

import pytest
import redis.asyncio as aredis

from shared.errors import UpstreamError
from shared.settings import settings_from_mapping
from tests.waiting import eventually
from tests.workers.conftest import REPLY_CHANNEL, Replies, enqueue, running_worker, worker_settings
from tests.workers.factories import completion_job
from workers.job_report import JobReporter
from workers.metrics import WorkerMetrics

pytestmark = pytest.mark.redis


async def test_a_finished_job_is_recorded_with_its_times_and_tokens(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str
) -> None:
    """One stream job ends as outcome="ok" with one upstream TTFB and duration sample and its tokens; the
    D frame carries the same times for the ingress' Server-Timing."""
    settings = worker_settings(redis_url)
    metrics = WorkerMetrics(settings, "simulated")
    job = completion_job("one two three", reply_to=REPLY_CHANNEL)
    async with running_worker(settings, concurrency=3, reporter=JobReporter(metrics)):
        await enqueue(aredis_client, job, settings)
        done = await replies.final(job.request_id)
        sample = metrics.registry.get_sample_value
        assert sample("aiorouter_worker_concurrency", {"pool": "simulated"}) == 3
        await eventually(lambda: sample("aiorouter_worker_free_slots", {"pool": "simulated"}) == 3)
        assert sample("aiorouter_worker_jobs_running", {"pool": "simulated"}) == 0
    assert set(done.meta["timing"]) == {"ttfb_ms", "upstream_ms"}
    labels = {"pool": "simulated", "model": "other"}  # the test job's model is not in the settings' catalog
    assert sample("aiorouter_worker_jobs_total", {**labels, "outcome": "ok"}) == 1
    assert sample("aiorouter_worker_upstream_ttfb_seconds_count", {"pool": "simulated"}) == 1
    assert sample("aiorouter_worker_job_duration_seconds_count", {"pool": "simulated"}) == 1
    assert sample("aiorouter_worker_tokens_total", {**labels, "direction": "out"}) == 3


def test_an_error_is_counted_by_its_kind_and_unknown_codes_as_other() -> None:
    """An upstream error counts under its code; a code not of our hierarchy (an upstream's) is "other"."""
    settings = settings_from_mapping({}, env={})
    metrics = WorkerMetrics(settings, "simulated")
    job = completion_job("x")
    metrics.record(job, "error", error=UpstreamError())
    metrics.record(job, "error", error=UpstreamError("boom", code="weird_upstream_code_42"))
    sample = metrics.registry.get_sample_value
    assert (
        sample("aiorouter_worker_upstream_errors_total", {"pool": "simulated", "kind": "upstream_error"}) == 1
    )
    assert sample("aiorouter_worker_upstream_errors_total", {"pool": "simulated", "kind": "other"}) == 1


def test_the_metrics_port_serves_the_registry() -> None:
    """``serve(port)`` exposes the worker's metrics over HTTP."""
    metrics = WorkerMetrics(settings_from_mapping({}, env={}), "simulated")
    metrics.record(completion_job("x"), "ok")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port, host="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'aiorouter_worker_jobs_total{model="other",outcome="ok",pool="simulated"} 1.0' in text


async def test_a_job_logs_one_structured_line(
    aredis_client: aredis.Redis, replies: Replies, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A finished job logs one aiorouter.job line with the client's request id (the join to the ingress'
    line), its job id, deployment, outcome, upstream times and tokens."""
    caplog.set_level(logging.INFO, logger="aiorouter.job")
    settings = worker_settings(redis_url)
    job = dataclasses.replace(
        completion_job("one two", reply_to=REPLY_CHANNEL), extra={"client_request_id": "req-abc"}
    )
    async with running_worker(settings):
        await enqueue(aredis_client, job, settings)
        await replies.final(job.request_id)
        line = await eventually(lambda: [r for r in caplog.records if r.name == "aiorouter.job"])
    fields = line[0].fields  # type: ignore[attr-defined]
    assert (fields["request_id"], fields["job_id"], fields["deployment"], fields["outcome"]) == (
        "req-abc",
        job.request_id,
        "simulated/echo",
        "ok",
    )
    assert fields["duration_ms"] >= fields["upstream_ttfb_ms"] >= 0
    assert fields["completion_tokens"] == 2
