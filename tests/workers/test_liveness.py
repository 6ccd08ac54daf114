"""The liveness beacon: a busy event loop keeps its worker alive, a stuck one does not."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from shared import keys
from workers.liveness import LivenessBeacon

pytestmark = pytest.mark.redis

WORKER = "beacon-test-worker"


def _sample_while(client: redis.Redis, seconds: float) -> tuple[threading.Thread, list[bool]]:
    """A thread that records, every 50 ms for ``seconds``, whether the worker's liveness key exists."""
    seen: list[bool] = []

    def sample() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.append(bool(client.exists(keys.worker_alive(WORKER))))
            time.sleep(0.05)

    thread = threading.Thread(target=sample)
    thread.start()
    return thread, seen


def _beacon(redis_url: str, *, stall_limit: float = 30.0) -> LivenessBeacon:
    return LivenessBeacon(
        redis_url, worker_name=WORKER, pool="p", interval=0.1, alive_ttl_ms=300, stall_limit=stall_limit
    )


async def test_a_busy_loop_keeps_its_liveness_key(clean_redis: redis.Redis, redis_url: str) -> None:
    """The loop blocked for over three times the key's TTL: the thread keeps the key alive throughout."""
    beacon = _beacon(redis_url)
    await beacon.start()
    try:
        sampler, seen = _sample_while(clean_redis, 0.9)
        time.sleep(1.0)  # noqa: ASYNC251 -- blocking the event loop is the point
        sampler.join()
    finally:
        beacon.stop()
    assert seen and all(seen)
    assert clean_redis.zscore(keys.pool_workers("p"), WORKER) is not None


async def test_a_stuck_loop_stops_refreshing(clean_redis: redis.Redis, redis_url: str) -> None:
    """Past the stall limit the key is no longer refreshed, so it expires and the worker reads as dead."""
    beacon = _beacon(redis_url, stall_limit=0.2)
    await beacon.start()
    try:
        sampler, seen = _sample_while(clean_redis, 1.1)
        time.sleep(1.2)  # noqa: ASYNC251 -- the loop stuck
        sampler.join()
    finally:
        beacon.stop()
    assert seen[0] and not seen[-1]


async def test_a_stopped_beacon_beats_no_more(clean_redis: redis.Redis, redis_url: str) -> None:
    """After stop() (then the worker's departure deletes the key), nothing brings the key back."""
    beacon = _beacon(redis_url)
    await beacon.start()
    beacon.stop()
    clean_redis.delete(keys.worker_alive(WORKER))
    await asyncio.sleep(0.3)  # three beat intervals in which a beat would bring the key back
    assert not clean_redis.exists(keys.worker_alive(WORKER))


def test_a_beat_drops_workers_long_gone_and_keeps_the_set_bounded_in_time(
    clean_redis: redis.Redis, redis_url: str
) -> None:
    """A worker killed without departing leaves its member in the pool's set; a live worker's beat drops
    it once it is POOL_WORKER_KEPT old (a recently dead one stays, for the readers to skip), and the set
    expires that long after the last beat."""
    now = time.time()
    members = {"killed-long-ago": now - keys.POOL_WORKER_KEPT - 5, "killed-just-now": now - 5}
    clean_redis.zadd(keys.pool_workers("p"), members)
    beacon = _beacon(redis_url)
    try:
        assert beacon.beat()
    finally:
        beacon.stop()
    left = {name.decode() for name in clean_redis.zrange(keys.pool_workers("p"), 0, -1)}
    assert left == {"killed-just-now", WORKER}
    assert 0 < clean_redis.ttl(keys.pool_workers("p")) <= keys.POOL_WORKER_KEPT
