"""The worker watchdog: ends requests whose worker died.

Every ``settings.worker_heartbeat_interval`` it checks, in one pipeline, ``EXISTS`` of the liveness key
(:func:`shared.keys.worker_alive`) of each distinct worker serving an open request of this process; the
requests of a worker whose key expired end with 503 ``worker_lost``.

A liveness key's TTL runs on Redis' clock whether or not its worker can reach Redis: after a Redis stall
or outage (a check that took longer than an interval, or none answered for two), every key may have
expired while its worker was fine.  The watchdog then judges no worker for ``worker_dead_after``
seconds, the time a live worker needs to write its key again; a worker that really died meanwhile is
found that much later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import redis.asyncio as aredis
from redis.exceptions import RedisError

from ingress.reply_hub import ReplyHub, Subscription
from shared import keys
from shared.errors import WorkerLost

log = logging.getLogger(__name__)


class WorkerWatchdog:
    def __init__(self, redis: aredis.Redis, hub: ReplyHub, *, interval: float, dead_after: float) -> None:
        self._redis = redis
        self._hub = hub
        self._interval = interval
        self._dead_after = dead_after
        self._answered_at: float | None = None  # loop time of Redis' last answer to a check
        self._judge_from = 0.0  # loop time before which no worker is judged dead (after a stall)

    async def run(self) -> None:
        """Check forever, once per interval (cancel the task to stop); the same timer checks that stream
        clients keep reading (:meth:`ReplyHub.check_readers`)."""
        while True:
            await asyncio.sleep(self._interval)
            self._hub.check_readers(self._interval)
            try:
                await self.check_once()
            except RedisError:
                log.warning("worker watchdog could not reach Redis; will retry", exc_info=True)

    async def check_once(self) -> list[str]:
        """Fail the requests of dead workers; the names of the dead workers."""
        by_worker: defaultdict[str, list[Subscription]] = defaultdict(list)
        for subscription in self._hub.open_subscriptions():
            if subscription.worker:
                by_worker[subscription.worker].append(subscription)
        loop = asyncio.get_running_loop()
        if not by_worker:
            self._answered_at = None  # nothing asked: the next check starts afresh
            return []
        names = list(by_worker)
        asked = loop.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(keys.worker_alive(name))
            alive = await pipe.execute()
        now = loop.time()
        last, self._answered_at = self._answered_at, now
        if now - asked > self._interval or (last is not None and now - last > 2 * self._interval):
            self._judge_from = now + self._dead_after  # Redis was away: let the workers write again
            log.warning("Redis stalled or was unreachable; judging workers again in %.1f s", self._dead_after)
        if now < self._judge_from:
            return []
        dead = [name for name, exists in zip(names, alive, strict=True) if not exists]
        for name in dead:
            log.warning("worker %s stopped heartbeating; failing %d request(s)", name, len(by_worker[name]))
            for subscription in by_worker[name]:
                subscription.fail(WorkerLost())
        return dead
