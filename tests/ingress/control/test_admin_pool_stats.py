"""GET /admin/pools/stats in the ingress app: each pool's live figures from Redis, behind the admin token."""

from __future__ import annotations

import time

from shared import keys, pool_stats
from shared.breaker import CircuitBreaker
from shared.redis_commands import replay
from tests.ingress.conftest import IngressFactory
from tests.store_calls import record_failure

ADMIN_TOKEN = "pool-stats-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_pool_stats_reads_queue_running_minutes_and_breakers(ingress_factory: IngressFactory) -> None:
    """Jobs counted by the workers in the last minutes, queued and running jobs, the live worker and the
    pool's tripped breaker all show on the pool's row; an API key is refused."""
    async with ingress_factory(admin_token=ADMIN_TOKEN, breaker={"failure_threshold": 1}) as ingress:
        redis = ingress.redis
        now = time.time()
        commands = [
            *(c for _ in range(3) for c in pool_stats.record_commands("simulated", "t4", now=now - 120)),
            *pool_stats.record_commands("simulated", "t9", now=now),
            *pool_stats.record_commands("simulated", "err", now=now),
            *pool_stats.record_commands("simulated", "t4", now=now - 3600),  # outside the window
        ]
        async with redis.pipeline(transaction=False) as pipe:
            replay(pipe, commands)
            pipe.rpush(keys.rq_queue_key("simulated"), "queued-1", "queued-2")
            pipe.zadd(keys.rq_started_registry("simulated"), {"running-1": now + 60})
            await pipe.execute()
        await record_failure(redis, CircuitBreaker(redis, ingress.settings.breaker), "simulated/lorem")

        response = await ingress.client.get("/admin/pools/stats", headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["window_minutes"] == pool_stats.WINDOW_MINUTES
        assert body["ttft_buckets_ms"] == list(pool_stats.TTFT_BUCKETS_MS)
        (row,) = [r for r in body["data"] if r["pool"] == "simulated"]
        assert row["configured"] and row["queued"] == 2 and row["running"] == 1
        assert [w["name"] for w in row["workers"]] == ["fake-1"]
        assert row["jobs"] == 5 and row["errors"] == 1 and row["error_rate"] == 0.2
        assert 100 < row["ttft_p50_ms"] <= 250 and 5000 < row["ttft_p99_ms"] <= 10000
        assert row["requests_per_minute"] > 0
        assert len(row["minutes"]) == pool_stats.WINDOW_MINUTES + 1
        assert row["minutes"][-1]["jobs"] == 2 and row["minutes"][-1]["errors"] == 1
        breakers = {b["deployment"]: b["status"] for b in row["breakers"]}
        assert breakers == {"simulated/echo": "closed", "simulated/lorem": "open"}

        refused = await ingress.client.get("/admin/pools/stats", headers=ingress.headers())
        assert refused.status_code == 401


async def test_pool_stats_of_an_idle_pool(ingress_factory: IngressFactory) -> None:
    """A configured pool without jobs reads zero throughput and no error rate or TTFT."""
    async with ingress_factory(admin_token=ADMIN_TOKEN) as ingress:
        response = await ingress.client.get("/admin/pools/stats", headers=AUTH)
        (row,) = [r for r in response.json()["data"] if r["pool"] == "simulated"]
        assert row["jobs"] == 0 and row["requests_per_minute"] == 0.0
        assert row["error_rate"] is None and row["ttft_p50_ms"] is None and row["ttft_p99_ms"] is None
