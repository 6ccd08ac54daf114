"""CPU and memory of other processes, read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import redis

from bench.proc_stats import cpu_seconds, local_redis_pid, rss_bytes, wait_until_idle
from tests.waiting import eventually_sync


@pytest.fixture
def busy_process() -> Iterator[int]:
    with subprocess.Popen([sys.executable, "-c", "while True: pass"]) as process:
        yield process.pid
        process.kill()


@pytest.fixture
def sleeping_process() -> Iterator[int]:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as process:
        yield process.pid
        process.kill()


async def test_busy_process_keeps_the_wait_going_until_its_limit(busy_process: int) -> None:
    """A process spinning on a core is never idle: the wait lasts until ``max_wait``."""
    waited = await wait_until_idle({"busy": busy_process}, 10.0, interval=0.2, max_wait=0.6)
    assert waited >= 0.6
    assert cpu_seconds(busy_process) > 0.1


async def test_sleeping_process_is_idle_at_once(sleeping_process: int) -> None:
    """A sleeping process counts as idle after one interval."""
    waited = await wait_until_idle({"sleeper": sleeping_process}, 10.0, interval=0.2, max_wait=5.0)
    assert waited < 2.0
    assert rss_bytes(sleeping_process) > 1_000_000


@pytest.fixture
def gone_pid() -> int:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as process:
        process.wait()
    return process.pid


async def test_gone_process_counts_as_idle(gone_pid: int) -> None:
    """A pid that no longer exists neither raises nor blocks the wait."""
    assert await wait_until_idle({"gone": gone_pid}, 10.0, interval=0.1, max_wait=5.0) < 2.0


def test_local_redis_pid_only_for_a_redis_server_on_this_machine() -> None:
    """Redis' CPU is measured only when its pid is a redis-server here, reached on a loopback address."""
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", f"{workdir}/r.sock", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(unix_socket_path=f"{workdir}/r.sock")
            eventually_sync(lambda: _answers(client))  # it runs: its pid is the redis-server's now
            assert local_redis_pid(client.info("server"), "127.0.0.1") == server.pid
            assert local_redis_pid({"process_id": server.pid}, "redis.example") is None  # another host's pid
            assert local_redis_pid({"process_id": os.getpid()}, "localhost") is None  # not a redis-server
            assert local_redis_pid({}, "::1") is None
            client.close()
        finally:
            server.kill()
            server.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
