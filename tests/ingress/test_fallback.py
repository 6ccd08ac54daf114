"""Fallback across deployments in the ingress (app in-process, fake workers of two pools on the real
Redis): a retryable failure before content moves the request to the next deployment with a fresh job,
anything after content or not retryable is the answer, full queues and open breakers answer 503 at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rq.job import Job

from shared import events, keys
from shared.breaker import CircuitBreaker
from shared.errors import ServiceUnavailable, UpstreamBadRequest, UpstreamTimeout, UpstreamUnavailable
from tests.ingress.conftest import MESSAGES, Ingress, IngressFactory
from tests.ingress.fake_worker import FakeWorker, TakenJob
from tests.ingress.test_app import assert_error
from tests.ingress.test_relay import sse_lines
from tests.store_calls import record_failure
from tests.waiting import eventually

MODEL = "fb/model"
BODY = {"model": MODEL, "messages": MESSAGES}
STREAM_BODY = {**BODY, "stream": True}


def two_pools(**provider_a: Any) -> dict[str, Any]:
    """Settings overrides: MODEL served by pool `a` first, then pool `b` (priority)."""
    return {
        "providers": {"a": {"kind": "simulated", **provider_a}, "b": {"kind": "simulated"}},
        "models": [
            {
                "id": MODEL,
                "deployments": [
                    {"provider": "a", "upstream_model": "echo"},
                    {"provider": "b", "upstream_model": "echo"},
                ],
            }
        ],
        "breaker": {"failure_threshold": 1, "cooldown": 30, "open_set_refresh": 0.05},
    }


@pytest.fixture
async def ingress(ingress_factory: IngressFactory) -> AsyncIterator[Ingress]:
    async with ingress_factory(**two_pools()) as running:
        yield running


def worker_of(ingress: Ingress, pool: str) -> FakeWorker:
    return FakeWorker(ingress.worker.redis, ingress.worker.sync, pool=pool, name=f"fake-{pool}")


async def until_routed_to(ingress: Ingress, *pools: str) -> None:
    """Wait until the ingress' router would try exactly ``pools`` for MODEL (none: it answers 503 at once),
    its copy of the breakers' open set being refreshed every ``open_set_refresh``."""

    async def routed() -> bool:
        try:
            plan = await ingress.app.state.ingress.router.route(MODEL)
        except ServiceUnavailable:
            return pools == ()
        return tuple(deployment.provider for deployment in plan.deployments) == pools

    await eventually(routed)


async def fail_retryably(worker: FakeWorker, taken: TakenJob, error: UpstreamUnavailable) -> None:
    await worker.start(taken, provider=worker.pool)
    await worker.publish(taken, events.ERROR, {**error.to_event(), "retryable": True})


async def test_retryable_failure_falls_back_to_the_next_deployment(ingress: Ingress) -> None:
    """A 503 from A before content gets a fresh job on B; the client sees B's answer and X-Provider b."""
    a, b = worker_of(ingress, "a"), worker_of(ingress, "b")
    request = ingress.chat_task(BODY)
    first = await a.take()
    await fail_retryably(a, first, UpstreamUnavailable("a is down"))
    second = await b.take()
    assert second.id != first.id and second.job.provider == "b"
    await b.start(second, provider="b")
    await b.done(second, "from b")
    response = await request
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "from b"
    assert response.headers["x-provider"] == "b"
    assert "strategy=priority" in response.headers["x-automated-decision"]
    assert "fallbacks=1" in response.headers["x-automated-decision"]


async def test_stream_headers_wait_for_content_so_a_stream_can_fall_back(ingress: Ingress) -> None:
    """A stream whose first deployment times out before content is served whole by B, with B's header."""
    a, b = worker_of(ingress, "a"), worker_of(ingress, "b")
    request = ingress.chat_task(STREAM_BODY)
    first = await a.take()
    await fail_retryably(a, first, UpstreamTimeout())
    second = await b.take()
    await b.start(second, provider="b")
    await b.chunk(second, "hello")
    await b.done(second)
    response = await request
    assert response.status_code == 200 and response.headers["x-provider"] == "b"
    lines = sse_lines(response.text)
    assert '"hello"' in lines[0] and lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)


async def test_failure_after_the_first_token_is_never_spliced(ingress: Ingress) -> None:
    """Once A sent content, its failure ends the stream with an error event, no [DONE], nothing from B."""
    a = worker_of(ingress, "a")
    request = ingress.chat_task(STREAM_BODY)
    taken = await a.take()
    await a.start(taken, provider="a")
    await a.chunk(taken, "partial")
    await a.publish(taken, events.ERROR, {**UpstreamUnavailable("cut").to_event(), "retryable": True})
    response = await request
    assert response.status_code == 200 and response.headers["x-provider"] == "a"
    lines = sse_lines(response.text)
    assert '"partial"' in lines[0] and '"error"' in lines[-1]
    assert "data: [DONE]" not in lines
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0


