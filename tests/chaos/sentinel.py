"""A Sentinel-managed Redis of one test: a master, a replica and one ``redis-sentinel`` (quorum 1) on
loopback, with timeouts short enough that a failover takes seconds."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

SERVICE = "aior"
DOWN_AFTER_MS = 1000  # the master counts as down after this long without an answer
FAILOVER_TIMEOUT_MS = 3000
READY_TIMEOUT = 20.0


@dataclass(slots=True)
class SentinelRedis:
    """Master on ``ports[0]``, replica on ``ports[1]``, the Sentinel on ``ports[2]``."""

    ports: tuple[int, int, int]
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.ports[2]}/{SERVICE}/0"

    def start(self) -> None:
        master, replica, sentinel = self.ports
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._spawn("master", ["redis-server", "--port", str(master), *base])
        self._spawn(
            "replica",
            ["redis-server", "--port", str(replica), *base, "--replicaof", "127.0.0.1", str(master)],
        )
        self._wait(lambda: _info(replica, "replication").get("master_link_status") == "up", "replication")
        config = self.workdir / "sentinel.conf"  # Sentinel rewrites its file: one of its own
        config.write_text(
            f"port {sentinel}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        )
        self._spawn("sentinel", ["redis-server", str(config), "--sentinel"])
        self._wait(self._sentinel_sees_replica, "the Sentinel to see the replica")

    def master_port(self) -> int:
        """The master's port as the Sentinel names it now."""
        client = redis.Redis(port=self.ports[2], socket_timeout=2)
        try:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            client.close()
        return int(address[1])

    def wait_replicated(self) -> None:
        """Return once the replica has every write the master had when called."""
        master, replica, _ = self.ports
        offset = int(str(_info(master, "replication")["master_repl_offset"]))
        self._wait(
            lambda: int(str(_info(replica, "replication")["master_repl_offset"])) >= offset, "replication"
        )

    def fail_over(self) -> None:
        """``SENTINEL FAILOVER``: the replica promoted, the master demoted (its clients disconnected)."""
        client = redis.Redis(port=self.ports[2], socket_timeout=5)
        try:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            client.close()

    def role(self, port: int) -> str:
        return str(_info(port, "replication")["role"])

    def kill_master(self) -> None:
        """SIGKILL the master: every connection to it drops at once, as in a crash."""
        process = self.processes.pop("master")
        process.kill()
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self.processes.clear()

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )

    def _sentinel_sees_replica(self) -> bool:
        client = redis.Redis(port=self.ports[2], socket_timeout=2)
        try:
            replicas = client.sentinel_slaves(SERVICE)
        finally:
            client.close()
        return any(r.get("master-link-status") == "ok" and not r.get("is_sdown") for r in replicas)

    def _wait(self, ready: object, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-2000:] for p in self.workdir.glob("*.log")}
        raise RuntimeError(f"waiting for {what} timed out: {logs}")


def _info(port: int, section: str) -> dict[str, object]:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        info: dict[str, object] = client.info(section)
        return info
    finally:
        client.close()
