"""What the ``/v1/files`` and ``/v1/batches`` handlers of one ingress process share, built in the app's
lifespan next to the :class:`~ingress.context.IngressContext` whose Redis client and key cache they use."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis
from starlette.requests import Request

from ingress.api_keys import ApiKeyRecord
from ingress.auth import Authenticator
from ingress.batches.storage import FileStorage
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class BatchServices:
    settings: Settings
    redis: aredis.Redis
    auth: Authenticator
    storage: FileStorage

    async def authenticate(self, request: Request) -> ApiKeyRecord:
        """The API key of the request (401 without a valid one); its account owns what it creates."""
        return await self.auth.authenticate(request.headers.get("authorization"))


def services(request: Request) -> BatchServices:
    found: BatchServices = request.app.state.batches
    return found
