"""A worker's Redis clients: three, so that neither its heartbeat nor its dequeue loop waits behind the
jobs' writes.

- ``jobs``: the jobs' commands share one auto-pipelined connection (:mod:`shared.autopipeline`); the pool
  serves the stop-request listener's pub/sub.
- ``heartbeat``: a connection of its own, so that a beat never queues behind the jobs' writes on the
  shared one: a late beat makes the ingress take a busy worker for dead (:mod:`workers.heartbeat`).
- ``blocking``: the dequeue loop's moves block, so they get a connection of their own (auto-pipelined,
  for its cheap round trips; nothing else shares it).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis

from shared.redis_client import async_client
from shared.settings import Settings

CONNECTION_WAIT = 20.0  # seconds a command that cannot share the auto-pipelined connection waits for one
BLOCKING_MARGIN = 10  # seconds the blocking connection's socket waits past the longest block


@dataclass(frozen=True, slots=True)
class WorkerConnections:
    jobs: aredis.Redis
    heartbeat: aredis.Redis
    blocking: aredis.Redis

    @classmethod
    def open(cls, settings: Settings, concurrency: int, *, longest_block: float) -> WorkerConnections:
        """The clients of a worker with ``concurrency`` slots whose moves block up to ``longest_block``
        seconds."""
        return cls(
            jobs=_client(settings, max_connections=max(4, min(concurrency, 64))),
            heartbeat=_client(settings, max_connections=1),
            blocking=async_client(
                settings.redis_url,
                max_connections=1,
                auto_pipeline=settings.redis_auto_pipeline,
                socket_timeout=longest_block + BLOCKING_MARGIN,
            ),
        )

    async def aclose(self) -> None:
        await self.jobs.aclose()
        await self.heartbeat.aclose()
        await self.blocking.aclose()


def _client(settings: Settings, *, max_connections: int) -> aredis.Redis:
    return async_client(
        settings.redis_url,
        max_connections=max_connections,
        timeout=CONNECTION_WAIT,
        auto_pipeline=settings.redis_auto_pipeline,
    )
