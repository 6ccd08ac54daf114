"""A real Sentinel failover under load: the master killed while streams run.  The open requests end
within a bound, their holds are released on the promoted replica, and new requests, streamed and not,
succeed within seconds, every process having found the new master through the Sentinel."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack
from typing import Any, TypeVar

import httpx
import pytest
import redis

from shared import credits, keys
from shared.redis_client import plain_async_client
from tests.chaos.conftest import _free_port, wait_until
from tests.chaos.sentinel import SentinelRedis
from tests.chaos.streams import StreamReader
from tests.conftest import IN_CI
from tests.e2e.running_system import RunningSystem, SystemLauncher

CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 30.0

[providers.slow]
kind = "simulated"
tokens_per_second = 10.0

[providers.sim]
kind = "simulated"

[[models]]
id = "chaos/slow"
input_price_per_m = 1.0
output_price_per_m = 2.0
deployments = [{ provider = "slow", upstream_model = "lorem" }]

[[models]]
id = "chaos/echo"
deployments = [{ provider = "sim", upstream_model = "echo" }]
"""
STREAMS = 3
ENDED_WITHIN = 15.0  # from the kill: the streams' connections drop at once; slack for a shared box
# From the kill: the Sentinel's down-after (1 s) and election, each process' reconnect (1 s pauses),
# slack for a shared box.
SERVED_WITHIN = 30.0
RELEASED_WITHIN = 20.0
REFRESHED_WITHIN = 10.0  # liveness beats every 0.5 s
# A stalled shared box can keep the master from answering the Sentinel's ping for its 1 s down-after: the
# Sentinel then names no master until the next answer.  The test's own reads wait that out.
MASTER_NAMED_WITHIN = 10.0

T = TypeVar("T")


@pytest.fixture
def sentinel_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: this test must run)")
        pytest.skip("redis-server is not installed")
    cluster = SentinelRedis((_free_port(), _free_port(), _free_port()), tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _add_credit(url: str, usd: int) -> None:
    async def add() -> None:
        client = plain_async_client(url)
        try:
            await credits.add_credit(client, "e2e", usd * credits.MICROS_PER_USD, reason="chaos test")
        finally:
            await client.aclose()

    asyncio.run(add())


def _on_master(operation: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``operation()``'s result, run again while the Sentinel names no master (for at most
    ``MASTER_NAMED_WITHIN`` seconds)."""
    deadline = time.monotonic() + MASTER_NAMED_WITHIN
    while True:
        try:
            return asyncio.run(operation())
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _reserved(url: str) -> int:
    async def read() -> int:
        client = plain_async_client(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return (await credits.get_balance(client, "e2e")).reserved
        finally:
            await client.aclose()

    return _on_master(read)


def _answers(system: RunningSystem, *, stream: bool, refusals: list[str] | None = None) -> bool:
    """Whether one short request gets its whole answer now; a refusal's status and code are appended
    to ``refusals``."""
    body = {"model": "chaos/echo", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"Authorization": f"Bearer {system.api_key}"}
    response = httpx.post(f"{system.base_url}/chat/completions", json=body, headers=headers, timeout=10)
    if response.status_code != 200:
        if refusals is not None:
            refusals.append(f"{response.status_code} {response.json()['error']['code']}")
        return False
    return response.text.rstrip().endswith("data: [DONE]") if stream else bool(response.json()["choices"])


def _alive_keys(url: str) -> list[bytes]:
    async def read() -> list[bytes]:
        client = plain_async_client(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return [key async for key in client.scan_iter(match=keys.worker_alive("*"))]
        finally:
            await client.aclose()

    return _on_master(read)


def _delete(url: str, names: list[bytes]) -> None:
    async def delete() -> None:
        client = plain_async_client(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await client.delete(*names)
        finally:
            await client.aclose()

    _on_master(delete)


def _streams_running(system: RunningSystem, cluster: SentinelRedis) -> list[StreamReader]:
    body = {"model": "chaos/slow", "messages": [{"role": "user", "content": "go"}], "max_tokens": 600}
    readers = [StreamReader(system, body).start() for _ in range(STREAMS)]
    for reader in readers:
        assert reader.record.first_content.wait(20), "a stream never started"
    cluster.wait_replicated()  # the holds and job records are on the replica too
    return readers


def _check_recovery(system: RunningSystem, cluster: SentinelRedis, readers: list[StreamReader]) -> None:
    """The streams end within a bound, requests meanwhile get JSON 503s, new requests of both kinds
    succeed, the holds are released and every worker's liveness thread writes to the new master."""
    failed_at = time.monotonic()
    for reader in readers:
        assert reader.join(max(0.0, ENDED_WITHIN - (time.monotonic() - failed_at))), reader.record
        assert reader.record.ending.startswith("error:"), reader.record
    refusals: list[str] = []
    served = wait_until(lambda: _answers(system, stream=False, refusals=refusals), within=SERVED_WITHIN)
    assert served, system.logs()
    assert all(refusal.startswith("503 ") for refusal in refusals), refusals  # JSON 503s, no hang
    assert wait_until(lambda: _answers(system, stream=True), within=SERVED_WITHIN), system.logs()
    assert wait_until(lambda: _reserved(cluster.url) == 0, within=RELEASED_WITHIN), system.logs()
    alive = _alive_keys(cluster.url)
    assert len(alive) == 2, alive  # one worker per pool
    _delete(cluster.url, alive)
    assert wait_until(lambda: len(_alive_keys(cluster.url)) == 2, within=REFRESHED_WITHIN), system.logs()
    assert all(s.process.poll() is None for s in system.services), system.logs()


def test_master_killed_under_streams_fails_over_to_the_replica(
    sentinel_redis: SentinelRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """kill -9 of the master under three 60 s streams: each ends (an error) within a bound, requests
    meanwhile get JSON 503s, their holds are released on the new master, new JSON and streamed requests
    succeed within seconds and the workers' liveness reaches the new master."""
    with ExitStack() as stack:
        system = SystemLauncher(sentinel_redis.url, tmp_path_factory, stack)(CONFIG, pools=["slow", "sim"])
        _add_credit(sentinel_redis.url, 100)
        assert _answers(system, stream=False) and _answers(system, stream=True)
        old_master = sentinel_redis.master_port()
        readers = _streams_running(system, sentinel_redis)
        sentinel_redis.kill_master()
        _check_recovery(system, sentinel_redis, readers)
        assert sentinel_redis.master_port() != old_master


def test_coordinated_failover_moves_every_process_to_the_promoted_replica(
    sentinel_redis: SentinelRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SENTINEL FAILOVER under three streams (the old master lives on, demoted to a replica): the same
    bounds hold, and nothing keeps writing to the demoted master."""
    with ExitStack() as stack:
        system = SystemLauncher(sentinel_redis.url, tmp_path_factory, stack)(CONFIG, pools=["slow", "sim"])
        _add_credit(sentinel_redis.url, 100)
        old_master = sentinel_redis.master_port()
        readers = _streams_running(system, sentinel_redis)
        sentinel_redis.fail_over()
        _check_recovery(system, sentinel_redis, readers)
        assert sentinel_redis.master_port() != old_master
        assert wait_until(lambda: sentinel_redis.role(old_master) == "slave", within=SERVED_WITHIN)
