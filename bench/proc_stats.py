"""CPU time and memory of other processes, read from ``/proc`` (Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TypeVar

T = TypeVar("T", int, float)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by ``pid`` (its threads included, children not)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        raw = fh.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def local_redis_pid(info_server: Mapping[str, object], host: str | None) -> int | None:
    """The pid of the Redis server whose ``INFO server`` is ``info_server``, if it runs on this machine
    (reached on a loopback address and that pid is a ``redis-server`` here), else None."""
    pid = info_server.get("process_id")
    if host not in ("127.0.0.1", "localhost", "::1") or not isinstance(pid, int):
        return None
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return pid if fh.read().strip().startswith("redis") else None
    except OSError:
        return None


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid``."""
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE_BYTES


@dataclass(frozen=True, slots=True)
class ProcessUsage:
    """What one watched process used over a measurement window."""

    cpu_s: float
    cpu_percent: float  # of one core, over the window
    rss_peak_mib: float
    rss_end_mib: float


class ProcessWatch:
    """CPU used by named processes between ``start()`` and ``stop()``, and their peak RSS meanwhile."""

    def __init__(self, pids: Mapping[str, int], sample_interval: float = 0.25) -> None:
        self._pids = dict(pids)
        self._interval = sample_interval
        self._cpu_start: dict[str, float] = {}
        self._rss_peak: dict[str, int] = dict.fromkeys(self._pids, 0)
        self._started_at = 0.0
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = perf_counter()
        self._cpu_start = {name: _read(cpu_seconds, pid, 0.0) for name, pid in self._pids.items()}
        self._sample()
        self._sampler = loop.create_task(self._sample_forever())

    async def stop(self) -> dict[str, ProcessUsage]:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self._sample()
        elapsed = max(perf_counter() - self._started_at, 1e-9)
        usage = {}
        for name, pid in self._pids.items():
            used = _read(cpu_seconds, pid, self._cpu_start[name]) - self._cpu_start[name]
            usage[name] = ProcessUsage(
                cpu_s=round(used, 3),
                cpu_percent=round(100.0 * used / elapsed, 1),
                rss_peak_mib=round(self._rss_peak[name] / 2**20, 1),
                rss_end_mib=round(_read(rss_bytes, pid, 0) / 2**20, 1),
            )
        return usage

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._sample()

    def _sample(self) -> None:
        for name, pid in self._pids.items():
            self._rss_peak[name] = max(self._rss_peak[name], _read(rss_bytes, pid, 0))


def _read(reader: Callable[[int], T], pid: int, default: T) -> T:
    try:
        return reader(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return default  # the process is gone


async def wait_until_idle(
    pids: Mapping[str, int], below_percent: float, interval: float = 0.5, max_wait: float = 60.0
) -> float:
    """Wait until ``pids`` together use under ``below_percent`` of one core over ``interval``.

    Returns the seconds waited (``max_wait`` at most)."""
    started = perf_counter()
    while perf_counter() - started < max_wait:
        before = sum(_read(cpu_seconds, pid, 0.0) for pid in pids.values())
        await asyncio.sleep(interval)
        used = sum(_read(cpu_seconds, pid, 0.0) for pid in pids.values()) - before
        if 100.0 * used / interval < below_percent:
            break
    return perf_counter() - started
