"""Chaos fixtures: the real system (``aiorouter`` processes) on a private ``redis-server`` that a test
may freeze (SIGSTOP/SIGCONT, what a failover looks like to clients) or restart, and helpers to read an
account's credit and drive raw streams.  Every chaos test is bounded in time."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aredis

from shared import credits, usage
from tests.conftest import IN_CI
from tests.e2e.conftest import pytest_runtest_makereport  # a failing test's report carries the logs
from tests.e2e.running_system import SystemLauncher

REDIS_READY_TIMEOUT = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in item.nodeid:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.redis)
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class PrivateRedis:
    """A ``redis-server`` of this test alone, without persistence."""

    port: int
    workdir: Path
    persistent: bool = False  # append-only file, fsync on every write: a restart keeps every key
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always"]
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + REDIS_READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
                client.ping()
                client.close()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: every connection drops at once (what a crash looks like); :meth:`start` brings it back."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def private_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateRedis]:
    """A fresh ``redis-server`` on a free port, killed after the test; with an append-only file when the
    test is marked ``persistent_redis``."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: chaos tests must run)")
        pytest.skip(message)
    persistent = request.node.get_closest_marker("persistent_redis") is not None
    server = PrivateRedis(_free_port(), tmp_path_factory.mktemp("redis"), persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def launch_chaos_system(
    private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SystemLauncher]:
    """Start the real system on the private Redis; stopped after the test."""
    with ExitStack() as stack:
        yield SystemLauncher(private_redis.url, tmp_path_factory, stack)


def add_credit(server: PrivateRedis, account_id: str, usd: int) -> None:
    async def add() -> None:
        client = aredis.Redis.from_url(server.url)
        try:
            await credits.add_credit(client, account_id, usd * credits.MICROS_PER_USD, reason="chaos test")
        finally:
            await client.aclose()

    asyncio.run(add())


def balance(server: PrivateRedis, account_id: str) -> credits.Balance:
    """The account's credit now (``reserved``: what its open reservations hold)."""

    async def read() -> credits.Balance:
        client = aredis.Redis.from_url(server.url)
        try:
            return await credits.get_balance(client, account_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


def usage_records(server: PrivateRedis, account_id: str) -> list[usage.UsageRecord]:
    """The account's usage records, newest first."""

    async def read() -> list[usage.UsageRecord]:
        client = aredis.Redis.from_url(server.url)
        try:
            return await usage.recent_usage(client, account_id)
        finally:
            await client.aclose()

    return asyncio.run(read())


def wait_until(predicate: object, *, within: float, every: float = 0.2) -> bool:
    """Poll ``predicate`` (a callable) until it is true or ``within`` seconds pass; whether it became true."""
    assert callable(predicate)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


__all__ = [
    "PrivateRedis",
    "add_credit",
    "balance",
    "pytest_runtest_makereport",
    "usage_records",
    "wait_until",
]
