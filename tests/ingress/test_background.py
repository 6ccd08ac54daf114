"""Stopping a background task: one that survives a cancel (redis-py loses some, or surfaces them as a
Redis error a loop catches) is cancelled again until it ends; one that never ends is given up."""

from __future__ import annotations

import asyncio

from ingress.background import stop_task


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
