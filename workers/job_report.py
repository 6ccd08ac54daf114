"""What a worker reports when one of its jobs ends: its metrics (:mod:`workers.metrics`)."""

from __future__ import annotations

from shared.jobs import CompletionJob
from workers.completion import JobEnding
from workers.metrics import WorkerMetrics


class JobReporter:
    """Turns a job's end into metrics; one per worker process."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def ended(self, job: CompletionJob, ending: JobEnding) -> None:
        """A job that ran to its final frame."""
        if ending.error is None:
            outcome = "ok"
        else:
            outcome = "retryable" if ending.meta.get("retryable") else "error"
        usage = ending.meta.get("usage")
        self.metrics.record(
            job,
            outcome,
            error=ending.error,
            timing=ending.timing,
            usage=usage if isinstance(usage, dict) else None,
        )

    def stopped(self, job: CompletionJob, reason: str) -> None:
        """A job stopped before its end: ``cancelled``, ``timeout`` or ``shutdown``."""
        self.metrics.record(job, reason or "cancelled")
