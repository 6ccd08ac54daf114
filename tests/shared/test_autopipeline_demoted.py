"""The auto-pipelined connection on a master that a failover demoted: a ``READONLY`` reply drops it, so
the next command connects anew (through the Sentinels, in production) instead of writing to a replica
forever."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.exceptions import ConnectionError

from shared.autopipeline import AutoPipelineRedis
from shared.redis_client import async_client
from tests.conftest import IN_CI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def replica_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redis-server`` that is a replica (of a master that never answers): it refuses writes."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: this test must run)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--replicaof", "127.0.0.1", str(_free_port())]
    workdir = tmp_path_factory.mktemp("replica")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, socket_connect_timeout=0.5).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


@pytest.fixture
async def piped(replica_url: str) -> AsyncIterator[AutoPipelineRedis]:
    client = async_client(replica_url, max_connections=2, auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_readonly_reply_drops_the_connection(piped: AutoPipelineRedis) -> None:
    """A write that a replica refuses is a ConnectionError, and the next command uses a new connection."""
    await piped.ping()
    first = piped._link
    with pytest.raises(ConnectionError):
        await piped.set("k", "v")
    assert await piped.get("k") is None  # a replica still answers reads
    assert piped._link is not first


async def test_a_readonly_reply_in_a_transaction_drops_the_connection(piped: AutoPipelineRedis) -> None:
    """A transaction whose write a replica refuses fails the same way, and drops the connection."""
    await piped.ping()
    first = piped._link
    async with piped.pipeline(transaction=True) as pipe:
        pipe.set("k", "v").get("k")
        with pytest.raises(ConnectionError):
            await pipe.execute()
    await piped.ping()
    assert piped._link is not first
