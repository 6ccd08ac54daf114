"""A worker's heartbeat: every ``worker_heartbeat_interval``, what the worker and its running jobs keep
alive in Redis.

A beat refreshes rq's worker hash (written anew if it had expired) and the running jobs' rq executions
due for renewal (:func:`execution_lifetime`) in one round trip, on a connection of its own
(:mod:`workers.connections`); then the worker's provider leases
(:meth:`~workers.guarded_provider.GuardedProvider.renew`, in round trips of their own on the jobs'
connection).

The heartbeat also looks after the requests behind the running jobs, in the same round trip: it renews
their credit holds (a lease, :func:`shared.credits.extend_call`) when half the lease has gone, and asks
``PUBSUB NUMSUB`` of their reply channels: a job whose ingress has no subscription any more (it died)
stops at its next delta and releases its hold (:mod:`workers.settlement`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

import redis.asyncio as aredis
from rq.worker.base import BaseWorker

from shared import credits
from shared.credits import Reservation
from shared.redis_commands import replay, run_commands
from shared.settings import Settings
from workers import bookkeeping
from workers.bookkeeping import StartedJob
from workers.guarded_provider import GuardedProvider
from workers.publisher import FramePublisher

RENEWAL_BEATS = 3  # heartbeats between two renewals of a running job's rq execution


class RunningJob(Protocol):
    """What a beat reads and renews of a job the worker holds."""

    job_id: str
    started: StartedJob | None
    publisher: FramePublisher | None
    reservation: Reservation | None  # the request's credit hold
    finalized: bool  # writing its final bookkeeping: nothing left to renew
    beat_at: float  # loop time at which a beat renews the job's rq execution next
    renew_at: float  # loop time at which a beat renews the hold's lease next


R = TypeVar("R", bound=RunningJob)


def execution_lifetime(settings: Settings) -> tuple[float, int]:
    """How often a beat renews a running job's rq execution, and the TTL it gives it (seconds).

    Every ``RENEWAL_BEATS`` beats, not at each (a beat then renews a fraction of thousands of streams), and
    for that much longer: its score in rq's started registry keeps the margin a renewal at every beat would
    give (twice ``worker_dead_after``, at least three beats), which is how long the loop may stall before
    rq's clean-up fails it."""
    heartbeat = settings.worker_heartbeat_interval
    renew_every = RENEWAL_BEATS * heartbeat
    ttl = max(3, math.ceil(2 * settings.worker_dead_after), math.ceil(3 * heartbeat))
    return renew_every, ttl + math.ceil(renew_every - heartbeat)


class Heartbeat(Generic[R]):
    def __init__(
        self,
        worker: BaseWorker,
        redis: aredis.Redis,
        settings: Settings,
        *,
        runs: Mapping[str, R],
        stop: Callable[[R, str], None],
        note_unheard: Callable[[str], None],
        provider: GuardedProvider,
    ) -> None:
        """``runs`` are the worker's jobs by id, ``stop`` stops one with a reason, ``note_unheard`` remembers
        a reply channel nobody listens to; ``redis`` is the beats' own connection."""
        self._worker = worker
        self._redis = redis
        self._interval = settings.worker_heartbeat_interval
        self._reservation_lease = settings.reservation_lease
        self._execution_renew_every, self._execution_ttl = execution_lifetime(settings)
        self._runs = runs
        self._stop = stop
        self._note_unheard = note_unheard
        self._provider = provider

    async def run(self, halt: asyncio.Event) -> None:
        """Beat every ``interval`` until ``halt`` is set (it ends between beats, never inside one)."""
        while not halt.is_set():
            try:
                await asyncio.wait_for(halt.wait(), self._interval)
                return
            except TimeoutError:
                pass
            try:
                await self.beat()
            except Exception:  # a beat that fails must not end the heartbeats: the worker would look dead
                self._worker.log.warning("Worker %s: heartbeat failed", self._worker.name, exc_info=True)

    async def beat(self) -> None:
        """One beat; a beat that fails leaves what it would have renewed due for the next one."""
        worker = self._worker
        now = asyncio.get_running_loop().time()
        due = [run for run in self._runs.values() if run.started is not None and run.beat_at <= now]
        running = [run.started for run in due if run.started is not None]
        commands = bookkeeping.heartbeat_commands(worker, running, execution_ttl=self._execution_ttl)
        leases = self._due_leases(now)
        commands += [
            credits.extend_call(run.reservation, self._reservation_lease).command()
            for run in leases
            if run.reservation is not None
        ]
        listening = [
            run
            for run in self._runs.values()
            if run.publisher is not None and run.publisher.listened and not run.finalized
        ]
        channels = sorted({run.publisher.channel for run in listening if run.publisher is not None})
        async with self._redis.pipeline(transaction=False) as pipe:
            replay(pipe, commands)
            if channels:
                pipe.pubsub_numsub(*channels)
            replies = await pipe.execute()
        for run in due:  # only now: a beat that failed leaves them due for the next one
            run.beat_at = now + self._execution_renew_every
        for run in leases:
            run.renew_at = now + self._reservation_lease / 2
        if replies and replies[0] == 1:  # rq's worker hash had expired: HSET created it anew
            await run_commands(self._redis, bookkeeping.rebirth_commands(worker))
        if channels:
            self._stop_unheard(listening, replies[-1])
        await self._provider.renew()

    def _due_leases(self, now: float) -> list[R]:
        """The running jobs whose credit hold this beat renews: half its lease gone."""
        return [
            run
            for run in self._runs.values()
            if run.reservation is not None and not run.finalized and run.renew_at <= now
        ]

    def _stop_unheard(self, runs: list[R], numsub: list[tuple[bytes | str, int]]) -> None:
        """Stop the jobs whose reply channel has no subscriber left (their ingress is gone): each stops at
        its next upstream delta, recording what the upstream produced; one still running at the next
        beat (its upstream silent: waiting for a first token, or stalled) is cancelled there, so that no
        upstream call (nor a retry of it) runs on for nobody."""
        subscribers = {_text(channel): int(count) for channel, count in numsub}
        for run in runs:
            if run.publisher is not None and subscribers.get(run.publisher.channel, 1) == 0:
                if not run.publisher.unheard:
                    self._worker.log.warning(
                        "Worker %s: job %s has no ingress left; stopping it", self._worker.name, run.job_id
                    )
                elif not run.publisher.finishing:
                    self._stop(run, "ingress_gone")
                run.publisher.stop_unheard()
                self._note_unheard(run.publisher.channel)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
