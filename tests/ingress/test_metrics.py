"""The ingress' Prometheus metrics: what a request records, ``GET /metrics`` and its guard, the pool
gauges read from Redis at scrape time, and label values bounded by the configuration."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingress.metrics import IngressMetrics
from ingress.request_record import RequestRecord
from shared import keys
from shared.errors import RateLimitExceeded
from tests.ingress.conftest import MESSAGES, MODEL, Ingress, IngressFactory
from tests.waiting import eventually

TOKEN = "m" * 40


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(ingress: Ingress) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await ingress.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return samples(response.text)


async def test_a_completion_is_counted_with_its_latencies_and_tokens(ingress_factory: IngressFactory) -> None:
    """After one answered JSON request, /metrics shows it by model, provider, status and mode, with its
    queue wait, time to first token, overhead, tokens and cost."""
    async with ingress_factory(metrics_token=TOKEN) as ingress:
        request = ingress.chat_task()
        taken = await ingress.worker.take()
        await ingress.worker.start(taken)
        await ingress.worker.done(taken, "hi", timing={"ttfb_ms": 1.0, "upstream_ms": 2.0})
        assert (await request).status_code == 200
        found = await scrape(ingress)
    labels = (("mode", "json"), ("model", MODEL), ("provider", "simulated"), ("status", "200"))
    assert found[("aiorouter_requests_total", labels)] == 1
    assert found[("aiorouter_queue_wait_seconds_count", (("pool", "simulated"),))] == 1
    ttft = (("model", MODEL), ("provider", "simulated"))
    assert found[("aiorouter_time_to_first_token_seconds_count", ttft)] == 1
    assert found[("aiorouter_router_overhead_seconds_count", (("mode", "json"),))] == 1
    assert found[("aiorouter_tokens_total", (("direction", "in"), ("model", MODEL)))] == 3
    assert found[("aiorouter_tokens_total", (("direction", "out"), ("model", MODEL)))] == 2
    assert found[("aiorouter_cost_usd_total", (("model", MODEL),))] > 0


async def test_pool_gauges_come_from_redis_at_scrape_time(ingress_factory: IngressFactory) -> None:
    """A queued job and a heartbeating worker show as the pool's queue depth and workers alive."""
    async with ingress_factory(metrics_token=TOKEN) as ingress:
        request = ingress.chat_task()
        taken = await ingress.worker.take()  # in the intermediate list: the queue is empty again
        second = ingress.chat_task()

        async def queued() -> bool:
            return bool(await ingress.redis.llen(keys.rq_queue_key("simulated")) == 1)

        await eventually(queued)
        found = await scrape(ingress)
        assert found[("aiorouter_pool_queue_depth", (("pool", "simulated"),))] == 1
        assert found[("aiorouter_pool_workers_alive", (("pool", "simulated"),))] == 1
        assert found[("aiorouter_breaker_open", (("deployment", "simulated/echo"),))] == 0
        await ingress.worker.start(taken)
        await ingress.worker.done(taken)
        later = await ingress.worker.take()
        await ingress.worker.start(later)
        await ingress.worker.done(later)
        assert (await request).status_code == 200 and (await second).status_code == 200


async def test_metrics_are_off_without_a_token(ingress: Ingress) -> None:
    """/metrics is 404 while metrics_token is empty."""
    assert (await ingress.client.get("/metrics")).status_code == 404


async def test_metrics_refuse_a_wrong_token(ingress_factory: IngressFactory) -> None:
    """/metrics is 401 for a missing or wrong bearer token."""
    async with ingress_factory(metrics_token=TOKEN) as ingress:
        wrong = await ingress.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await ingress.client.get("/metrics")).status_code == 401


async def test_an_unknown_model_is_counted_as_other(ingress_factory: IngressFactory) -> None:
    """A model id the catalog does not have is recorded under model="other", never under what was sent."""
    async with ingress_factory(metrics_token=TOKEN) as ingress:
        response = await ingress.chat({"model": "no-such-model-123", "messages": MESSAGES})
        assert response.status_code == 404
        found = await scrape(ingress)
    labels = (("mode", "json"), ("model", "other"), ("provider", "none"), ("status", "404"))
    assert found[("aiorouter_requests_total", labels)] == 1
    assert not any("no-such-model-123" in str(key) for key in found)


def test_made_up_model_ids_share_one_series(ingress: Ingress) -> None:
    """Requests for many made-up model ids keep one cached series: the cache is bounded like the labels."""
    metrics = IngressMetrics(ingress.settings)
    for n in range(50):
        metrics.record(RequestRecord(model=f"made-up-{n}", status=404))
    assert len(metrics._series) == 1
    assert (
        metrics.registry.get_sample_value(
            "aiorouter_requests_total",
            {"model": "other", "provider": "none", "status": "404", "mode": "json"},
        )
        == 50
    )


def test_refusals_and_fallbacks_are_counted(ingress: Ingress) -> None:
    """A rate-limit refusal counts under reason="rate_limit"; a request's fallbacks add up by model."""
    metrics = IngressMetrics(ingress.settings)
    refused = RequestRecord(model=MODEL)
    refused.failed(RateLimitExceeded())
    metrics.record(refused)
    metrics.record(RequestRecord(model=MODEL, provider="simulated", fallbacks=2))
    assert (
        metrics.registry.get_sample_value("aiorouter_admission_refusals_total", {"reason": "rate_limit"}) == 1
    )
    assert metrics.registry.get_sample_value("aiorouter_fallbacks_total", {"model": MODEL}) == 2


async def test_a_request_logs_one_structured_line(ingress: Ingress, caplog: pytest.LogCaptureFixture) -> None:
    """A finished request logs one aiorouter.request line with its request id, job id, route, status,
    mode, times, tokens and fallbacks."""
    caplog.set_level(logging.INFO, logger="aiorouter.request")
    request = ingress.chat_task()
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.done(taken, "hi")
    response = await request
    (line,) = [r for r in caplog.records if r.name == "aiorouter.request"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["request_id"] == response.headers["x-request-id"]
    assert fields["job_id"] == taken.id
    assert (fields["model"], fields["provider"], fields["status"], fields["mode"]) == (
        MODEL,
        "simulated",
        200,
        "json",
    )
    assert fields["latency_ms"] >= fields["ttft_ms"] >= fields["queue_wait_ms"] >= 0
    assert (fields["prompt_tokens"], fields["completion_tokens"], fields["fallbacks"]) == (3, 2, 0)


async def test_a_stream_ended_in_error_logs_its_error(
    ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream the server ends with an error event (after its 200 went out) is logged and counted with
    that error, not as a client that left (499) when the client then closes its connection."""
    from shared.errors import UpstreamError

    caplog.set_level(logging.INFO, logger="aiorouter.request")
    request = ingress.chat_task({"model": MODEL, "messages": MESSAGES, "stream": True})
    taken = await ingress.worker.take()
    await ingress.worker.start(taken)
    await ingress.worker.chunk(taken, "partial")
    await ingress.worker.error(taken, UpstreamError("cut mid-stream"))
    response = await request
    assert response.status_code == 200 and b"upstream_error" in response.content
    (line,) = [r for r in caplog.records if r.name == "aiorouter.request"]
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["status"], fields["error"]) == (500, "upstream_error")


def test_a_job_started_before_its_enqueue_was_read_waited_nothing() -> None:
    """The worker can start a job before the ingress reads the admission's reply: the queue wait is 0,
    never negative (it feeds a histogram)."""
    record = RequestRecord(enqueued_at=10.002, started_at=10.001)
    assert record.queue_wait() == 0.0
