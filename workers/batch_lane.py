"""A worker's batch lane: batch lines fill the slots interactive traffic leaves free.

The worker's own dequeue loop serves the pool's interactive queue and always has a slot for it: this
lane never holds more than ``(1 - interactive_reserve)`` of the worker's slots, counting interactive
jobs too, takes lines (one script, :data:`TAKE`) only while no interactive job is queued, and never
holds more taken-but-unstarted jobs than the worker's ``worker_prefetch`` allows.  Taken jobs
go through rq's intermediate queue of the lane and are then run exactly like interactive ones.

Interactive jobs share the worker's event loop with the lines it runs, so the lane also yields the loop:
while interactive jobs are about, lines start one at a time :data:`TRICKLE_PAUSE` apart (a burst of
starts is a stall, and lines started together end together, stalling the loop again),
:class:`~workers.lane_throttle.LaneThrottle` shrinks the lines it may hold as the loop's lag grows, and
no line is taken while the worker's loop guard refuses new jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError
from rq.intermediate_queue import IntermediateQueue

from shared import keys
from shared.lua import LuaScript
from shared.settings import BatchSettings
from workers.lane_throttle import LaneThrottle

log = logging.getLogger(__name__)

TAKE = LuaScript.load("batch_lane_take")
TAKE_AT_ONCE = 32  # lines taken by one script call at most
FULL_PAUSE = 0.01  # seconds between two looks for a free slot while the lane is full
TRICKLE_PAUSE = 0.01  # seconds between two lines started while the lane yields to interactive jobs
IDLE_PAUSE = 0.25  # seconds between two looks at an empty lane (or one held back by interactive jobs)


def lane_limit(concurrency: int, interactive_reserve: float) -> int:
    """Batch lines a worker runs at most: its slots less the reserve, which keeps at least one slot for
    interactive jobs; a one-slot worker still runs one line at a time (only while none is queued)."""
    if concurrency <= 1:
        return concurrency
    limit = math.floor(concurrency * (1 - interactive_reserve))
    return max(1, min(limit, concurrency - 1) if interactive_reserve > 0 else limit)


def configured_throttle(concurrency: int, batches: BatchSettings) -> LaneThrottle:
    """The throttle of a worker's lane, as the ``[batches]`` settings say: it yields the loop to
    interactive jobs."""
    return LaneThrottle(
        lane_limit(concurrency, batches.interactive_reserve),
        yield_lag=batches.yield_lag,
        floor=batches.yield_floor,
        interactive_grace=batches.interactive_grace,
    )


class BatchLane:
    def __init__(
        self,
        redis: aredis.Redis,
        *,
        pool: str,
        concurrency: int,
        interactive_reserve: float,
        running: Callable[[], int],
        launch: Callable[[str, str], asyncio.Future[Any]],
        unstarted_room: Callable[[], int] = lambda: TAKE_AT_ONCE,
        throttle: LaneThrottle | None = None,
        lag: Callable[[], float] = lambda: 0.0,
        admits: Callable[[], bool] = lambda: True,
    ) -> None:
        """``running`` counts the worker's jobs (interactive and batch); ``launch`` starts one taken line
        and returns what ends when it ends; ``lag`` is the loop's lag and ``admits`` the worker's loop
        guard (:mod:`workers.loop_load`); ``throttle`` (by default one that never yields) bounds the lines
        held while interactive jobs run."""
        self._redis = redis
        self._queue = keys.batch_lane(pool)
        self._keys = [
            keys.rq_queue_key(pool),
            keys.rq_queue_key(self._queue),
            IntermediateQueue.get_intermediate_queue_key(keys.rq_queue_key(self._queue)),
        ]
        self.limit = lane_limit(concurrency, interactive_reserve)
        self.throttle = throttle or LaneThrottle(self.limit, yield_lag=0, floor=0, interactive_grace=0)
        self.in_flight = 0  # lines launched by this lane that have not ended
        self._lag = lag
        self._admits = admits
        self._running = running
        self._unstarted_room = unstarted_room
        self._launch = launch
        self._stop = asyncio.Event()

    @property
    def queue(self) -> str:
        return self._queue

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Take and launch batch lines until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            running = self._running()
            interactive = running > self.in_flight
            held = self.throttle.update(loop.time(), lag=self._lag(), interactive=interactive)
            yielding = self.throttle.yielding
            at_once = 1 if yielding else TAKE_AT_ONCE  # beside interactive jobs, lines start one by one
            room = min(self.limit - running, held - self.in_flight, self._unstarted_room(), at_once)
            if room <= 0 or not self._admits():
                await self._pause(FULL_PAUSE)
                continue
            try:
                taken = await TAKE(self._redis, self._keys, [room])
            except (RedisError, OSError):
                log.warning("batch lane %s: taking lines failed; retrying", self._queue, exc_info=True)
                await self._pause(IDLE_PAUSE)
                continue
            job_ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in taken]
            if self._stop.is_set():
                await self._put_back(job_ids)
                return
            for job_id in job_ids:
                self.in_flight += 1
                self._launch(job_id, self._queue).add_done_callback(self._ended)
            if not taken:
                await self._pause(IDLE_PAUSE)
            elif yielding:
                await self._pause(TRICKLE_PAUSE)

    def _ended(self, _: asyncio.Future[Any]) -> None:
        self.in_flight -= 1

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass

    async def _put_back(self, taken: list[str]) -> None:
        """Return lines taken while stopping to the head of the lane, in their order."""
        if not taken:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for raw in reversed(taken):
                    pipe.lrem(self._keys[2], 1, raw)
                    pipe.lpush(self._keys[1], raw)
                await pipe.execute()
        except (RedisError, OSError):  # rq's intermediate-queue clean-up fails them; the driver reruns them
            log.warning("batch lane %s: could not put back %d line(s)", self._queue, len(taken))
