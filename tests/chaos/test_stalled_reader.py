"""Clients that ask for a long stream and never read it: the ingress keeps only a bounded amount for each,
closes their connections and cancels their jobs, instead of buffering whole answers."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson

from tests.chaos.conftest import PrivateRedis, usage_records, wait_until
from tests.e2e.running_system import RunningSystem, SystemLauncher

CONFIG = """
worker_heartbeat_interval = 0.5
stream_buffer_bytes = 1048576
client_stall_timeout = 5.0

[providers.fast]
kind = "simulated"
tokens_per_second = 0.0

[[models]]
id = "chaos/long"
context_length = 131072
deployments = [{ provider = "fast", upstream_model = "lorem" }]
"""
CLIENTS = 2
MAX_TOKENS = 131_072  # ~14 MiB of SSE: the whole answer, were it buffered
RSS_GROWTH_LIMIT = 12 * 1024 * 1024  # well below one whole answer, let alone two
STOPPED_WITHIN = 30.0
CLOSED_WITHIN = 10.0


def _rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _send_request_and_never_read(system: RunningSystem) -> socket.socket:
    body = orjson.dumps(
        {
            "model": "chaos/long",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, then no reading at all
    sock.connect(("127.0.0.1", system.port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {system.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _closed_by_the_server(sock: socket.socket, within: float) -> bool:
    """Read what the kernel holds for the socket; whether the server's close (EOF or a reset) follows.
    The receive window grows first: what the server's kernel still holds for a 4 KiB window (up to its
    send buffer, megabytes) would drain one delayed ACK per window, for minutes on a loaded machine."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.settimeout(within)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_clients_that_never_read_are_cut_off_with_bounded_memory(
    launch_chaos_system: SystemLauncher, private_redis: PrivateRedis
) -> None:
    """Two clients request 131k-token streams and never read: the ingress' memory grows by far less than
    one answer, their jobs are stopped before they finish, and the ingress closes their connections."""
    system = launch_chaos_system(CONFIG, pools=["fast"])
    (ingress,) = [service for service in system.services if service.label == "ingress"]
    baseline = peak = _rss(ingress.process.pid)
    sockets = [_send_request_and_never_read(system) for _ in range(CLIENTS)]
    try:
        assert wait_until(lambda: bool(system.started_jobs("fast")), within=10), "no job started"

        def stopped() -> bool:
            nonlocal peak
            peak = max(peak, _rss(ingress.process.pid))
            return not system.started_jobs("fast")

        assert wait_until(stopped, within=STOPPED_WITHIN), "the jobs of clients that never read still run"
        assert peak - baseline < RSS_GROWTH_LIMIT, f"ingress RSS grew by {(peak - baseline) >> 20} MiB"
        assert not [r for r in usage_records(private_redis, "e2e") if r.status == "ok"], (
            "a job ran to its end"
        )
        for sock in sockets:
            assert _closed_by_the_server(sock, CLOSED_WITHIN), (
                "the ingress kept a non-reading client's stream"
            )
    finally:
        for sock in sockets:
            sock.close()
