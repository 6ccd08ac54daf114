"""The real system as subprocesses: the ingress and worker processes started through the ``aiorouter``
command on the real Redis test database, for end-to-end tests driven over HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from rq.registry import StartedJobRegistry

from cli.key_issuing import issue_key
from shared.redis_client import plain_async_client, sync_client
from shared.serialization import OrjsonSerializer
from shared.settings import load_settings

READY_TIMEOUT = 45.0  # generous: two cores shared by several engineers' test runs
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Service:
    """One subprocess of the system and the file its output goes to."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass(slots=True)
class RunningSystem:
    port: int
    api_key: str
    key_id: str
    redis_url: str
    config: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)
    clients: list[OpenAI] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def started_jobs(self, pool: str) -> list[str]:
        """Ids in rq's started registry of ``pool``: the jobs its workers run now."""
        connection = sync_client(self.redis_url)
        try:
            registry = StartedJobRegistry(pool, connection=connection, serializer=OrjsonSerializer)
            return list(registry.get_job_ids())
        finally:
            connection.close()

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def client(self, api_key: str | None = None, **options: object) -> OpenAI:
        """An OpenAI SDK client on this system, without retries so errors surface as they are; it is
        closed when the system stops."""
        client = OpenAI(base_url=self.base_url, api_key=api_key or self.api_key, max_retries=0, **options)  # type: ignore[arg-type]
        self.clients.append(client)
        return client

    def workers(self, pool: str | None = None) -> list[Service]:
        prefix = "worker" if pool is None else f"worker {pool}"
        return [s for s in self.services if s.label.startswith(prefix)]

    def logs(self) -> str:
        """Every subprocess' output, for a failing test's report."""
        parts = [f"----- {s.label} (exit {s.process.poll()}) -----\n{s.log_text()}" for s in self.services]
        return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_system(
    *,
    config_toml: str,
    redis_url: str,
    workdir: Path,
    pools: Sequence[str],
    workers_per_pool: int = 1,
    concurrency: int = 16,
    batch_driver: bool = False,
) -> Iterator[RunningSystem]:
    """Flush the test database, start workers and the ingress, wait for /readyz, create a key."""
    _flush(redis_url)
    config = workdir / "aiorouter.toml"
    config.write_text(config_toml)
    env = {**os.environ, "REDIS_URL": redis_url, "AIOROUTER_CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    with ExitStack() as stack:
        services: list[Service] = []
        stack.callback(_stop_all, services)
        for pool in pools:
            for number in range(1, workers_per_pool + 1):
                label = f"worker {pool} #{number}"
                argv = ["worker", "--pool", pool, "--concurrency", str(concurrency)]
                services.append(_start(label, argv, env, workdir))
        services.append(
            _start("ingress", ["ingress", "--host", "127.0.0.1", "--port", str(port)], env, workdir)
        )
        if batch_driver:
            services.append(_start("batch driver", ["batches"], env, workdir))
        secret, key_id = asyncio.run(_create_key(redis_url, config))
        system = RunningSystem(port, secret, key_id, redis_url, config, env, services)
        stack.callback(_close_clients, system)
        _wait_until_ready(system, {pool: workers_per_pool for pool in pools})
        yield system


def _start(label: str, arguments: list[str], env: dict[str, str], workdir: Path) -> Service:
    log = workdir / f"{label.replace(' ', '-').replace('#', '')}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *arguments],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Service(label, process, log)


def _wait_until_ready(system: RunningSystem, workers: dict[str, int]) -> None:
    """Wait until the ingress is ready and each pool has its workers alive (the verbose readiness view)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        dead = [s for s in system.services if s.process.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0].label} exited during start-up\n{system.logs()}")
        try:
            response = httpx.get(f"{system.origin}/readyz?verbose", timeout=2.0)
            alive = response.json().get("workers", {}) if response.status_code == 200 else {}
            if all(alive.get(pool, 0) >= count for pool, count in workers.items()):
                return
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(f"system not ready within {READY_TIMEOUT:.0f}s (/readyz: {last})\n{system.logs()}")


def _close_clients(system: RunningSystem) -> None:
    for client in system.clients:
        client.close()


def _stop_all(services: list[Service]) -> None:
    alive = [s for s in services if s.process.poll() is None]
    for service in alive:
        service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for service in alive:
        try:
            service.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def _flush(redis_url: str) -> None:
    client = sync_client(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


async def _create_key(redis_url: str, config: Path) -> tuple[str, str]:
    client = plain_async_client(redis_url)
    try:
        settings = load_settings(config, env={})
        issued = await issue_key(client, settings, account_id="e2e", plan="business", name="e2e")
        return issued.secret, issued.record.key_id
    finally:
        await client.aclose()


class SystemLauncher:
    """Starts systems on the test Redis database; they stop when the owning fixture ends."""

    def __init__(self, redis_url: str, tmp_path_factory: pytest.TempPathFactory, stack: ExitStack) -> None:
        self._redis_url = redis_url
        self._tmp = tmp_path_factory
        self._stack = stack
        self.systems: list[RunningSystem] = []

    def __call__(self, config_toml: str, pools: Sequence[str], **options: Any) -> RunningSystem:
        workdir: Path = self._tmp.mktemp("system")
        system = self._stack.enter_context(
            running_system(
                config_toml=config_toml, redis_url=self._redis_url, workdir=workdir, pools=pools, **options
            )
        )
        self.systems.append(system)
        return system
