"""The operator's live view of each pool: queue, running jobs, workers, its batch lane, the last minutes'
figures, breakers.

Everything comes from Redis: the queue's length, rq's started registry, the workers' heartbeats and the
per-minute counts the workers write with each job's final frame (:mod:`shared.pool_stats`), in one
pipeline, then the breakers of the pool's deployments (:meth:`shared.breaker.CircuitBreaker.views`).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aredis

from shared import keys, pool_stats
from shared.breaker import CircuitBreaker
from shared.routing_state import catalog_deployment_ids
from shared.settings import Settings


async def pool_stats_view(
    redis: aredis.Redis, settings: Settings, *, now: float | None = None
) -> dict[str, Any]:
    """Every configured or seen pool, sorted by name, with its live figures (see ``docs/dashboard.md``)."""
    now = time.time() if now is None else now
    seen = {_text(p) for p in await redis.smembers(keys.POOLS_SET)}
    names = sorted(seen | set(settings.providers))
    current = pool_stats.minute_of(now)
    minutes = list(range(current - pool_stats.WINDOW_MINUTES, current + 1))
    since = now - settings.worker_dead_after
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(keys.rq_queue_key(name))
            pipe.zcard(keys.rq_started_registry(name))
            pipe.zrangebyscore(keys.pool_workers(name), since, "+inf", withscores=True)
            pipe.llen(keys.rq_queue_key(keys.batch_lane(name)))
            pipe.zcard(keys.rq_started_registry(keys.batch_lane(name)))
            for minute in minutes:
                pipe.hgetall(keys.pool_minute(name, str(minute)))
        replies = iter(await pipe.execute())
    breakers = await CircuitBreaker(redis, settings.breaker).views(catalog_deployment_ids(settings.models))
    data = []
    for name in names:
        queued, running, workers = next(replies), next(replies), next(replies)
        lane_queued, lane_running = next(replies), next(replies)
        counts = [pool_stats.MinuteCounts.parse(minute, next(replies)) for minute in minutes]
        data.append(
            {
                "pool": name,
                "configured": name in settings.providers,
                "queued": int(queued),
                "running": int(running),
                "workers": [{"name": _text(worker), "last_heartbeat": beat} for worker, beat in workers],
                "batch_lane": {"queued": int(lane_queued), "running": int(lane_running)},
                **pool_stats.summarize(counts, now=now),
                "breakers": [b.to_dict() for b in breakers if b.deployment_id.partition("/")[0] == name],
            }
        )
    return {
        "object": "list",
        "window_minutes": pool_stats.WINDOW_MINUTES,
        "ttft_buckets_ms": list(pool_stats.TTFT_BUCKETS_MS),
        "data": data,
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
