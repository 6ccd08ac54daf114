"""The shutdown grace: over ``grace`` seconds after the server begins shutting down, or at a second
signal, even one that came before the server noticed the first."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import uvicorn

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


def test_uvicorn_server_api_the_shutdown_grace_overrides_is_unchanged() -> None:
    """IngressServer overrides uvicorn.Server.shutdown, handle_exit and capture_signals and reads
    should_exit and _captured_signals (pinned version): the shapes it relies on are still there."""
    assert list(inspect.signature(uvicorn.Server.shutdown).parameters) == ["self", "sockets"]
    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == ["self", "sig", "frame"]
    assert inspect.iscoroutinefunction(uvicorn.Server.shutdown)
    assert "self.should_exit = True" in inspect.getsource(uvicorn.Server.handle_exit)
    assert "timeout_graceful_shutdown" in inspect.signature(uvicorn.Config.__init__).parameters
    # capture_signals: a context manager that raises self._captured_signals again once the server is down
    source = inspect.getsource(uvicorn.Server.capture_signals)
    assert "yield" in source and "self._captured_signals" in source and "raise_signal" in source
    assert "self._captured_signals.append(sig)" in inspect.getsource(uvicorn.Server.handle_exit)
