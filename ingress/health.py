"""``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve: Redis answers, still holds the
data this process started on (:mod:`shared.store_marker`), and some pool has a worker whose last
heartbeat is newer than ``settings.worker_dead_after``)."""

from __future__ import annotations

import time

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from ingress.context import ingress_context
from shared import keys
from shared.errors import ServiceUnavailable


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    context = ingress_context(request.app)
    redis = context.redis
    try:
        pools = sorted(_text(p) for p in await redis.smembers(keys.POOLS_SET))
        since = time.time() - context.settings.worker_dead_after
        async with redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.STORE_MARKER)
            for pool in pools:
                pipe.zcount(keys.pool_workers(pool), since, "+inf")
            marker, *counts = await pipe.execute()
    except RedisError as exc:
        raise ServiceUnavailable("Redis is unreachable.", code="redis_unavailable") from exc
    if not context.store.observe(marker):
        raise ServiceUnavailable(
            "Redis lost its data (restarted without persistence?): the store marker is gone or changed, "
            "so API keys, accounts and balances are missing. Restore Redis from a backup, or restart the "
            "AIOrouter processes to accept an empty store.",
            code="store_data_lost",
        )
    alive = {pool: count for pool, count in zip(pools, counts, strict=True) if count}
    if not alive:
        raise ServiceUnavailable("No worker is alive in any pool.", code="no_workers")
    return Response(orjson.dumps({"status": "ready", "workers": alive}), media_type="application/json")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
