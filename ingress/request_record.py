"""What one completion request's observation collects on its way: times, route, outcome, usage.

The endpoint creates one :class:`RequestRecord` per request; routing, the fallback loop and the relay fill
in what they learn (plain attribute writes, nothing per chunk), and when the request ends the record
becomes metrics (:mod:`ingress.metrics`) and one log line (:mod:`ingress.request_log`).  Times are
``time.perf_counter()`` readings; 0.0 means "did not happen".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared.errors import AIORouterError


@dataclass(slots=True)
class RequestRecord:
    received_at: float = field(default_factory=time.perf_counter)
    request_id: str = ""  # the X-Request-Id of the response
    model: str = ""
    provider: str = ""  # the deployment's provider of the last attempt
    stream: bool = False
    status: int = 200
    error_code: str | None = None
    job_id: str = ""  # the last attempt's job id
    fallbacks: int = 0  # deployments that failed before the one that answered (or the last)
    admitted_at: float = 0.0  # rate limit and credit hold passed
    enqueued_at: float = 0.0  # the last attempt's job was queued
    started_at: float = 0.0  # a worker took it: its S frame's arrival, less the time the worker held it
    first_content_at: float = 0.0  # its first C or D frame arrived
    ended_at: float = 0.0
    worker_prep: float | None = None  # seconds from the worker taking the job to its S frame (its meta)
    upstream_ttfb: float | None = None  # seconds to the upstream's first content, as the worker measured it
    upstream_total: float | None = None  # seconds the worker spent on the upstream call (the D frame's meta)
    usage: dict[str, Any] | None = None  # the D frame's usage

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "json"

    def failed(self, error: AIORouterError) -> None:
        self.status = error.status
        self.error_code = error.code

    def queue_wait(self) -> float | None:
        """Seconds between the last attempt's enqueue and its S frame (enqueue to worker start)."""
        if self.started_at and self.enqueued_at:  # the job may start before the enqueue's reply is read
            return max(0.0, self.started_at - self.enqueued_at)
        return None

    def ttft(self) -> float | None:
        """Seconds from the request's arrival to its first content."""
        return self.first_content_at - self.received_at if self.first_content_at else None

    def upstream_wait(self) -> float | None:
        """Seconds from the worker's start to the first content, as the ingress saw them."""
        if self.first_content_at and self.started_at:
            return self.first_content_at - self.started_at
        return None

    def total(self) -> float:
        return (self.ended_at or time.perf_counter()) - self.received_at

    def overhead(self) -> float | None:
        """The router's own share of the time to first content: all but the queue wait and the worker's
        upstream time (to its first content for a stream, to its end for a JSON answer): admission,
        routing, enqueue, the worker's pick-up and the frames' way through Redis."""
        ttft, queue = self.ttft(), self.queue_wait()
        upstream = self.upstream_ttfb if self.stream else self.upstream_total
        if ttft is None or queue is None or upstream is None:
            return None
        return max(0.0, ttft - queue - upstream)

    def server_timing(self, *, total: bool) -> bytes:
        """The ``Server-Timing`` value of what is known now, in milliseconds, in the order a request
        spends them: ``admit`` (arrival to admitted: authentication, body, validation, routing, the rate
        limit and credit hold), ``enqueue`` (admitted to the job queued), ``pickup`` (queued to a worker
        taking it, with the S frame's way back), ``prep`` (the worker's own time from taking the job to
        its start), ``upstream`` (the upstream's time to first byte: the worker's measure when its D frame
        is in, else the start-to-content time the ingress saw), ``upstream-total`` (the worker's whole
        upstream call, once known) and, with ``total``, the time since the request arrived."""
        parts = []
        if self.admitted_at:
            parts.append(f"admit;dur={(self.admitted_at - self.received_at) * 1000:.2f}")
            if self.enqueued_at:
                parts.append(f"enqueue;dur={(self.enqueued_at - self.admitted_at) * 1000:.2f}")
        queue = self.queue_wait()
        if queue is not None:
            prep = self.worker_prep or 0.0
            parts.append(f"pickup;dur={max(0.0, queue - prep) * 1000:.2f}")
            if self.worker_prep is not None:
                parts.append(f"prep;dur={prep * 1000:.2f}")
        upstream = self.upstream_ttfb if self.upstream_ttfb is not None else self.upstream_wait()
        if upstream is not None:
            parts.append(f"upstream;dur={upstream * 1000:.2f}")
        if self.upstream_total is not None:
            parts.append(f"upstream-total;dur={self.upstream_total * 1000:.2f}")
        if total:
            parts.append(f"total;dur={(time.perf_counter() - self.received_at) * 1000:.2f}")
        return ", ".join(parts).encode()
