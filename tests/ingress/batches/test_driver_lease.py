"""One batch driver works at a time: the lease goes to one, and to another only once it lapses."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aredis

from ingress.batches.driver import BatchDriver
from shared import keys
from shared.settings import settings_from_mapping

pytestmark = pytest.mark.redis


def _driver(client: aredis.Redis, name: str) -> BatchDriver:
    settings = settings_from_mapping({"batches": {"driver_lease": 30}}, env={})
    unused: Any = None  # holding the lease needs neither storage nor routing
    return BatchDriver(settings, client, unused, unused, name)


async def test_the_lease_goes_to_one_driver_until_it_lapses(aredis_client: aredis.Redis) -> None:
    """The first driver holds the lease and keeps it; a second gets it only after the first's lapses."""
    first, second = _driver(aredis_client, "first"), _driver(aredis_client, "second")
    assert await first.hold_lease() is True
    assert await second.hold_lease() is False
    assert await first.hold_lease() is True  # renewing
    await aredis_client.delete(keys.BATCH_DRIVER_LEASE)  # what its expiry does when the first dies
    assert await second.hold_lease() is True
    assert await first.hold_lease() is False


def test_the_driver_hurries_only_while_lines_move_fast() -> None:
    """A round that moved a quarter of the window is followed at once; a trickle (a lane yielding to
    interactive traffic) or nothing waits the poll interval, so the driver does not spin beside it."""
    from ingress.batches.driver import BUSY_PAUSE, pause_after

    bounds = settings_from_mapping(
        {"batches": {"lines_in_flight": 128, "poll_interval": 0.2}}, env={}
    ).batches
    assert pause_after(0, bounds) == 0.2
    assert pause_after(31, bounds) == 0.2
    assert pause_after(32, bounds) == BUSY_PAUSE
    tiny = settings_from_mapping({"batches": {"lines_in_flight": 2}}, env={}).batches
    assert pause_after(1, tiny) == BUSY_PAUSE


async def test_a_redis_outage_is_one_line_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    """With Redis unreachable the driver keeps trying, each round later than the last (up to
    MAX_FAILURE_PAUSE), and says so in one warning without a traceback, not one per round."""
    import asyncio
    import logging
    import socket

    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from ingress.batches.driver import MAX_FAILURE_PAUSE, failure_pause

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = aredis.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    settings = settings_from_mapping({"batches": {"poll_interval": 0.01}}, env={})
    unused: Any = None
    driver = BatchDriver(settings, client, unused, unused, "down")
    rounds = 0
    four_rounds = asyncio.Event()
    hold = driver.hold_lease

    async def counted() -> bool:
        nonlocal rounds
        rounds += 1
        if rounds == 4:
            four_rounds.set()
        return await hold()

    driver.hold_lease = counted  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="ingress.batches.driver")
    stop = asyncio.Event()
    running = asyncio.create_task(driver.run(stop))
    await asyncio.wait_for(four_rounds.wait(), 10)
    stop.set()
    await running
    await client.aclose()
    lines = [r for r in caplog.records if r.name == "ingress.batches.driver"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "Redis failed" in lines[0].getMessage()
    pauses = [failure_pause(n, settings.batches) for n in range(1, 12)]
    assert pauses == sorted(pauses) and pauses[-1] == MAX_FAILURE_PAUSE


async def test_a_batch_that_cannot_end_does_not_keep_the_others_from_ending(
    aredis_client: aredis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One batch whose finalizing fails (a bug, a storage error of its own) is logged and retried next
    round; the next batch of the same round ends all the same."""
    from types import SimpleNamespace

    from ingress.batches import driver as driver_module

    ended: list[str] = []

    async def finalize(redis: Any, storage: Any, record: Any, ending: str, bounds: Any) -> None:
        if record == "broken":
            raise ValueError("a part that cannot be read")
        ended.append(record)

    async def collect(*args: Any, **kwargs: Any) -> int:
        return 0

    monkeypatch.setattr(driver_module, "finalize", finalize)
    driver = _driver(aredis_client, "ends")
    for batch_id in ("broken", "fine"):
        run = SimpleNamespace(id=batch_id, record=batch_id, ending="", inflight={}, collect=collect)
        driver.runs[batch_id] = run  # type: ignore[assignment]
        await driver._finish(run)  # type: ignore[arg-type]
    assert ended == ["fine"] and list(driver.runs) == ["broken"]
    assert "batch broken: finalizing failed" in caplog.text
