"""/readyz: ready only with Redis reachable and a worker heartbeat newer than worker_dead_after."""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import keys
from tests.ingress.conftest import IngressFactory
from tests.ingress.test_app import assert_error


async def test_ready_with_a_live_worker(ingress_factory: IngressFactory) -> None:
    """A pool whose worker heartbeat is fresh makes the ingress ready."""
    async with ingress_factory() as ingress:
        response = await ingress.client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "workers": {"simulated": 1}}


async def test_not_ready_without_workers(ingress_factory: IngressFactory) -> None:
    """No pool with a live worker is a 503 envelope."""
    async with ingress_factory() as ingress:
        await ingress.redis.delete(keys.POOLS_SET, keys.pool_workers("simulated"))
        assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "no_workers")


async def test_not_ready_with_only_stale_heartbeats(ingress_factory: IngressFactory) -> None:
    """A worker whose last heartbeat is older than worker_dead_after does not count."""
    async with ingress_factory(worker_dead_after=1.0) as ingress:
        await ingress.redis.zadd(keys.pool_workers("simulated"), {ingress.worker.name: time.time() - 5})
        assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "no_workers")


async def test_not_ready_when_redis_is_unreachable(
    ingress_factory: IngressFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis error makes /readyz a 503 redis_unavailable envelope while /healthz stays 200."""
    async with ingress_factory() as ingress:

        async def unreachable(*args: object) -> None:
            raise RedisConnectionError("connection refused")

        monkeypatch.setattr(ingress.app.state.ingress.redis, "smembers", unreachable)
        assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "redis_unavailable")
        assert (await ingress.client.get("/healthz")).status_code == 200
