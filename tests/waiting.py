"""Waiting in tests for something to happen: a condition polled against a deadline, never a guessed sleep.

``eventually`` serves async tests and takes a plain or a coroutine function; ``eventually_sync`` serves
synchronous tests (end-to-end tests driving subprocesses).  Both return the condition's first truthy value,
so a test can wait for a value and use it, and fail with the condition's source line when it never holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL = 0.02


async def eventually(
    condition: Callable[[], T | Awaitable[T]], *, within: float = 10.0, interval: float = POLL_INTERVAL
) -> T:
    """``condition()``'s first truthy value, polled every ``interval`` for at most ``within`` seconds.

    A plain ``condition`` runs on the event loop, so it must be quick (a sync Redis call is).  A condition
    that sends a request counts against rate limits: give it a longer ``interval``.
    """
    try:
        async with asyncio.timeout(within):
            while True:
                value = condition()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return value  # type: ignore[return-value]
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"not reached within {within} s: {_where(condition)}") from None


def eventually_sync(
    condition: Callable[[], T], *, within: float = 10.0, interval: float = POLL_INTERVAL
) -> T:
    """``condition()``'s first truthy value, polled for at most ``within`` seconds (for sync tests)."""
    deadline = time.monotonic() + within
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {within} s: {_where(condition)}")
        time.sleep(interval)
    return value


def _where(condition: Callable[..., object]) -> str:
    code = getattr(condition, "__code__", None)
    if code is None:
        return repr(condition)
    try:
        line = inspect.getsourcelines(code)[0][0].strip()
    except (OSError, IndexError):
        line = code.co_name
    return f"{line} ({code.co_filename}:{code.co_firstlineno})"
