"""Entry point of one worker process (``aiorouter worker --pool NAME --concurrency N``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.redis_client import sync_client
from shared.settings import Settings
from workers.job_report import JobReporter
from workers.metrics import WorkerMetrics
from workers.open_files import slots_within_open_files
from workers.worker import AsyncWorker

if TYPE_CHECKING:  # imported only when tracing is on: the [otel] extra may not be installed
    from workers.tracing import JobTracer


def run_worker(
    settings: Settings,
    *,
    pool: str,
    concurrency: int,
    name: str | None = None,
    burst: bool = False,
    metrics_port: int = 0,
    tracer: JobTracer | None = None,
) -> None:
    """Serve ``pool`` with up to ``concurrency`` jobs at once until SIGTERM/SIGINT (or, with ``burst``,
    until its queue is empty), with its Prometheus metrics on ``metrics_port`` (0: not served) and, with
    ``tracer``, OpenTelemetry spans of its traced jobs.  Blocks."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    concurrency = slots_within_open_files(concurrency)
    connection = sync_client(settings.redis_url)
    try:
        metrics = WorkerMetrics(settings, pool)
        if metrics_port:
            metrics.serve(metrics_port)
        worker = AsyncWorker(
            settings,
            pool=pool,
            concurrency=concurrency,
            connection=connection,
            name=name,
            reporter=JobReporter(metrics, tracer),
        )
        worker.work(burst=burst)
    finally:
        connection.close()
