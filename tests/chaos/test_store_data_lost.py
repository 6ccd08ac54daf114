"""Redis restarted without persistence under a running system: the ingress says so, in /readyz and once
in its log, instead of answering every key with 401 while claiming to be ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from shared import keys
from tests.e2e.running_system import free_port, running_system

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CONFIG = """
worker_heartbeat_interval = 0.5
worker_dead_after = 2.0
"""
READY_DEADLINE = 30.0
LOST_LINE = "Redis lost its data (restart without persistence?)"


@contextmanager
def private_redis(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of this test only, without persistence (no RDB, no AOF), stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not on PATH (CI=true: the chaos tests must run)")
        pytest.skip("redis-server is not on PATH")
    argv = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        yield process
    finally:
        process.terminate()
        process.wait(10)


def _readyz(origin: str) -> httpx.Response:
    return httpx.get(f"{origin}/readyz", timeout=5.0)


def test_a_redis_restarted_empty_fails_readiness_with_the_cause(tmp_path: Path) -> None:
    """After the private Redis restarts empty under a running ingress, /readyz answers 503 store_data_lost
    (not 200), the ingress logs the cause exactly once, and a restored marker makes it ready again."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with private_redis(port, tmp_path) as first:
        with running_system(
            config_toml=CONFIG, redis_url=url, workdir=tmp_path, pools=["simulated"]
        ) as system:
            store_id = redis.Redis(port=port).get(keys.STORE_MARKER)
            assert store_id is not None
            first.terminate()  # no RDB, no AOF: everything it held is gone
            first.wait(10)
            with private_redis(port, tmp_path):
                deadline = time.monotonic() + READY_DEADLINE
                while (response := _readyz(system.origin)).status_code != 503 or (
                    response.json()["error"]["code"] != "store_data_lost"
                ):
                    assert time.monotonic() < deadline, f"/readyz still says {response.text}"
                    time.sleep(0.2)
                for _ in range(3):
                    assert _readyz(system.origin).json()["error"]["code"] == "store_data_lost"
                redis.Redis(port=port).set(keys.STORE_MARKER, store_id)  # what a restored backup holds
                deadline = time.monotonic() + READY_DEADLINE
                while _readyz(system.origin).status_code != 200:
                    assert time.monotonic() < deadline, "a restored store did not make the ingress ready"
                    time.sleep(0.2)
            (ingress,) = [s for s in system.services if s.label == "ingress"]
            assert ingress.log_text().count(LOST_LINE) == 1, ingress.log_text()
