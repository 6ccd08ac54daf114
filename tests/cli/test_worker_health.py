"""`aiorouter worker-health`: an exec probe that passes while a real worker's liveness key lives, fails
readiness but not liveness when Redis is unreachable, and fails once the worker's process is frozen."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from tests.waiting import eventually_sync

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
SETTINGS = """
worker_heartbeat_interval = 0.2
worker_dead_after = 1.0

[providers.simulated]
kind = "simulated"
concurrency = 4

[[models]]
id = "aiorouter/echo"
deployments = [{ provider = "simulated", upstream_model = "echo" }]
"""


def _environment(tmp_path: Path, redis_url: str) -> dict[str, str]:
    config = tmp_path / "aiorouter.toml"
    config.write_text(SETTINGS)
    return {**os.environ, "REDIS_URL": redis_url, "AIOROUTER_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}


def _probe(env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cli", "worker-health", *options]
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def worker(
    tmp_path: Path, redis_url: str, clean_redis: redis.Redis
) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    """A real `aiorouter worker --name-file` process of the simulated pool, stopped at the end."""
    env = _environment(tmp_path, redis_url)
    name_file = tmp_path / "worker-name"
    argv = [sys.executable, "-m", "cli", "worker", "--pool", "simulated", "--name-file", str(name_file)]
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, name_file, env
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_a_running_worker_is_ready_and_live(
    worker: tuple[subprocess.Popen[bytes], Path, dict[str, str]], clean_redis: redis.Redis
) -> None:
    """The worker writes its name to --name-file and, once registered, both probes pass by that file."""
    _process, name_file, env = worker
    eventually_sync(lambda: _probe(env, "--name-file", str(name_file)).returncode == 0, within=30)
    name = name_file.read_text()
    assert clean_redis.exists(keys.worker_alive(name))
    live = _probe(env, "--name-file", str(name_file), "--probe", "live")
    assert live.returncode == 0 and f"worker {name}: alive" in live.stdout
    assert _probe(env, "--name", name).returncode == 0


def test_a_frozen_worker_fails_both_probes(
    worker: tuple[subprocess.Popen[bytes], Path, dict[str, str]],
) -> None:
    """A worker whose process stopped turning (SIGSTOP: its loop and liveness thread frozen) loses its
    liveness key after worker_dead_after, and then fails liveness (a restart is the cure) and readiness."""
    process, name_file, env = worker
    eventually_sync(lambda: _probe(env, "--name-file", str(name_file)).returncode == 0, within=30)
    os.kill(process.pid, signal.SIGSTOP)
    live = eventually_sync(
        lambda: (r := _probe(env, "--name-file", str(name_file), "--probe", "live")).returncode == 1 and r,
        within=30,
    )
    assert "no liveness key" in live.stderr
    assert _probe(env, "--name-file", str(name_file)).returncode == 1


def test_unreachable_redis_fails_readiness_but_not_liveness(tmp_path: Path) -> None:
    """With Redis unreachable, liveness passes (a restart would not help) and readiness fails, each with
    one line saying so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _environment(tmp_path, f"redis://127.0.0.1:{port}/0")
    live = _probe(env, "--name", "w1", "--probe", "live")
    assert live.returncode == 0 and "not judging liveness" in live.stdout
    ready = _probe(env, "--name", "w1", "--probe", "ready")
    assert ready.returncode == 1 and "unreachable" in ready.stderr and "Traceback" not in ready.stderr


def test_no_name_file_yet_fails(tmp_path: Path, redis_url: str) -> None:
    """Before the worker wrote its name, the probe fails with one line instead of a traceback."""
    env = _environment(tmp_path, redis_url)
    result = _probe(env, "--name-file", str(tmp_path / "missing"), "--probe", "live")
    assert result.returncode == 1 and "not started yet" in result.stderr and "Traceback" not in result.stderr
