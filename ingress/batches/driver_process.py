"""The ``aiorouter batches`` process: its Redis client, file storage and router, and the driver's loop
until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ingress.batches.driver import BatchDriver
from ingress.batches.storage import open_storage
from ingress.open_set import OpenSetCache
from ingress.routing import ModelRouter
from shared.breaker import CircuitBreaker
from shared.redis_client import async_client
from shared.settings import Settings

log = logging.getLogger(__name__)


def run_driver(settings: Settings, *, name: str = "") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (
        settings.batches.driver_nice
    ):  # the driver's work is batch work: the kernel runs interactive work first
        os.nice(settings.batches.driver_nice)
    asyncio.run(_drive(settings, name))


async def _drive(settings: Settings, name: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = async_client(settings.redis_url, max_connections=8, timeout=10.0)
    storage = open_storage(settings.batches)
    open_set = OpenSetCache(CircuitBreaker(redis, settings.breaker))
    try:
        await open_set.start()
        router = ModelRouter(settings.models, redis=redis, open_set=open_set)
        driver = BatchDriver(settings, redis, storage, router, name)
        log.info("batch driver %s: started", driver.name)
        await driver.run(stop)
        log.info("batch driver %s: stopped", driver.name)
    finally:
        await open_set.aclose()
        await storage.aclose()
        await redis.aclose()
