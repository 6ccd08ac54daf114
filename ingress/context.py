"""What the request handlers of one ingress process share, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aredis
from starlette.applications import Starlette

from ingress.auth import Authenticator
from ingress.deferred_cleanup import DeferredCleanup
from ingress.metrics import IngressMetrics
from ingress.redis_outage import RedisOutage
from ingress.reply_hub import ReplyHub
from ingress.routing import ModelRouter
from shared.settings import Settings
from shared.store_marker import StoreMarker

if TYPE_CHECKING:  # imported only when tracing is on: the [otel] extra may not be installed
    from ingress.tracing import RequestTracer


@dataclass(frozen=True, slots=True)
class IngressContext:
    settings: Settings
    ingress_id: str
    redis: aredis.Redis
    hub: ReplyHub
    auth: Authenticator
    router: ModelRouter
    cleanup: DeferredCleanup  # releases and cancels that wait for Redis to answer again
    metrics: IngressMetrics  # the process' Prometheus registry and its request metrics
    store: StoreMarker = field(default_factory=StoreMarker)  # the store this process started on
    redis_outage: RedisOutage = field(default_factory=RedisOutage)  # what /readyz saw of Redis so far
    tracer: RequestTracer | None = None  # OpenTelemetry traces (otel_enabled); None: off, zero cost


def ingress_context(app: Starlette) -> IngressContext:
    context: IngressContext = app.state.ingress
    return context
