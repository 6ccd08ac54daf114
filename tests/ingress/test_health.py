"""/readyz: ready only with Redis reachable and a worker heartbeat newer than worker_dead_after."""

from __future__ import annotations

import logging
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
        await ingress.redis.set(keys.STORE_MARKER, store_id)
        assert (await ingress.client.get("/readyz")).status_code == 200


async def test_a_marker_with_another_id_is_a_lost_store(ingress_factory: IngressFactory) -> None:
    """A marker rewritten by another process after a loss does not pass for the store this one started on."""
    async with ingress_factory() as ingress:
        await ingress.redis.set(keys.STORE_MARKER, "another-store")
        assert_error(await ingress.client.get("/readyz"), 503, "service_unavailable", "store_data_lost")
