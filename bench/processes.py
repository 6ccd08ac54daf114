"""The systems under test as child processes: the simulated upstream, the relay, and AIOrouter from its CLI.

Children write their output to log files in a work directory (never to pipes nobody reads), run in
their own process group, and are stopped with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.router_config import PLAN, PROVIDER, write_router_config

STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


class ProcessDied(RuntimeError):
    """A process under test exited on its own; the message ends with the tail of its log."""


@dataclass(slots=True)
class Child:
    """One child process and its log file."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise ProcessDied(f"{self.label} exited with status {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_child(label: str, argv: Sequence[str], workdir: Path, env: Mapping[str, str]) -> Child:
    log = workdir / f"{label}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            process_group=0,
            preexec_fn=_die_with_parent(),
        )
    return Child(label, process, log)


def _die_with_parent() -> Callable[[], object]:
    """What the child runs before exec: ask Linux for SIGTERM when its parent dies, so that no run
    leaves orphans. The libc function is looked up here, before the fork, never in the child."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return functools.partial(prctl, PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(what: str, not_ready: Callable[[], str | None], child: Child, timeout: float = 60.0) -> None:
    """Poll ``not_ready`` (None when ready, else the reason) until ready, ``child`` dies, or ``timeout``."""
    deadline = time.monotonic() + timeout
    reason = "never checked"
    while time.monotonic() < deadline:
        child.check_alive()
        try:
            found = not_ready()
        except httpx.HTTPError as exc:
            found = f"{type(exc).__name__}: {exc}"
        if found is None:
            return
        reason = found
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s; last: {reason} (see {child.log})")


def _unless_success(response: httpx.Response) -> str | None:
    return None if response.is_success else f"HTTP {response.status_code}: {response.text[:300]}"


def aiorouter_command() -> list[str]:
    """The ``aiorouter`` console script of this environment, or the same CLI through ``-m``."""
    script = Path(sys.executable).with_name("aiorouter")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


class UpstreamProcess:
    """``python -m bench.upstream`` on a free port."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "bench.upstream", "--port", str(port)]
        self.child = start_child("upstream", argv, workdir, os.environ)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        models_url = f"{self.base_url}/models"
        wait_until("the simulated upstream", lambda: _unless_success(httpx.get(models_url)), self.child)

    def stop(self) -> None:
        self.child.stop()


class RelayProcess:
    """``python -m bench.relay`` on a free port, in front of the simulated upstream."""

    def __init__(self, workdir: Path, upstream_base_url: str) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "bench.relay", "--port", str(port), "--upstream", upstream_base_url]
        self.child = start_child("relay", argv, workdir, os.environ)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        url = f"{self.base_url}/chat/completions"
        body = {"model": "sim", "messages": [{"role": "user", "content": "ping"}]}
        wait_until("the relay", lambda: _unless_success(httpx.post(url, json=body, timeout=5)), self.child)

    def stop(self) -> None:
        self.child.stop()


class RouterProcesses:
    """AIOrouter as run in production: ``aiorouter ingress`` plus ``aiorouter worker`` processes."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        upstream_base_url: str,
        models: Mapping[str, str],
        concurrency: int,
        upstream_stream: str = "always",
    ) -> None:
        self._workdir = workdir
        self._concurrency = concurrency
        self._probe_model = next(iter(models))
        config = write_router_config(
            workdir / "aiorouter.toml", upstream_base_url, models, concurrency, upstream_stream
        )
        self._env = {**os.environ, "AIOROUTER_CONFIG": str(config), "REDIS_URL": redis_url}
        self.api_key = self._create_key()
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        argv = [*aiorouter_command(), "ingress", "--host", "127.0.0.1", "--port", str(port)]
        self.ingress = start_child("ingress", argv, workdir, self._env)
        root = self.base_url.removesuffix("/v1")
        wait_until("the ingress", lambda: _unless_success(httpx.get(f"{root}/healthz")), self.ingress)
        self.workers: list[Child] = []

    def _create_key(self) -> str:
        argv = [*aiorouter_command(), "keys", "create", "--json", "--plan", PLAN, "--account", "bench"]
        done = subprocess.run(argv, env=self._env, capture_output=True, check=False, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"aiorouter keys create failed: {done.stderr.decode(errors='replace')}")
        secret: str = orjson.loads(done.stdout)["secret"]
        return secret

    def set_workers(self, count: int) -> None:
        """Run exactly ``count`` worker processes, and return once a request goes through."""
        for worker in self.workers:
            worker.stop()
        self.workers = []
        for index in range(1, count + 1):
            pool = ["--pool", PROVIDER, "--concurrency", str(self._concurrency)]
            argv = [*aiorouter_command(), "worker", *pool]
            self.workers.append(start_child(f"worker-{index}", argv, self._workdir, self._env))
        wait_until("a request through AIOrouter", self._probe, self.ingress)
        for worker in self.workers:
            worker.check_alive()

    def _probe(self) -> str | None:
        body = {"model": self._probe_model, "messages": [{"role": "user", "content": "ping"}]}
        headers = {"authorization": f"Bearer {self.api_key}"}
        return _unless_success(
            httpx.post(f"{self.base_url}/chat/completions", json=body, headers=headers, timeout=5)
        )

    def check_alive(self) -> None:
        for child in (self.ingress, *self.workers):
            child.check_alive()

    @property
    def pids(self) -> dict[str, int]:
        pids = {"ingress": self.ingress.pid}
        pids |= {worker.label: worker.pid for worker in self.workers}
        return pids

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.ingress.stop()


@dataclass(frozen=True, slots=True)
class Stack:
    """The simulated upstream, the relay in front of it, and AIOrouter in front of it too."""

    upstream: UpstreamProcess
    relay: RelayProcess
    router: RouterProcesses


@contextmanager
def serving_stack(
    workdir: Path,
    redis_url: str,
    models: Mapping[str, str],
    concurrency: int,
    workers: int,
    upstream_stream: str = "always",
) -> Iterator[Stack]:
    """A :class:`Stack` with ``workers`` worker processes, a request through AIOrouter answered; every
    process stopped on the way out, whatever happens."""
    upstream = UpstreamProcess(workdir)
    router: RouterProcesses | None = None
    relay: RelayProcess | None = None
    try:
        relay = RelayProcess(workdir, upstream.base_url)
        router = RouterProcesses(workdir, redis_url, upstream.base_url, models, concurrency, upstream_stream)
        router.set_workers(workers)
        yield Stack(upstream, relay, router)
    finally:
        if router is not None:
            router.stop()
        if relay is not None:
            relay.stop()
        upstream.stop()
