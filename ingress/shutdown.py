"""The ingress' graceful shutdown, bounded: the grace its open requests get after SIGTERM, then their end.

On SIGTERM (or SIGINT) uvicorn stops listening (so ``/readyz`` fails by itself), closes idle keep-alive
connections and waits for the open responses, on its own for as long as they last: a stream longer than
the orchestrator's grace would be cut by its SIGKILL with no error event.  :class:`ShutdownGrace` bounds
the wait.  ``ingress_shutdown_grace`` seconds after the signal, or at once on a second SIGTERM or SIGINT,
:func:`end_open_requests` ends every request still waiting for its job, and any that registers later,
with 503 ``ingress_stopping`` (an error event on a started stream): each withdraws or cancels its job and
releases its credit hold, as when a client leaves, waiting for each at most
:data:`~ingress.deferred_cleanup.HURRIED_WAIT` (Redis may be frozen); a request that was doing so
already, having failed otherwise, waits at most that much more and gets its own error.  What is not a
completion (a file upload, a slow body) is cancelled by uvicorn :data:`CANCEL_AFTER` seconds after the
grace (its ``timeout_graceful_shutdown``), and the lifespan's clean-up, each step bounded by
:data:`~ingress.background.STOP_GRACE`, follows.  A third SIGINT makes uvicorn exit at once, leaving the
jobs to the workers as a killed ingress does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from ingress.deferred_cleanup import DeferredCleanup
from ingress.reply_hub import ReplyHub
from shared.errors import IngressStopping

log = logging.getLogger(__name__)

CANCEL_AFTER: Final = 5.0
"""Seconds after the grace before uvicorn cancels what still runs: requests the hub does not serve."""


class ShutdownGrace:
    """When this ingress began shutting down, and when its open requests' grace is over."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.hurried = False  # a second signal came: the grace is over at once
        self._began = asyncio.Event()
        self._over = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def begin(self) -> None:
        """The server stopped listening: the grace starts now (call on the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._began.set()
        if self.hurried:
            self._over.set()

    def hurry(self) -> None:
        """End the grace now; safe to call from a signal handler."""
        self.hurried = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._over.set)

    async def wait_over(self) -> None:
        """Return once the grace is over: ``grace`` seconds after :meth:`begin`, or at :meth:`hurry`."""
        await self._began.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace):
                await self._over.wait()


async def end_open_requests(hub: ReplyHub, cleanup: DeferredCleanup, shutdown: ShutdownGrace) -> None:
    """Once the grace is over, end every open request with 503 ``ingress_stopping``, and every later one;
    their clean-ups, and those under way, no longer hold their answers (:meth:`DeferredCleanup.bounded`)."""
    await shutdown.wait_over()
    cleanup.hurry()
    ended = hub.refuse(IngressStopping)
    why = "a second signal came" if shutdown.hurried else f"its {shutdown.grace:g} s grace is over"
    log.warning("shutting down and %s: ended %d open request(s) with ingress_stopping", why, ended)
