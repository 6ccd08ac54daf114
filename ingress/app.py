"""The ingress ASGI app: routes, middleware, exception handlers, and the lifespan that opens Redis.

The lifespan opens one Redis client, starts the reply hub (this process' one pub/sub subscription), the
worker watchdog, the sweep of expired credit reservations, the watch over the store marker
(:mod:`shared.store_marker`), the retry of clean-ups a Redis outage held up
(:mod:`ingress.deferred_cleanup`) and the end of the requests a shutdown's grace leaves open
(:mod:`ingress.shutdown`), and publishes them to handlers as
``app.state.ingress`` (:class:`~ingress.context.IngressContext`).  Nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ingress.admission import sweep_reservations
from ingress.auth import Authenticator
from ingress.background import STOP_GRACE, stop_task
from ingress.batches.routes import batch_routes
from ingress.batches.services import BatchServices
from ingress.batches.storage import open_storage
from ingress.catalog import CatalogEndpoints
from ingress.completions import ChatCompletionsEndpoint
from ingress.context import IngressContext
from ingress.control.admin import admin_routes
from ingress.control.dashboard.routes import dashboard_routes
from ingress.deferred_cleanup import DeferredCleanup
from ingress.health import healthz, readyz
from ingress.http_errors import EXCEPTION_HANDLERS
from ingress.metrics import IngressMetrics
from ingress.metrics_route import metrics
from ingress.middleware import RequestContextMiddleware
from ingress.open_set import OpenSetCache
from ingress.reply_hub import ReplyHub
from ingress.routing import ModelRouter
from ingress.shutdown import ShutdownGrace, end_open_requests
from ingress.versions import VersionRegistry
from ingress.watchdog import WorkerWatchdog
from shared.breaker import CircuitBreaker
from shared.redis_client import async_client
from shared.rq_bridge import memoize_serializer_lookup
from shared.settings import Settings
from shared.store_marker import StoreMarker, watch_store

if TYPE_CHECKING:  # imported only when tracing is on: the [otel] extra may not be installed
    from ingress.tracing import RequestTracer

log = logging.getLogger(__name__)

# Requests share one auto-pipelined connection; the pool behind it serves the reply hub's pub/sub and the
# commands that cannot share (blocking ones, WATCH), and makes such a command wait for a free connection.
REDIS_CONNECTIONS = 256
REDIS_CONNECTION_WAIT = 10.0  # seconds a command waits for a free pool connection before its 503


def create_app(
    settings: Settings, *, tracer: RequestTracer | None = None, shutdown: ShutdownGrace | None = None
) -> Starlette:
    """The app; ``tracer``: OpenTelemetry traces of completions (:mod:`ingress.tracing`), None for none;
    ``shutdown``: the server's, whose grace over ends the open requests (:mod:`ingress.shutdown`), None
    for a server that never says it is shutting down."""
    memoize_serializer_lookup()  # each enqueue builds rq objects
    catalog = CatalogEndpoints(settings.models)
    routes = [
        Route("/v1/chat/completions", ChatCompletionsEndpoint(), methods=["POST"]),
        Route("/v1/models", catalog.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", catalog.get_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),  # disabled (404) unless settings.metrics_token is set
        *admin_routes(settings),  # operators only: disabled (404) unless settings.admin_token is set
        *dashboard_routes(),
        *batch_routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _ingress_context(settings, tracer, shutdown) as context:
            app.state.ingress = context
            storage = open_storage(settings.batches)
            app.state.batches = BatchServices(settings, context.redis, context.auth, storage)
            try:
                yield
            finally:
                await storage.aclose()

    versions = VersionRegistry(settings.api_versions, settings.default_api_version)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware, versions=versions)],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a trailing slash is an unknown URL, answered in the error format
    return app


@contextlib.asynccontextmanager
async def _ingress_context(
    settings: Settings, tracer: RequestTracer | None, shutdown: ShutdownGrace | None
) -> AsyncIterator[IngressContext]:
    redis = _redis_client(settings.redis_url, auto_pipeline=settings.redis_auto_pipeline)
    ingress_id = uuid.uuid4().hex  # random per process: names this process' reply channel
    cleanup = DeferredCleanup(redis)
    hub = ReplyHub(
        redis,
        ingress_id,
        buffer_limit=settings.stream_buffer_bytes,
        client_stall_timeout=settings.client_stall_timeout,
        before_resubscribe=cleanup.flush,
    )
    store = StoreMarker()
    open_set = OpenSetCache(CircuitBreaker(redis, settings.breaker))  # the breakers routing must skip
    try:
        await hub.start()
        await open_set.start()
        await store.claim(redis)
        watchdog = WorkerWatchdog(
            redis, hub, interval=settings.worker_heartbeat_interval, dead_after=settings.worker_dead_after
        )
        watchdog_task = asyncio.create_task(watchdog.run(), name="worker-watchdog")
        sweep_task = asyncio.create_task(sweep_reservations(redis), name="reservation-sweep")
        store_task = asyncio.create_task(watch_store(store, redis), name="store-watch")
        cleanup_task = asyncio.create_task(cleanup.run(), name="deferred-cleanup")
        tasks = [watchdog_task, sweep_task, store_task, cleanup_task]
        if shutdown is not None:
            tasks.append(
                asyncio.create_task(end_open_requests(hub, cleanup, shutdown), name="shutdown-grace")
            )
        try:
            yield IngressContext(
                settings=settings,
                ingress_id=ingress_id,
                redis=redis,
                hub=hub,
                auth=Authenticator(redis, ttl=settings.key_cache_ttl),
                router=ModelRouter(settings.models, redis=redis, open_set=open_set),
                store=store,
                cleanup=cleanup,
                metrics=IngressMetrics(settings),
                tracer=tracer,
            )
        finally:
            await asyncio.gather(*(stop_task(task) for task in tasks))
    finally:
        await open_set.aclose()
        await hub.stop()
        await _close_redis(redis)


async def _close_redis(redis: aredis.Redis) -> None:
    """Close the client's connections, giving up after :data:`STOP_GRACE` (closing one waits for its
    socket to close, with no bound of its own): shutdown must end whatever Redis does."""
    try:
        async with asyncio.timeout(STOP_GRACE):
            await redis.aclose()
    except (TimeoutError, RedisError, OSError) as exc:
        log.warning("could not close the Redis connections cleanly: %r", exc)


def _redis_client(url: str, *, auto_pipeline: bool) -> aredis.Redis:
    """One client: the request path's commands share one auto-pipelined connection (every request in
    flight, one write per loop pass); its pool, which makes a caller past :data:`REDIS_CONNECTIONS` wait
    for a connection, serves the reply hub's pub/sub and the rare command that cannot share."""
    return async_client(
        url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_CONNECTION_WAIT, auto_pipeline=auto_pipeline
    )
