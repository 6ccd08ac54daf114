"""The shutdown grace: over ``grace`` seconds after the server begins shutting down, or at a second
signal, even one that came before the server noticed the first."""

from __future__ import annotations

import asyncio

import pytest

from ingress.shutdown import ShutdownGrace


async def test_the_grace_is_over_only_after_it_began_and_ran_out() -> None:
    """Nothing is over before ``begin``; after it, the wait ends once the grace has run out."""
    shutdown = ShutdownGrace(0.05)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(shutdown.wait_over(), 0.2)
    shutdown.begin()
    await asyncio.wait_for(shutdown.wait_over(), 5)


async def test_a_second_signal_ends_the_grace_at_once_even_before_it_began() -> None:
    """``hurry`` ends a long grace at once, and a hurry that came before ``begin`` takes effect at it."""
    shutdown = ShutdownGrace(3600)
    shutdown.begin()
    waiter = asyncio.create_task(shutdown.wait_over())
    shutdown.hurry()
    await asyncio.wait_for(waiter, 5)
    early = ShutdownGrace(3600)
    early.hurry()
    early.begin()
    await asyncio.wait_for(early.wait_over(), 5)