async def test_non_retryable_error_is_the_answer(ingress: Ingress) -> None:
    """An upstream 400 (not retryable) is our 400 at once; no job is enqueued on B."""
    a = worker_of(ingress, "a")
    request = ingress.chat_task(BODY)
    taken = await a.take()
    await a.start(taken, provider="a")
    await a.publish(taken, events.ERROR, {**UpstreamBadRequest("too long").to_event(), "retryable": False})
    response = await request
    assert_error(response, 400, "invalid_request", "upstream_bad_request")
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0


async def test_every_deployment_failing_answers_the_last_failure_with_retry_after(ingress: Ingress) -> None:
    """A and B both fail before content: the client gets B's 503, with a Retry-After."""
    a, b = worker_of(ingress, "a"), worker_of(ingress, "b")
    request = ingress.chat_task(STREAM_BODY)
    await fail_retryably(a, await a.take(), UpstreamUnavailable("a is down"))
    await fail_retryably(b, await b.take(), UpstreamUnavailable("b is down"))
    response = await request
    body = assert_error(response, 503, "service_unavailable", "upstream_unavailable")
    assert body["error"]["message"] == "b is down"
    assert int(response.headers["retry-after"]) >= 1


async def test_open_breakers_answer_503_at_once(ingress: Ingress) -> None:
    """With both deployments' breakers open, the request ends with 503 and Retry-After, nothing enqueued."""
    breaker = CircuitBreaker(ingress.redis, ingress.settings.breaker)
    await record_failure(ingress.redis, breaker, "a/echo")
    await record_failure(ingress.redis, breaker, "b/echo")
    await until_routed_to(ingress)
    response = await asyncio.wait_for(ingress.chat(BODY), 5)
    body = assert_error(response, 503, "service_unavailable", "service_unavailable")
    assert body["error"]["message"] == "All providers temporarily unavailable."
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert await ingress.redis.llen(keys.rq_queue_key("a")) == 0
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0


async def test_open_breaker_is_skipped(ingress: Ingress) -> None:
    """A deployment whose breaker is open gets no job: the request goes straight to B."""
    await record_failure(ingress.redis, CircuitBreaker(ingress.redis, ingress.settings.breaker), "a/echo")
    await until_routed_to(ingress, "b")
    b = worker_of(ingress, "b")
    request = ingress.chat_task(BODY)
    taken = await b.take()
    await b.start(taken, provider="b")
    await b.done(taken, "ok")
    response = await request
    assert response.headers["x-provider"] == "b"
    assert await ingress.redis.llen(keys.rq_queue_key("a")) == 0


async def test_full_queue_sheds_to_the_next_deployment(ingress_factory: IngressFactory) -> None:
    """A pool whose queue holds queue_limit jobs is skipped; B serves."""
    async with ingress_factory(**two_pools(queue_limit=1)) as ingress:
        await ingress.redis.rpush(keys.rq_queue_key("a"), "someone-else")
        b = worker_of(ingress, "b")
        request = ingress.chat_task(BODY)
        taken = await b.take()
        await b.start(taken, provider="b")
        await b.done(taken, "ok")
        assert (await request).headers["x-provider"] == "b"
        assert await ingress.redis.lrange(keys.rq_queue_key("a"), 0, -1) == [b"someone-else"]


async def test_every_queue_full_is_503_at_once(ingress_factory: IngressFactory) -> None:
    """When every pool's queue is full the request gets 503 queue_full with Retry-After, not a wait."""
    overrides = two_pools(queue_limit=1)
    overrides["providers"]["b"]["queue_limit"] = 1
    async with ingress_factory(**overrides) as ingress:
        await ingress.redis.rpush(keys.rq_queue_key("a"), "x")
        await ingress.redis.rpush(keys.rq_queue_key("b"), "y")
        response = await asyncio.wait_for(ingress.chat(BODY), 5)
        assert_error(response, 503, "service_unavailable", "queue_full")
        assert response.headers["retry-after"] == "1"
        # Each attempt's job found its queue full and was taken back: queues as they were, no job left.
        assert await ingress.redis.lrange(keys.rq_queue_key("a"), 0, -1) == [b"x"]
        assert await ingress.redis.lrange(keys.rq_queue_key("b"), 0, -1) == [b"y"]
        assert await ingress.redis.keys(Job.key_for("*")) == []


