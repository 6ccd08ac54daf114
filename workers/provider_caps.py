"""Provider-wide caps: upstream calls in flight and calls per minute, across every worker process.

``ProviderSettings.concurrency`` bounds one process; :attr:`ProviderSettings.max_concurrency` and
:attr:`ProviderSettings.requests_per_minute` bound the whole pool, however many processes serve it.  Each
job takes a slot with one Lua script (``shared/lua/provider_admit.lua``, Redis ``TIME`` as the clock)
and leases it for ``worker_dead_after``; the worker renews its leases on every heartbeat, so the slots of
a worker killed with ``-9`` free themselves.  A job over a cap waits up to ``cap_wait`` for room, then
fails with :class:`~shared.errors.UpstreamUnavailable` so the ingress falls back to another deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared import keys
from shared.errors import ServiceUnavailable, UpstreamUnavailable
from shared.lua import LuaScript
from shared.settings import ProviderSettings

_ADMIT = LuaScript.load("provider_admit")
_RENEW = LuaScript.load("provider_renew")
_LONGEST_PAUSE = 0.25  # seconds between two admission attempts of a waiting job


class ProviderCaps:
    """One worker process' view of its provider's pool-wide caps."""

    def __init__(self, redis: aredis.Redis, provider: ProviderSettings, lease: float) -> None:
        self._redis = redis
        self._provider = provider
        self._lease_ms = max(1, round(lease * 1000))
        self._held: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self._provider.max_concurrency > 0 or self._provider.requests_per_minute > 0

    @contextlib.asynccontextmanager
    async def slot(self, job_id: str) -> AsyncIterator[None]:
        """Hold one of the provider's slots for the block; raises UpstreamUnavailable when none frees up
        within ``cap_wait``."""
        if not self.enabled:
            yield
            return
        await self._acquire(job_id)
        self._held.add(job_id)
        try:
            yield
        finally:
            self._held.discard(job_id)
            if self._provider.max_concurrency > 0:
                await asyncio.shield(self._release(job_id))

    async def renew(self) -> None:
        """Extend the leases of every slot this process holds (call on each heartbeat)."""
        if not self._held or self._provider.max_concurrency <= 0:
            return
        try:
            await _RENEW(
                self._redis, [keys.provider_slots(self._provider.name)], [self._lease_ms, *self._held]
            )
        except RedisError as exc:
            raise ServiceUnavailable("Provider caps are unavailable.") from exc

    async def _acquire(self, job_id: str) -> None:
        p = self._provider
        loop = asyncio.get_running_loop()
        deadline = loop.time() + p.cap_wait
        script_keys = [keys.provider_slots(p.name), keys.provider_calls(p.name)]
        while True:
            try:
                admitted, wait_ms = await _ADMIT(
                    self._redis,
                    script_keys,
                    [job_id, p.max_concurrency, p.requests_per_minute, self._lease_ms],
                )
            except RedisError as exc:
                raise ServiceUnavailable("Provider caps are unavailable.") from exc
            if admitted:
                return
            wait = int(wait_ms) / 1000
            if loop.time() + min(wait, _LONGEST_PAUSE) > deadline:
                raise UpstreamUnavailable(
                    f"Provider {p.name!r} is at its configured capacity.",
                    code="provider_capacity",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
            await asyncio.sleep(min(wait, _LONGEST_PAUSE))

    async def _release(self, job_id: str) -> None:
        try:
            await self._redis.zrem(keys.provider_slots(self._provider.name), job_id)
        except RedisError:  # its lease runs out within worker_dead_after anyway
            pass
