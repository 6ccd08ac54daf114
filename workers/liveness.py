"""The worker's liveness key, kept fresh by a thread: a busy event loop reads as slow, not dead.

The ingress watchdog ends a request with 503 ``worker_lost`` once its worker's liveness key
(:func:`shared.keys.worker_alive`) expires, ``worker_dead_after`` after the last refresh.  Refreshed from
the event loop, that key would expire whenever the loop fell behind by a few seconds, as it can under a
burst of thousands of streams, and the ingress would fail requests the worker is still serving.

:class:`LivenessBeacon` refreshes it from a thread with its own connection, every
``worker_heartbeat_interval``, as long as the loop keeps turning: the loop stamps the time on every turn
of a periodic callback, and a loop that has not turned for ``stall_limit`` seconds (stuck, not busy)
gets no refresh, so its worker is declared lost after ``worker_dead_after`` more.  The thread also keeps
the worker in its pool's set of live workers (:func:`shared.keys.pool_workers`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from redis.exceptions import RedisError

from shared import keys
from shared.redis_client import sync_client

log = logging.getLogger(__name__)

STALL_LIMIT = 30.0  # seconds without a turn of the loop after which it counts as stuck, not busy
_STAMP_EVERY = 0.25  # seconds between the loop's stamps


class LivenessBeacon:
    def __init__(
        self,
        redis_url: str,
        *,
        worker_name: str,
        pool: str,
        interval: float,
        alive_ttl_ms: int,
        stall_limit: float = STALL_LIMIT,
    ) -> None:
        self._client = sync_client(redis_url, socket_timeout=max(1.0, interval * 2))
        self._worker_name = worker_name
        self._pool = pool
        self._interval = interval
        self._alive_ttl_ms = alive_ttl_ms
        self._stall_limit = stall_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stamp_handle: asyncio.TimerHandle | None = None
        self.last_turn = time.monotonic()  # when the loop last stamped

    async def start(self) -> None:
        """Beat once now (the worker is alive before it serves), then from the thread."""
        self._stamp(asyncio.get_running_loop())
        await asyncio.to_thread(self.beat)
        self._thread = threading.Thread(target=self._run, name=f"liveness-{self._worker_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (before the worker deletes its liveness key on departure)."""
        if self._stamp_handle is not None:
            self._stamp_handle.cancel()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval * 2 + 5)
        self._client.close()

    def beat(self) -> bool:
        """Refresh the liveness key if the loop turned recently; False when it did not (or Redis failed)."""
        stalled_for = time.monotonic() - self.last_turn
        if stalled_for > self._stall_limit:
            name = self._worker_name
            log.warning("worker %s: event loop stuck for %.0f s; liveness not refreshed", name, stalled_for)
            return False
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.set(keys.worker_alive(self._worker_name), b"1", px=self._alive_ttl_ms)
                now = time.time()
                pool_workers = keys.pool_workers(self._pool)
                pipe.zadd(pool_workers, {self._worker_name: now})
                # Workers killed without departing (kill -9, a lost node) leave their member; the live
                # ones drop those after a while, and the set of a pool nobody serves any more expires.
                pipe.zremrangebyscore(pool_workers, "-inf", now - keys.POOL_WORKER_KEPT)
                pipe.expire(pool_workers, keys.POOL_WORKER_KEPT)
                pipe.sadd(keys.POOLS_SET, self._pool)
                pipe.execute()
        except (RedisError, OSError):
            log.warning("worker %s: liveness not refreshed", self._worker_name, exc_info=True)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def _stamp(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last_turn = time.monotonic()
        self._stamp_handle = loop.call_later(_STAMP_EVERY, self._stamp, loop)
