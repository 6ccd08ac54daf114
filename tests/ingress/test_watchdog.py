"""The worker watchdog fails exactly the requests whose worker's liveness key is gone."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from ingress.reply_hub import ReplyHub
from ingress.watchdog import WorkerWatchdog
from shared import events, keys
from shared.errors import WorkerLost


def started(hub: ReplyHub, request_id: str, worker: str) -> None:
    hub.route(events.encode(events.START, request_id, 0, {"worker": worker, "provider": "simulated"}))


async def test_only_requests_of_dead_workers_fail(aredis_client: aredis.Redis) -> None:
    """Requests served by a worker without a liveness key get worker_lost; others are untouched."""
    hub = ReplyHub(aredis_client, "watchdog-test")
    alive, dead, waiting = hub.register("a"), hub.register("b"), hub.register("c")
    also_dead = hub.register("d")
    started(hub, "a", "w-alive")
    started(hub, "b", "w-dead")
    started(hub, "d", "w-dead")
    await aredis_client.set(keys.worker_alive("w-alive"), b"1", ex=10)
    watchdog = WorkerWatchdog(aredis_client, hub, interval=1.0, dead_after=3.0)
    assert await watchdog.check_once() == ["w-dead"]
    for subscription in (dead, also_dead):
        subscription.queue.get_nowait()  # the S frame
        assert isinstance(subscription.queue.get_nowait(), WorkerLost)
    alive.queue.get_nowait()
    assert alive.queue.empty() and waiting.queue.empty() and not alive.closed


async def test_nothing_to_check_without_started_requests(aredis_client: aredis.Redis) -> None:
    """With no request past its S frame, the watchdog sends no command at all."""

    class NoRedis:
        def pipeline(self, **_: object) -> None:
            raise AssertionError("Redis was used")

    hub = ReplyHub(aredis_client, "watchdog-test")
    hub.register("queued-only")
    assert await WorkerWatchdog(NoRedis(), hub, interval=1.0, dead_after=3.0).check_once() == []  # type: ignore[arg-type]


async def test_finished_requests_are_not_watched(aredis_client: aredis.Redis) -> None:
    """A request whose final frame already arrived is not failed when its worker disappears."""
    hub = ReplyHub(aredis_client, "watchdog-test")
    subscription = hub.register("done")
    started(hub, "done", "w-gone")
    hub.route(events.encode(events.DONE, "done", 1, {"usage": {}}, b"{}"))
    assert await WorkerWatchdog(aredis_client, hub, interval=1.0, dead_after=3.0).check_once() == []
    assert subscription.queue.qsize() == 2


async def test_after_a_redis_stall_no_worker_is_judged_until_they_could_write_again(
    aredis_client: aredis.Redis,
) -> None:
    """Redis stalled longer than an interval (CLIENT PAUSE, as when frozen): the check it answers late
    fails nobody, though the worker's key is missing, and neither do the next ones for ``dead_after``;
    only then is a worker whose key is still missing dead after all."""
    hub = ReplyHub(aredis_client, "watchdog-test")
    subscription = hub.register("r")
    started(hub, "r", "w-quiet")
    subscription.queue.get_nowait()  # the S frame
    watchdog = WorkerWatchdog(aredis_client, hub, interval=0.2, dead_after=0.5)
    loop = asyncio.get_running_loop()
    stalled_at = loop.time()
    await aredis_client.execute_command("CLIENT", "PAUSE", 600, "ALL")
    task = asyncio.create_task(watchdog.run())
    try:
        ending = await asyncio.wait_for(subscription.queue.get(), 10)
    finally:
        task.cancel()
    assert isinstance(ending, WorkerLost)
    assert loop.time() - stalled_at >= 0.6 + 0.5  # the stall's end, then dead_after
