"""Entry point of one worker process (``aiorouter worker --pool NAME --concurrency N``)."""

from __future__ import annotations

import logging

from shared.redis_client import sync_client
from shared.settings import Settings
from workers.worker import AsyncWorker


def run_worker(
    settings: Settings, *, pool: str, concurrency: int, name: str | None = None, burst: bool = False
) -> None:
    """Serve ``pool`` with up to ``concurrency`` jobs at once until SIGTERM/SIGINT (or, with ``burst``,
    until its queue is empty).  Blocks."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connection = sync_client(settings.redis_url)
    try:
        worker = AsyncWorker(settings, pool=pool, concurrency=concurrency, connection=connection, name=name)
        worker.work(burst=burst)
    finally:
        connection.close()
