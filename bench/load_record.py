"""What a load run measured: per-request records gathered into rates, percentiles and errors by kind."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bench.http_client import Exchange, InFlight

if TYPE_CHECKING:
    from bench.loadgen import LoadSpec


def percentiles(samples: list[float]) -> dict[str, float] | None:
    """p50/p90/p99 (nearest rank), mean and max of ``samples`` seconds, in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]

    summary = {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99)}
    summary |= {"mean": sum(ordered) / len(ordered), "max": ordered[-1]}
    return {name: round(value * 1000.0, 3) for name, value in summary.items()}


def parse_server_timing(value: bytes) -> list[tuple[str, float]]:
    """The ``(name, milliseconds)`` entries of a ``Server-Timing`` header value (entries without a
    duration are left out)."""
    entries = []
    for entry in value.decode("latin-1").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    entries.append((name, float(number)))
                except ValueError:
                    pass
    return entries


def median(samples: list[float]) -> float:
    ordered = sorted(samples)
    middle = len(ordered) // 2
    value = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return round(value, 3)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The summary of one load run (latencies in milliseconds)."""

    mode: str
    clients: int
    rate: float
    stream: bool
    tokens: int
    duration_s: float
    requests: int
    ok: int
    errors: dict[str, int]
    error_samples: dict[str, str]  # the first message of each error kind that had one
    requests_per_s: float
    chunks: int
    chunks_per_s: float
    latency_ms: dict[str, float] | None
    ttft_ms: dict[str, float] | None
    server_timing_ms: dict[str, float]  # median of each Server-Timing entry over the answered requests
    peak_in_flight: int  # most requests open at once (whole run, warm-up included)
    peak_streaming: int  # most streams receiving content at once
    processes: dict[str, Any]
    latency_samples_s: list[float] = field(default_factory=list, repr=False)  # every answered request's

    def to_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        del summary["latency_samples_s"]
        return summary

    def summary(self) -> str:
        load = f"{self.clients} clients" if self.mode == "closed" else f"{self.rate:g} req/s offered"
        lines = [
            f"{self.mode} loop, {load}, {'stream' if self.stream else 'non-stream'}, {self.tokens} tokens",
            f"  {self.ok}/{self.requests} ok in {self.duration_s:.2f} s: {self.requests_per_s:.1f} req/s, "
            f"{self.chunks_per_s:.0f} chunks/s",
            f"  errors: {self.errors or 'none'}",
            f"  latency ms: {self.latency_ms}",
        ]
        if self.ttft_ms is not None:
            lines.append(f"  ttft ms:    {self.ttft_ms}")
        if self.server_timing_ms:
            lines.append(f"  server-timing ms (medians): {self.server_timing_ms}")
        for name, usage in self.processes.items():
            lines.append(
                f"  {name}: cpu {usage['cpu_s']:.2f} s ({usage['cpu_percent']:.0f}%), "
                f"rss peak {usage['rss_peak_mib']:.1f} MiB"
            )
        return "\n".join(lines)


class Recorder:
    """Collects the requests of the measurement window."""

    def __init__(self, window_start: float, window_end: float | None, *, by_start: bool = False) -> None:
        """Count requests finishing in [window_start, window_end] (no end: all of them), or with
        ``by_start`` (open loop) those scheduled to start in it, however long they then take."""
        self._by_start = by_start
        self._start = window_start
        self._end = window_end
        self._latencies: list[float] = []
        self._ttfts: list[float] = []
        self._server_timing: dict[str, list[float]] = {}
        self._errors: Counter[str] = Counter()
        self._error_samples: dict[str, str] = {}
        self._chunks = 0
        self._last_finish = window_start
        self._clients_done = 0
        self.all_done = asyncio.Event()

    def _counts(self, at: float) -> bool:
        return self._end is None or self._start <= at <= self._end

    def record(self, exchange: Exchange) -> None:
        if not self._counts(exchange.started_at if self._by_start else exchange.finished_at):
            return
        self._last_finish = max(self._last_finish, exchange.finished_at)
        self._chunks += exchange.chunks
        if exchange.error is not None:
            self._errors[exchange.error] += 1
            self._error_samples.setdefault(exchange.error, exchange.error_detail)
            return
        self._latencies.append(exchange.finished_at - exchange.started_at)
        if exchange.server_timing:
            for name, ms in parse_server_timing(exchange.server_timing):
                self._server_timing.setdefault(name, []).append(ms)
        if exchange.verifier is not None:
            self._ttfts.append(exchange.first_chunk_at - exchange.started_at)

    def record_error(self, kind: str, at: float) -> None:
        if self._counts(at):
            self._errors[kind] += 1

    def client_done(self, clients: int) -> None:
        self._clients_done += 1
        if self._clients_done >= clients:
            self.all_done.set()

    def result(self, spec: LoadSpec, processes: dict[str, Any], in_flight: InFlight) -> LoadResult:
        duration = spec.duration_s if self._end is not None else max(self._last_finish - self._start, 1e-9)
        ok = len(self._latencies)
        return LoadResult(
            mode="open" if spec.rate > 0 else "closed",
            clients=spec.clients,
            rate=spec.rate,
            stream=spec.stream,
            tokens=spec.expected_tokens,
            duration_s=round(duration, 3),
            requests=ok + sum(self._errors.values()),
            ok=ok,
            errors=dict(self._errors),
            error_samples={kind: text for kind, text in self._error_samples.items() if text},
            requests_per_s=round(ok / duration, 1),
            chunks=self._chunks,
            chunks_per_s=round(self._chunks / duration, 1),
            latency_ms=percentiles(self._latencies),
            ttft_ms=percentiles(self._ttfts) if spec.stream else None,
            server_timing_ms={name: median(samples) for name, samples in self._server_timing.items()},
            peak_in_flight=in_flight.peak_open,
            peak_streaming=in_flight.peak_streaming,
            processes=processes,
            latency_samples_s=list(self._latencies),
        )
