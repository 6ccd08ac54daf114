"""One breaker shared by separate OS processes through the real Redis."""

from __future__ import annotations

import subprocess
import sys

import redis
import redis.asyncio as aredis

from shared.breaker import CircuitBreaker
from shared.settings import BreakerSettings
from tests.store_calls import allow
from tests.waiting import eventually

DEP = "prov-a/model-x"
SETTINGS = BreakerSettings(failure_threshold=3, window=30.0, cooldown=0.5, probe_timeout=30.0)

# A separate process: `fail` records three failures, `success` one success, `allow N` makes N concurrent
# allow calls and prints how many of them were admitted as the probe.
CHILD = """
import asyncio, sys
import redis.asyncio as aredis
from shared.breaker import CircuitBreaker, decision_of
from shared.errors import UpstreamUnavailable
from shared.lua import run_together
from shared.settings import BreakerSettings

DEP = "prov-a/model-x"

async def main(url, action, count):  # the breaker's calls, made as a worker's guarded provider makes them
    client = aredis.Redis.from_url(url)
    breaker = CircuitBreaker(client, BreakerSettings(failure_threshold=3, cooldown=0.5, probe_timeout=30.0))
    if action == "fail":
        for _ in range(3):
            await run_together(client, [breaker.record_call(DEP, UpstreamUnavailable())])
    elif action == "success":
        await run_together(client, [breaker.record_call(DEP, None)])
    else:
        async def allow():
            [reply] = await run_together(client, [breaker.allow_call(DEP)])
            return decision_of(reply)

        decisions = await asyncio.gather(*(allow() for _ in range(count)))
        print(sum(d.is_probe for d in decisions))
    await client.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def child(redis_url: str, action: str, count: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_url, action, str(count)], stdout=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return out


async def test_breaker_is_shared_across_processes(clean_redis: redis.Redis, redis_url: str) -> None:
    """Failures recorded by one process open the breaker for another; after the cooldown, three
    processes racing 150 allow calls get exactly one probe; its success, reported by yet another
    process, closes the breaker for everyone."""
    client = aredis.Redis.from_url(redis_url)
    breaker = CircuitBreaker(client, SETTINGS)
    try:
        finish(child(redis_url, "fail"))
        assert (await allow(client, breaker, DEP)).verdict == "open"
        assert DEP in await breaker.open_deployments()

        async def cooled() -> bool:
            return DEP not in await breaker.open_deployments()

        await eventually(cooled)
        racers = [child(redis_url, "allow", 50) for _ in range(3)]
        probes = [int(finish(p)) for p in racers]
        assert sum(probes) == 1
        assert (await allow(client, breaker, DEP)).verdict == "probing"

        finish(child(redis_url, "success"))
        assert (await allow(client, breaker, DEP)).verdict == "closed"
        assert await breaker.open_deployments() == {}
    finally:
        await client.aclose()
