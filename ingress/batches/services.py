"""What the ``/v1/files`` and ``/v1/batches`` handlers of one ingress process share, built in the app's
lifespan next to the :class:`~ingress.context.IngressContext` whose Redis client and key cache they use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps

import redis.asyncio as aredis
from starlette.requests import Request
from starlette.responses import Response

from ingress.admission import Admission
from ingress.api_keys import ApiKeyRecord
from ingress.auth import Authenticator
from ingress.batches.storage import FileStorage
from ingress.context import ingress_context
from shared.settings import Settings

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class BatchServices:
    settings: Settings
    redis: aredis.Redis
    auth: Authenticator
    storage: FileStorage

    async def authenticate(self, request: Request) -> ApiKeyRecord:
        """The API key of the request (401 without a valid one, or ``account_suspended`` for a suspended
        account); its account owns what it creates.  The call does not count against the account's
        rate limit (a caller polls its batches; their lines are bounded by ``batch_queued_lines``), but
        its answer, an error's included, carries the ``X-RateLimit-*`` headers (:func:`rate_limited`)."""
        authorization = request.headers.get("authorization")
        record = await self.auth.authenticate(authorization)
        admission = Admission(ingress_context(request.app), record, authorization).attach(request.scope)
        request.state.rate_limit = await admission.peek()
        return record


def rate_limited(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, its answer given the ``X-RateLimit-*`` headers its authentication read."""

    @wraps(endpoint)
    async def answer(request: Request) -> Response:
        response = await endpoint(request)
        response.headers.update(getattr(request.state, "rate_limit", {}))
        return response

    return answer


def services(request: Request) -> BatchServices:
    found: BatchServices = request.app.state.batches
    return found
