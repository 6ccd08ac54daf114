"""Routing statistics on the real Redis and fakeredis: crash-safe in-flight counts, queue depth, TTFT."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis.asyncio as aredis

from shared import keys
from shared.routing_state import InflightTracker, load_stats, ttft_call
from shared.settings import Deployment, RoutingStatsSettings
from tests.store_calls import run_calls
from tests.waiting import eventually

A = Deployment("prov-a", "m")
B = Deployment("prov-b", "m")


async def sample_ttft(
    redis: aredis.Redis, dep_id: str, seconds: float, settings: RoutingStatsSettings
) -> float:
    """Fold one time-to-first-token sample in as a worker does; the average it leaves, in seconds."""
    [average_ms] = await run_calls(redis, ttft_call(dep_id, seconds, settings))
    return float(average_ms) / 1000


async def test_inflight_counts_jobs_of_every_worker(store: aredis.Redis) -> None:
    """Jobs started by two workers add up per deployment; finished jobs stop counting."""
    one = InflightTracker(store, "w1", lease=30.0)
    two = InflightTracker(store, "w2", lease=30.0)
    await run_calls(store, one.started_call("prov-a/m"))
    await run_calls(store, one.started_call("prov-a/m"))
    await run_calls(store, two.started_call("prov-a/m"))
    await run_calls(store, two.started_call("prov-b/m"))
    stats = await load_stats(store, [A, B])
    assert (stats["prov-a/m"].inflight, stats["prov-b/m"].inflight) == (3, 1)
    await run_calls(store, one.finished_call("prov-a/m"))
    await run_calls(store, two.finished_call("prov-b/m"))
    stats = await load_stats(store, [A, B])
    assert (stats["prov-a/m"].inflight, stats["prov-b/m"].inflight) == (2, 0)
    assert await store.hgetall(keys.inflight_counts("prov-a/m")) == {b"w1": b"1", b"w2": b"1"}


async def test_killed_worker_stops_counting_after_its_lease(store: aredis.Redis) -> None:
    """A worker that dies without finishing (no renew) drops out when its lease ends; a live one stays."""
    dead = InflightTracker(store, "dead", lease=0.3)
    live = InflightTracker(store, "live", lease=30.0)
    for _ in range(3):
        await run_calls(store, dead.started_call("prov-a/m"))
    await run_calls(store, live.started_call("prov-a/m"))
    assert (await load_stats(store, [A]))["prov-a/m"].inflight == 4

    async def only_the_live_one() -> bool:
        return (await load_stats(store, [A]))["prov-a/m"].inflight == 1

    await eventually(only_the_live_one)  # the dead worker's lease ran out; the live one's still runs
    # a later write also prunes the dead worker's entry
    await run_calls(store, live.started_call("prov-a/m"))
    assert await store.hkeys(keys.inflight_counts("prov-a/m")) == [b"live"]


async def test_renew_restores_counts_lost_in_redis(store: aredis.Redis) -> None:
    """The worker's own counts are the truth: a renew rewrites them after Redis lost them."""
    tracker = InflightTracker(store, "w1", lease=30.0)
    await run_calls(store, tracker.started_call("prov-a/m"))
    await run_calls(store, tracker.started_call("prov-b/m"))
    await store.flushdb()
    await tracker.renew()
    stats = await load_stats(store, [A, B])
    assert (stats["prov-a/m"].inflight, stats["prov-b/m"].inflight) == (1, 1)


async def test_queue_depth_is_the_pools_rq_queue_length(store: aredis.Redis) -> None:
    """queue_depth is LLEN of the provider's rq queue, shared by the provider's deployments."""
    await store.rpush(keys.rq_queue_key("prov-a"), "j1", "j2", "j3")
    stats = await load_stats(store, [A, B, Deployment("prov-a", "other")])
    assert stats["prov-a/m"].queue_depth == 3 and stats["prov-a/other"].queue_depth == 3
    assert stats["prov-b/m"].queue_depth == 0
    assert stats["prov-a/m"].load == 3


async def test_ttft_is_an_exponentially_decayed_average(store: aredis.Redis) -> None:
    """The first sample sets the average; later ones move it by latency_alpha."""
    settings = RoutingStatsSettings(latency_alpha=0.5, latency_ttl=60.0)
    assert (await load_stats(store, [A]))["prov-a/m"].ttft is None
    assert await sample_ttft(store, "prov-a/m", 1.0, settings) == pytest.approx(1.0)
    assert await sample_ttft(store, "prov-a/m", 0.2, settings) == pytest.approx(0.6)
    assert await sample_ttft(store, "prov-a/m", 0.2, settings) == pytest.approx(0.4)
    assert (await load_stats(store, [A]))["prov-a/m"].ttft == pytest.approx(0.4)


async def test_ttft_updates_are_atomic_under_concurrency(store: aredis.Redis) -> None:
    """Concurrent samples are all folded in: none is lost to a read-modify-write race."""
    settings = RoutingStatsSettings(latency_alpha=0.5, latency_ttl=60.0)
    await asyncio.gather(*(sample_ttft(store, "prov-a/m", 0.1, settings) for _ in range(50)))
    assert await store.hget(keys.ttft_stats("prov-a/m"), "samples") == b"50"


async def test_ttft_is_forgotten_after_latency_ttl(store: aredis.Redis) -> None:
    """A deployment without samples for latency_ttl is unmeasured again."""
    settings = RoutingStatsSettings(latency_alpha=0.5, latency_ttl=0.2)
    await sample_ttft(store, "prov-a/m", 1.0, settings)
    await asyncio.sleep(0.4)  # past latency_ttl: the passing time is what is tested
    assert (await load_stats(store, [A]))["prov-a/m"].ttft is None


async def test_finishing_more_jobs_than_started_never_goes_negative(store: aredis.Redis) -> None:
    """A finish without a start is ignored, and an out-of-order finish does not leave a stale count."""
    tracker = InflightTracker(store, "w1", lease=30.0)
    await run_calls(store, tracker.finished_call("prov-a/m"))
    assert (await load_stats(store, [A]))["prov-a/m"].inflight == 0
    await asyncio.gather(*(run_calls(store, tracker.started_call("prov-a/m")) for _ in range(20)))
    await asyncio.gather(*(run_calls(store, tracker.finished_call("prov-a/m")) for _ in range(20)))
    assert (await load_stats(store, [A]))["prov-a/m"].inflight == 0
    await tracker.renew()  # re-asserts the worker's own counts: none may be left over
    assert await store.hgetall(keys.inflight_counts("prov-a/m")) == {}


async def test_renew_survives_a_flushed_script_cache() -> None:
    """renew() pipelines EVALSHA; after SCRIPT FLUSH it falls back to the reloading path and still renews.
    On fakeredis only: flushing the real server's script cache would disturb other databases' users."""
    store = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    tracker = InflightTracker(store, "w1", lease=30.0)
    await run_calls(store, tracker.started_call("prov-a/m"))
    await store.flushall()
    await store.script_flush()
    await tracker.renew()
    assert (await load_stats(store, [A]))["prov-a/m"].inflight == 1
    await store.aclose()
