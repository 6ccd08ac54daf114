"""Stopping a background task: one that survives a cancel (redis-py loses some, or surfaces them as a
Redis error a loop catches) is cancelled again until it ends; one that never ends is given up."""

from __future__ import annotations

import asyncio

import redis.asyncio as aredis

from shared.background import stop_task


async def survive_cancels(times: int, survived: list[int]) -> None:
    """Loop forever, treating the first ``times`` cancels as errors to log and retry past."""
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if len(survived) >= times:
                raise
            survived.append(1)


async def test_a_task_that_survives_its_first_cancels_is_stopped() -> None:
    """A loop that shrugs off two cancels ends on the third: stop_task returns True and it is cancelled."""
    survived: list[int] = []
    task = asyncio.create_task(survive_cancels(2, survived))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        assert await stop_task(task)
    assert task.cancelled() and len(survived) == 2


async def test_a_task_that_never_ends_is_given_up_after_the_grace() -> None:
    """A loop that swallows every cancel does not hold stop_task past its grace: it returns False."""
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        assert not await stop_task(task, grace=0.2)
    assert not task.done()
    stop.set()
    task.cancel()  # wakes its sleep; it sees `stop` and returns
    await task


async def test_a_task_that_fails_while_stopping_is_logged_not_raised() -> None:
    """A task ending with an error on its cancel is stopped (True) and the error does not propagate."""

    async def fail_on_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    task = asyncio.create_task(fail_on_cancel())
    await asyncio.sleep(0)
    assert await stop_task(task)
    assert isinstance(task.exception(), RuntimeError)


async def test_a_loop_of_redis_commands_is_stopped_though_redis_py_loses_cancels(
    aredis_client: aredis.Redis,
) -> None:
    """Twenty loops of back-to-back commands all stop, though a cancel landing mid-command is often lost
    (redis-py on Python 3.11 returns the command's reply instead of raising it), which left them running."""
    commands = 0

    async def loop_commands() -> None:
        nonlocal commands
        while True:
            await aredis_client.eval("return 1", 0)
            commands += 1

    for _ in range(20):
        task = asyncio.create_task(loop_commands())
        await asyncio.sleep(0.001)
        async with asyncio.timeout(10):
            assert await stop_task(task)
        assert task.cancelled()
    assert commands > 0
