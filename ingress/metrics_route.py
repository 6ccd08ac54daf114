"""``GET /metrics``: the process' Prometheus metrics, for a bearer ``metrics_token`` only.

On the API port, like the admin API, so that nothing more needs exposing; 404 while ``metrics_token`` is
empty, 401 for any other credential (compared in constant time).  A token of its own, not the admin
token: whoever scrapes should not be able to manage accounts.
"""

from __future__ import annotations

import hmac

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from ingress.context import ingress_context
from shared.errors import AuthenticationError, NotFound


async def metrics(request: Request) -> Response:
    context = ingress_context(request.app)
    token = context.settings.metrics_token
    if not token:
        raise NotFound("Metrics are disabled: set metrics_token.", code="metrics_disabled")
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, b"Bearer " + token.encode()):
        raise AuthenticationError("Invalid metrics token.", code="invalid_metrics_token")
    await context.metrics.refresh_gauges(context.redis, context.router.blocked_deployments())
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
