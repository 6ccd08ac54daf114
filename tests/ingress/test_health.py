"""/readyz: not ready only when this ingress cannot serve (its store lost its data, or Redis has failed the
probes for longer than the outage grace); no live worker and a short Redis blip keep it ready."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import keys
from tests.ingress.conftest import IngressFactory
from tests.ingress.test_app import assert_error


async def test_ready_with_a_live_worker(ingress_factory: IngressFactory) -> None:
    """A reachable Redis holding this ingress' store makes it ready; the verbose view counts live workers."""
    async with ingress_factory() as ingress:
        response = await ingress.client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}
        detail = await ingress.client.get("/readyz?verbose")
        assert detail.status_code == 200
        assert detail.json() == {
            "status": "ready",
            "reason": None,
            "redis": "ok",
            "store": "intact",
            "workers": {"simulated": 1},
        }


async def test_ready_without_workers_and_requests_get_a_json_503(ingress_factory: IngressFactory) -> None:
    """With no live worker the ingress stays ready (the verbose view shows the pool at 0) and a request
    gets a JSON 503 queue_timeout with Retry-After instead of a connection error."""
    async with ingress_factory(queue_timeout=0.5) as ingress:
        await ingress.redis.zadd(keys.pool_workers("simulated"), {ingress.worker.name: time.time() - 60})
        assert (await ingress.client.get("/readyz")).status_code == 200
        detail = (await ingress.client.get("/readyz?verbose")).json()
        assert detail["status"] == "ready" and detail["workers"] == {"simulated": 0}
        response = await ingress.chat()
        assert_error(response, 503, "service_unavailable", "queue_timeout")
        assert int(response.headers["retry-after"]) >= 1


async def test_a_redis_blip_keeps_it_ready_until_the_outage_grace(
    ingress_factory: IngressFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis failing the probes keeps the ingress ready (the verbose view says Redis is unreachable) until
    the outage grace has passed, then /readyz is a 503 redis_unavailable; Redis answering again makes it
    ready at once.  /healthz stays 200 throughout."""
    async with ingress_factory() as ingress:
        context = ingress.app.state.ingress
        now = [1000.0]
        monkeypatch.setattr(context.redis_outage, "_clock", lambda: now[0])

        async def unreachable(*args: object) -> None:
            raise RedisConnectionError("connection refused")

        with monkeypatch.context() as down:
            down.setattr(context.redis, "get", unreachable)
            down.setattr(context.redis, "smembers", unreachable)
            assert (await ingress.client.get("/readyz")).json() == {"status": "ready"}
            now[0] += context.redis_outage.grace - 1
            detail = await ingress.client.get("/readyz?verbose")
            assert detail.status_code == 200
            assert detail.json()["redis"].startswith("unreachable for 29 s")
            now[0] += 1
            assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "redis_unavailable")
            detail = await ingress.client.get("/readyz?verbose")
            assert detail.status_code == 503
            assert detail.json()["status"] == "not_ready" and detail.json()["reason"] == "redis_unavailable"
            assert (await ingress.client.get("/healthz")).status_code == 200
        assert (await ingress.client.get("/readyz")).status_code == 200
        now[0] += context.redis_outage.grace  # a new outage starts its own grace
        with monkeypatch.context() as down:
            down.setattr(context.redis, "get", unreachable)
            assert (await ingress.client.get("/readyz")).status_code == 200


async def test_a_fresh_store_gets_a_marker_and_is_ready(ingress_factory: IngressFactory) -> None:
    """An ingress starting on a store without a marker writes one, remembers it, and is ready."""
    async with ingress_factory() as ingress:
        store_id = await ingress.redis.get(keys.STORE_MARKER)
        assert store_id is not None
        assert ingress.app.state.ingress.store.store_id == store_id.decode()
        assert (await ingress.client.get("/readyz")).status_code == 200


async def test_not_ready_once_the_store_lost_its_data(
    ingress_factory: IngressFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The marker vanishing under a running ingress (Redis restarted empty) makes /readyz a 503
    store_data_lost and logs the cause once; the marker restored (a backup) makes it ready again."""
    async with ingress_factory() as ingress:
        store_id = await ingress.redis.get(keys.STORE_MARKER)
        await ingress.redis.delete(keys.STORE_MARKER)
        with caplog.at_level(logging.ERROR, logger="shared.store_marker"):
            for _ in range(3):
                assert_error(
                    await ingress.client.get("/readyz"), 503, "service_unavailable", "store_data_lost"
                )
        lines = [r.getMessage() for r in caplog.records if r.name == "shared.store_marker"]
        assert len(lines) == 1 and "Redis lost its data" in lines[0] and keys.STORE_MARKER in lines[0]
        detail = await ingress.client.get("/readyz?verbose")
        assert detail.status_code == 503 and detail.json()["store"] == "lost"
        await ingress.redis.set(keys.STORE_MARKER, store_id)
        assert (await ingress.client.get("/readyz")).status_code == 200


async def test_a_marker_with_another_id_is_a_lost_store(ingress_factory: IngressFactory) -> None:
    """A marker rewritten by another process after a loss does not pass for the store this one started on."""
    async with ingress_factory() as ingress:
        await ingress.redis.set(keys.STORE_MARKER, "another-store")
        assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "store_data_lost")
