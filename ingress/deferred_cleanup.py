"""Clean-ups a request could not do while Redis was unreachable, done as soon as Redis answers again.

A request that ends without an answer releases its credit hold (:func:`release_hold`) and, if its job may
still run, abandons it: withdraws it from its queue if no worker took it, else cancels it
(:func:`ingress.job_control.abandon`).  During a Redis outage both fail; left
alone, the hold would stay locked until the sweep reaches its deadline and the job would run to its end
unread.  :class:`DeferredCleanup` keeps what failed in memory and retries it every
:data:`RETRY_EVERY` seconds from one background task, so it is done within a retry of Redis coming back.
All are idempotent, so doing one that had landed after all costs nothing.  At most :data:`MAX_PENDING`
wait, so a long outage cannot grow the backlog without bound.  What a process still holds when it dies
is left to the workers and the sweep (a hold is a lease, :func:`shared.credits.extend_call`).

Once the ingress' shutdown ends its open requests (:mod:`ingress.shutdown`), a request waits for its
clean-up at most :data:`HURRIED_WAIT` before its answer (:meth:`DeferredCleanup.bounded`), a clean-up
already under way at that moment included: with Redis frozen, each would otherwise wait out Redis' reply
timeout, and uvicorn cancels what is still running soon after, the client getting a bare 500 instead of
its error.  A clean-up under way is cut short by cancelling its request's task where it waits, so the
wait costs no task of its own; a clean-up cancelled there hands what it has left to this backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final

import redis.asyncio as aredis
from redis.exceptions import RedisError

from ingress import job_control
from shared import credits, keys, ratelimit
from shared.errors import ServiceUnavailable
from shared.job_billing import JobBilling

log = logging.getLogger(__name__)

RETRY_EVERY: Final = 1.0  # seconds between two attempts while something is pending
MAX_PENDING: Final = 100_000  # beyond this, a long outage's clean-ups are left to the workers and the sweep
HURRIED_WAIT: Final = 1.0  # seconds a request waits for its clean-up once the shutdown ends open requests


async def release_hold(redis: aredis.Redis, billing: JobBilling) -> None:
    """Release a request's credit hold and give back the tokens its token limit counted (once: only when
    this release is the one that settled the hold).  Raises ``RedisError``."""
    reservation = billing.reservation
    settlement = await credits.release(redis, reservation)
    refund = ratelimit.refund_call(
        reservation.account_id,
        tokens=billing.counted_tokens,
        interval_us=billing.token_interval_us,
        once_key=keys.credit_reservation(reservation.id),  # a worker's later refund gives nothing more
    )
    if settlement.outcome == "settled" and refund is not None:
        await refund.run(redis)


class DeferredCleanup:
    """One ingress process' backlog of releases and cancels that failed; :meth:`run` works it off."""

    def __init__(self, redis: aredis.Redis, *, retry_every: float = RETRY_EVERY) -> None:
        self._redis = redis
        self._retry_every = retry_every
        self._releases: dict[str, JobBilling] = {}  # by reservation id
        self._abandons: dict[str, tuple[str, bool]] = {}  # job id -> its pool, whether a worker started it
        self._pending = asyncio.Event()
        self.drained = asyncio.Event()  # set whenever :meth:`run` has nothing left to do
        self.hurried = False  # the shutdown ends the open requests: their clean-ups no longer hold them
        self._behind: set[asyncio.Task[None]] = set()  # clean-ups a hurried request stopped waiting for
        self._waiting: set[asyncio.Task[Any]] = set()  # requests in a clean-up they began before the hurry
        self._cut: set[asyncio.Task[Any]] = set()  # those of them the hurry stopped waiting

    @property
    def pending(self) -> int:
        return len(self._releases) + len(self._abandons)

    def hurry(self) -> None:
        """From now on a request waits for its clean-up at most :data:`HURRIED_WAIT`, and a request already
        waiting for one at most that much longer (call on the event loop)."""
        self.hurried = True
        asyncio.get_running_loop().call_later(HURRIED_WAIT, self._cut_short)

    def _cut_short(self) -> None:
        """Cancel the requests still in a clean-up they began before the hurry, where the clean-up waits:
        it hands what it has left to the backlog, and :meth:`bounded` returns to the request."""
        for task in self._waiting:
            self._cut.add(task)
            task.cancel()
        if self._waiting:
            log.warning(
                "stopped waiting for %d clean-up(s) Redis has not answered; retried behind the answers",
                len(self._waiting),
            )

    async def bounded(self, clean_up: Coroutine[Any, Any, None]) -> None:
        """Run a request's ``clean_up`` and wait for it; once hurried, for at most :data:`HURRIED_WAIT`, the
        clean-up going on behind the answer (lost if the process exits first: then the workers and the
        sweep settle it, as after a kill).  A clean-up that began before the hurry is cut short
        :data:`HURRIED_WAIT` after it: ``clean_up``, cancelled, must leave what it has left to
        :meth:`release_later` or :meth:`abandon_later`."""
        if not self.hurried:
            request = asyncio.current_task()
            assert request is not None
            self._waiting.add(request)
            try:
                await clean_up
            except asyncio.CancelledError:
                if request not in self._cut or request.uncancel() > 0:
                    raise  # not the hurry's cancel, or not only
            finally:
                self._waiting.discard(request)
                self._cut.discard(request)
            return
        task = asyncio.ensure_future(clean_up)
        self._behind.add(task)
        task.add_done_callback(self._behind_done)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), HURRIED_WAIT)

    def _behind_done(self, task: asyncio.Task[None]) -> None:
        self._behind.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a clean-up left behind a stopping request's answer failed", exc_info=error)

    def release_later(self, billing: JobBilling) -> None:
        log.warning("could not release credit hold %s; will retry when Redis answers", billing.reservation.id)
        if self.pending >= MAX_PENDING:
            return
        self._releases[billing.reservation.id] = billing
        self.drained.clear()
        self._pending.set()

    def abandon_later(self, pool: str, job_id: str, *, started: bool) -> None:
        """Abandon the job once Redis answers: a job still queued is withdrawn (its record, body included,
        deleted), not left to run for nobody once its cancel marker expired."""
        log.warning("could not abandon job %s; will retry when Redis answers", job_id)
        if self.pending >= MAX_PENDING:
            return
        self._abandons[job_id] = (pool, started)
        self.drained.clear()
        self._pending.set()

    async def run(self) -> None:
        """Retry whatever is pending until it is done, forever (cancel the task to stop)."""
        while True:
            await self._pending.wait()
            await self.flush()
            if self.pending:
                await asyncio.sleep(self._retry_every)
            else:
                self._pending.clear()
                self.drained.set()

    async def flush(self) -> int:
        """Try everything pending once; how many were done."""
        done = 0
        for reservation_id, billing in list(self._releases.items()):
            try:
                await release_hold(self._redis, billing)
            except RedisError:
                return done  # still unreachable: the rest waits for the next attempt
            del self._releases[reservation_id]
            done += 1
        for job_id, (pool, started) in list(self._abandons.items()):
            try:
                await job_control.withdraw_or_cancel(self._redis, pool, job_id, started=started)
            except ServiceUnavailable:
                return done
            del self._abandons[job_id]
            done += 1
        if done:
            log.info("Redis answers again: did %d deferred release(s) and abandon(s)", done)
        return done
