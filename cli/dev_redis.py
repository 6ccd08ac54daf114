"""The Redis that ``aiorouter dev`` uses, chosen in this order and said out loud:

1. the one the settings name, when ``REDIS_URL``/``AIOROUTER_REDIS_URL`` is set or the ``--config`` file sets
   ``redis_url``;
2. else a private ``redis-server`` on a free port in a temporary directory, when one is on ``PATH``;
3. else fakeredis's embedded TCP server (the ``[dev]`` extra), in a thread of this process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis

from cli.failures import CommandFailed, printable_url, redis_failure
from shared.settings import Settings

RedisSource = Literal["configured", "redis-server", "embedded"]

_STARTUP_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_REDIS_PING_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class RedisChoice:
    source: RedisSource
    reason: str


@dataclass(frozen=True, slots=True)
class DevRedis:
    url: str
    source: RedisSource
    description: str  # which Redis and why, for the user


def choose_redis(settings: Settings, env: Mapping[str, str], redis_server: str | None) -> RedisChoice:
    """Which Redis to use, and why (pure: the caller passes the environment and ``which redis-server``)."""
    for var in ("REDIS_URL", "AIOROUTER_REDIS_URL"):
        if env.get(var):
            return RedisChoice("configured", f"{var} is set")
    if settings.redis_url != Settings().redis_url:
        return RedisChoice("configured", "the settings file sets redis_url")
    if redis_server:
        return RedisChoice("redis-server", f"REDIS_URL is not set and {redis_server} is on PATH")
    return RedisChoice(
        "embedded",
        "REDIS_URL is not set and no redis-server is on PATH; fine for trying things, not for load",
    )


@contextmanager
def dev_redis(settings: Settings, env: Mapping[str, str]) -> Iterator[DevRedis]:
    """Provide a reachable Redis for the lifetime of the block; stop it afterwards if we started it."""
    binary = shutil.which("redis-server", path=env.get("PATH"))
    choice = choose_redis(settings, env, binary)
    if choice.source == "configured":
        _wait_until_reachable(settings.redis_url, timeout=_REDIS_PING_TIMEOUT)
        yield DevRedis(
            settings.redis_url, choice.source, f"{printable_url(settings.redis_url)} ({choice.reason})"
        )
    elif choice.source == "redis-server":
        assert binary is not None
        with _private_redis_server(binary) as url:
            yield DevRedis(url, choice.source, f"private redis-server at {url} ({choice.reason})")
    else:
        with _embedded_fakeredis() as url:
            yield DevRedis(url, choice.source, f"embedded fakeredis at {url} ({choice.reason})")


@contextmanager
def _private_redis_server(binary: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="aiorouter-dev-redis-") as workdir:
        port = free_port()
        log_path = Path(workdir) / "redis.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dir",
                    workdir,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                    "--client-output-buffer-limit",  # room for the ingress' pub/sub connection
                    "pubsub 256mb 64mb 60",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,  # Ctrl-C reaches only `aiorouter dev`, which stops Redis last
            )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for_private_server(process, url, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_private_server(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace").strip()
            raise CommandFailed(f"redis-server exited with status {process.returncode}: {log[-500:]}")
        if _ping(url):
            return
        time.sleep(0.05)
    raise CommandFailed(f"redis-server did not answer on {url} within {_STARTUP_TIMEOUT:.0f}s")


@contextmanager
def _embedded_fakeredis() -> Iterator[str]:
    try:
        from cli.embedded_redis import embedded_redis
    except ImportError as exc:
        raise CommandFailed(
            "no Redis available: set REDIS_URL, install redis-server, or install the dev extra "
            "(pip install -e '.[dev]') for the embedded fallback"
        ) from exc
    with embedded_redis() as url:
        yield url


def _wait_until_reachable(url: str, *, timeout: float) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise redis_failure(url, exc) from exc
    finally:
        client.close()


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