async def test_queue_timeout_withdraws_and_falls_back(ingress_factory: IngressFactory) -> None:
    """A job no worker of A takes within queue_timeout is withdrawn and the request goes to B."""
    async with ingress_factory(queue_timeout=0.3, **two_pools()) as ingress:
        b = worker_of(ingress, "b")
        request = ingress.chat_task(BODY)
        taken = await b.take()
        await b.start(taken, provider="b")
        await b.done(taken, "ok")
        response = await request
        assert response.status_code == 200 and response.headers["x-provider"] == "b"
        assert await ingress.redis.llen(keys.rq_queue_key("a")) == 0


async def test_provider_order_puts_the_named_provider_first(ingress: Ingress) -> None:
    """`provider.order` = ["b"] sends the job to B first; the field itself is not sent upstream."""
    b = worker_of(ingress, "b")
    request = ingress.chat_task({**BODY, "provider": {"order": ["b"]}})
    taken = await b.take()
    assert "provider" not in taken.job.body
    await b.start(taken, provider="b")
    await b.done(taken, "ok")
    assert (await request).headers["x-provider"] == "b"


async def test_no_fallbacks_ends_with_the_preferred_failure(ingress: Ingress) -> None:
    """With allow_fallbacks false, A's retryable failure is the answer: nothing is enqueued on B."""
    a = worker_of(ingress, "a")
    request = ingress.chat_task({**BODY, "provider": {"order": ["a"], "allow_fallbacks": False}})
    await fail_retryably(a, await a.take(), UpstreamUnavailable("a is down"))
    response = await request
    assert_error(response, 503, "service_unavailable", "upstream_unavailable")
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0


async def test_no_fallbacks_to_a_provider_that_does_not_serve_the_model_is_400(ingress: Ingress) -> None:
    """Only providers that do not serve the model, without fallbacks, is a 400 naming provider.order."""
    response = await ingress.chat({**BODY, "provider": {"order": ["zzz"], "allow_fallbacks": False}})
    assert_error(response, 400, "invalid_request", "invalid_value", "provider.order")


async def test_client_leaving_during_holdback_withdraws_and_starts_nothing_else(ingress: Ingress) -> None:
    """A client gone while A's job waits for content gets it cancelled, and no job on B."""
    a = worker_of(ingress, "a")
    request = ingress.chat_task(STREAM_BODY)
    taken = await a.take()
    await a.start(taken, provider="a")
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await eventually(lambda: ingress.redis.exists(keys.cancelled_marker(taken.id)))
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0
    assert await ingress.redis.exists(Job.key_for(taken.id))


async def test_a_fallback_answers_with_the_time_the_request_was_accepted(
    ingress: Ingress, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``created`` is one clock across fallbacks (docs/api.md): the second attempt's job carries the
    first's, however long the first took to fail."""
    import time as real_time
    from types import SimpleNamespace

    from ingress import completions

    clock = {"now": 1_800_000_000.0}

    def advancing() -> float:
        clock["now"] += 30.0  # each reading half a minute later
        return clock["now"]

    monkeypatch.setattr(
        completions, "time", SimpleNamespace(time=advancing, perf_counter=real_time.perf_counter)
    )
    a, b = worker_of(ingress, "a"), worker_of(ingress, "b")
    request = ingress.chat_task(BODY)
    first = await a.take()
    await fail_retryably(a, first, UpstreamUnavailable("a is down"))
    second = await b.take()
    assert second.job.created == first.job.created
    await b.start(second, provider="b")
    await b.done(second, "from b")
    response = await request
    assert response.json()["created"] == first.job.created


async def test_no_fallback_is_enqueued_while_the_reply_channel_is_made_again(ingress: Ingress) -> None:
    """A retryable failure that comes while the hub is subscribing its channel again (it lost Redis between
    the attempts) answers 503 at once, as a new request does then: the next attempt's job is not enqueued,
    since its frames would be lost and a worker drops it unrun (nobody subscribes to its channel)."""
    a = worker_of(ingress, "a")
    hub = ingress.app.state.ingress.hub
    request = ingress.chat_task(BODY)
    first = await a.take()
    subscriber, hub._subscriber = hub._subscriber, None  # listening: False, the frames still delivered
    try:
        await fail_retryably(a, first, UpstreamUnavailable("a is down"))
        response = await asyncio.wait_for(request, 5)
    finally:
        hub._subscriber = subscriber
    assert_error(response, 503, "service_unavailable", "service_unavailable")
    assert response.headers["retry-after"] == "1"
    assert await ingress.redis.llen(keys.rq_queue_key("b")) == 0
