"""A worker's upkeep: its record in rq, from its birth to its departure, and the background loops beside
its jobs, from before it takes the first to after the last:

- the heartbeat (:mod:`workers.heartbeat`): rq's worker hash, the running jobs' executions and credit
  holds, and whether anybody still listens to them;
- the liveness beacon (:mod:`workers.liveness`), a thread;
- rq's registry maintenance (:mod:`workers.registry_maintenance`), a thread: it fails the jobs of a
  worker that died;
- the store watch (:mod:`shared.store_marker`): logs once if Redis lost its data under the worker;
- the stop-request listener (:mod:`workers.stop_requests`): cancels, and rq's worker commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from redis.exceptions import RedisError
from rq.worker.base import BaseWorker, WorkerStatus

from shared.redis_commands import run_commands
from shared.settings import Settings
from shared.store_marker import StoreMarker, watch_store
from workers import bookkeeping, stop_requests
from workers.connections import WorkerConnections
from workers.guarded_provider import GuardedProvider
from workers.heartbeat import Heartbeat, RunningJob
from workers.liveness import LivenessBeacon
from workers.registry_maintenance import RegistryMaintenance
from workers.stop_requests import EarlyCancels, StopRequestHandler

R = TypeVar("R", bound=RunningJob)


class Upkeep(Generic[R]):
    def __init__(
        self,
        worker: BaseWorker,
        settings: Settings,
        connections: WorkerConnections,
        provider: GuardedProvider,
        *,
        pool: str,
        concurrency: int,
        runs: Mapping[str, R],
        stop: Callable[[R, str], None],
        note_unheard: Callable[[str], None],
        stop_worker: Callable[[], None],
        early_cancels: EarlyCancels,
        maintenance_every: float,
    ) -> None:
        """``runs`` are the worker's jobs by id, ``stop`` stops one with a reason, ``stop_worker`` stops the
        worker; ``note_unheard`` and ``early_cancels`` are where the worker learns of a reply channel nobody
        listens to and of a cancel heard before its job's launch."""
        self._worker = worker
        self._redis = redis = connections.jobs
        self._pool = pool
        self._concurrency = concurrency
        self.heartbeat = Heartbeat(
            worker,
            connections.heartbeat,
            settings,
            runs=runs,
            stop=stop,
            note_unheard=note_unheard,
            provider=provider,
        )
        self._stop_handler = StopRequestHandler(
            worker, redis, runs=runs, stop=stop, stop_worker=stop_worker, early_cancels=early_cancels
        )
        self._beacon = LivenessBeacon(
            settings.redis_url,
            worker_name=worker.name,
            pool=pool,
            interval=settings.worker_heartbeat_interval,
            alive_ttl_ms=int(settings.worker_dead_after * 1000),
        )
        self._maintenance = RegistryMaintenance(worker, maintenance_every)
        self._halt = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Register the worker with rq, then start every loop, once the liveness key is set and a first
        beat landed."""
        await asyncio.to_thread(self._register_birth)
        await self._beacon.start()
        await self.heartbeat.beat()
        self._maintenance.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.heartbeat.run(self._halt)),
            loop.create_task(watch_store(StoreMarker(), self._redis, halt=self._halt)),
            loop.create_task(
                stop_requests.listen(
                    self._redis,
                    self._worker.pubsub_channel_name,
                    self._stop_handler.on_request,
                    self._stop_handler.read_cancel_markers,
                )
            ),
        ]

    async def stop(self) -> None:
        """Stop every loop and thread, wait for them, and register the worker's departure."""
        self._halt.set()  # heartbeat and store watch end between reads: a cancel mid-pipeline would leak it
        heartbeats, store, listener = self._tasks
        listener.cancel()
        await asyncio.gather(heartbeats, listener, store, return_exceptions=True)
        await asyncio.to_thread(self._maintenance.stop)
        await asyncio.to_thread(self._beacon.stop)
        await self._depart()

    def _register_birth(self) -> None:
        worker = self._worker
        worker.register_birth()  # type: ignore[no-untyped-call]  # rq's is untyped
        worker.set_state(WorkerStatus.STARTED)
        worker.log.info(
            "Worker %s: serving pool %s with %d slots", worker.name, self._pool, self._concurrency
        )

    async def _depart(self) -> None:
        worker = self._worker
        try:
            await run_commands(self._redis, bookkeeping.departure_commands(worker, self._pool))
            await asyncio.to_thread(worker.register_death)
        except (RedisError, OSError):
            worker.log.warning("Worker %s: could not register its death", worker.name, exc_info=True)
