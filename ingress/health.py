"""``GET /healthz`` (the process is up) and ``GET /readyz`` (this ingress can answer requests).

Readiness tells a load balancer whether to send this ingress traffic, so it fails only when this ingress
cannot serve at all, not when it can only refuse with a JSON 503:

- the store lost its data (:mod:`shared.store_marker`): every API key would answer 401, 503
  ``store_data_lost``;
- Redis has not answered a probe for :data:`~ingress.redis_outage.REDIS_OUTAGE_GRACE` seconds (this
  ingress is cut off, or an outage no failover ends): 503 ``redis_unavailable``.  A shorter blip keeps
  it ready: its clients get JSON 503s (``Retry-After`` where retrying helps), as from any other ingress.

No live worker in a pool is not a reason: every ingress would fail at once, and the clients would see
connection errors instead of the 503 ``queue_timeout`` (with ``Retry-After``) a request waiting for a
worker gets; a queued job is also what wakes a pool scaled to zero.  A process shutting down stops
listening, which fails the probe by itself.

``GET /readyz?verbose`` is the operator's view: the same status code, and a JSON body with each check and
the live workers of every pool that has had one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from ingress.context import IngressContext, ingress_context
from shared import keys
from shared.errors import ServiceUnavailable

READ_TIMEOUT: Final = 1.0
"""Seconds a probe waits for Redis: a frozen Redis counts as unreachable, not as a hung probe."""

STORE_LOST_MESSAGE: Final = (
    "Redis lost its data (restarted without persistence?): the store marker is gone or changed, so API "
    "keys, accounts and balances are missing. Restore Redis from a backup, or restart the AIOrouter "
    "processes to accept an empty store."
)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    context = ingress_context(request.app)
    verbose = "verbose" in request.query_params
    detail: dict[str, Any] = {}
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            if verbose:
                marker, detail["workers"] = await _marker_and_workers(context)
            else:
                marker = await context.redis.get(keys.STORE_MARKER)
    except (RedisError, OSError, TimeoutError) as exc:
        down_for = context.redis_outage.failed()
        error: ServiceUnavailable | None = None
        if down_for >= context.redis_outage.grace:
            message = f"Redis has not answered for {down_for:.0f} s."
            error = ServiceUnavailable(message, code="redis_unavailable")
        detail.update(redis=f"unreachable for {down_for:.0f} s ({type(exc).__name__})", store="unknown")
        return _answer(error, detail, verbose=verbose, cause=exc)
    context.redis_outage.answered()
    intact = context.store.observe(marker)
    detail.update(redis="ok", store="intact" if intact else "lost")
    lost = None if intact else ServiceUnavailable(STORE_LOST_MESSAGE, code="store_data_lost")
    return _answer(lost, detail, verbose=verbose)


def _answer(
    error: ServiceUnavailable | None,
    detail: dict[str, Any],
    *,
    verbose: bool,
    cause: BaseException | None = None,
) -> Response:
    """The plain answer (200, or the error envelope) or, with ``verbose``, the detail at the same status."""
    if not verbose:
        if error is not None:
            raise error from cause
        return Response(b'{"status":"ready"}', media_type="application/json")
    status = "ready" if error is None else "not_ready"
    body = {"status": status, "reason": None if error is None else error.code, **detail}
    return Response(
        orjson.dumps(body), status_code=200 if error is None else 503, media_type="application/json"
    )


async def _marker_and_workers(context: IngressContext) -> tuple[Any, dict[str, int]]:
    """The store marker and, per pool that has had a worker, how many beat within ``worker_dead_after``."""
    redis = context.redis
    pools = sorted(_text(p) for p in await redis.smembers(keys.POOLS_SET))
    since = time.time() - context.settings.worker_dead_after
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.STORE_MARKER)
        for pool in pools:
            pipe.zcount(keys.pool_workers(pool), since, "+inf")
        marker, *counts = await pipe.execute()
    return marker, {pool: int(count) for pool, count in zip(pools, counts, strict=True)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
