"""What one hand-off between processes costs on this machine: a round trip to the suite's Redis.

A request through AIOrouter crosses more processes than one through the relay, and each crossing at
low load wakes a sleeping process.  How much that costs depends on the machine far more than on the
code (a virtual machine whose idle cores halt may take tens of microseconds per wake-up, another a
few), so the suite measures it beside its figures: ``PING`` round trips to the Redis under test, one
every :data:`IDLE_GAP` seconds (Redis asleep at each) and back to back (Redis awake), and the CPU the
writer spends on a write that wakes Redis.  A plain blocking socket speaking RESP: the probe measures
the machine, not AIOrouter's client.
"""

from __future__ import annotations

import socket
import statistics
import time
from typing import Final
from urllib.parse import urlsplit

PING: Final = b"*1\r\n$4\r\nPING\r\n"
PONG: Final = b"+PONG\r\n"
IDLE_GAP: Final = 0.002  # seconds between idle pings: long enough for Redis to fall asleep
SAMPLES: Final = 400
TIMEOUT: Final = 2.0


def measure_handoff(redis_url: str, samples: int = SAMPLES) -> dict[str, float] | None:
    """Medians in microseconds: ``idle_round_trip_us``, ``busy_round_trip_us`` and
    ``idle_write_cpu_us``; None when Redis cannot be reached or answers anything but PONG (a password
    it wants, say)."""
    parts = urlsplit(redis_url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), TIMEOUT) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            idle, writes = _round_trips(sock, samples, IDLE_GAP)
            busy, _ = _round_trips(sock, samples, 0.0)
    except (OSError, ValueError):
        return None
    return {
        "idle_round_trip_us": round(statistics.median(idle), 1),
        "busy_round_trip_us": round(statistics.median(busy), 1),
        "idle_write_cpu_us": round(statistics.median(writes), 1),
    }


def _round_trips(sock: socket.socket, samples: int, gap: float) -> tuple[list[float], list[float]]:
    trips: list[float] = []
    writes: list[float] = []
    for _ in range(samples):
        if gap:
            time.sleep(gap)
        started, cpu = time.perf_counter(), time.thread_time()
        sock.sendall(PING)
        written = time.thread_time()
        reply = b""
        while len(reply) < len(PONG):
            data = sock.recv(64)
            if not data:
                raise OSError("Redis closed the connection")
            reply += data
        trips.append((time.perf_counter() - started) * 1e6)
        writes.append((written - cpu) * 1e6)
        if reply != PONG:
            raise ValueError(f"Redis answered {reply[:40]!r} to PING")
    return trips, writes
