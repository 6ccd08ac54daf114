"""The pool's provider adapter behind the deployment's circuit breaker, the provider-wide caps, and
same-deployment retries; it also writes the routing statistics the ingress reads.

Per job, around the wrapped adapter's stream:

    provider caps slot  →  breaker.allow_call(deployment) + in-flight +1 (one round trip, or none: see
    below)  →  attempts
    →  in-flight -1 + breaker.record_call(outcome, probe) + TTFT sample (one round trip; after a success,
       with ``defer_success_writes``, in the job's final round trip instead)  →  slot released

A refused breaker or a full provider fails the job with :class:`~shared.errors.UpstreamUnavailable`
before any upstream call, so the ingress falls back to the next deployment.  A retryable failure
(:class:`UpstreamUnavailable`: connect error, timeout, 429, 5xx, a stream cut before content) is retried
on the same deployment up to ``ProviderSettings.retries`` times while no content has been yielded, after a
jittered exponential backoff, or after the upstream's ``Retry-After`` when it is at most
``max_retry_after`` (a longer one is not waited for: the job fails and the ingress falls back).  The time
to the first content delta of each job feeds the ``latency`` strategy (written with the job's last
round trip, so nothing waits for it mid-stream).  The job is one breaker sample.

The worker reads the set of deployments whose breaker is not closed (open or half-open: the members of
:data:`shared.keys.BREAKER_BLOCKED`) in each job's start round trip and hands it over with
:meth:`GuardedProvider.note_broken`.  While that view is at most :data:`BROKEN_VIEW_FRESH` old and does
not name the job's deployment, the breaker is closed for it, as the allow script would answer: the job
calls its upstream at once, and it counts as in flight (here and, without waiting for the write, in
Redis) from :data:`COUNT_AFTER` on; a job that ends sooner is never counted, and writes neither a +1 nor a
-1.  The writes are increments: a lost one is healed by the heartbeat's renewal of this process' counts,
or expires with its lease once the process has no job left on the deployment.  Any other deployment
(open, half-open: the probe is claimed atomically) takes the round trip, and so does every job after
this process saw a failure, until the next view.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from shared.breaker import BreakerDecision, CircuitBreaker, decision_of
from shared.errors import AIORouterError, ServiceUnavailable, UpstreamUnavailable
from shared.jobs import CompletionJob
from shared.lua import ScriptCall, run_together
from shared.redis_commands import Command
from shared.routing_state import InflightTracker, deployment_id, ttft_call
from shared.settings import Deployment, ProviderSettings, RoutingStatsSettings, Settings
from workers.provider_caps import ProviderCaps
from workers.providers.base import Delta, ProviderAdapter

log = logging.getLogger(__name__)

BROKEN_VIEW_FRESH = 0.1
"""Seconds the view of broken deployments read by a job's start round trip stands in for the breaker."""
COUNT_AFTER = 0.005
"""Seconds a job on a known-closed deployment runs before its in-flight +1 is written: a job that ends
sooner is never counted in Redis (by the time anyone read the count it would be gone), and costs no write
of its own on its way to the first token."""
_CLOSED = BreakerDecision("closed")


class GuardedProvider:
    """A :class:`ProviderAdapter` wrapping another one; shared by every job of a worker process."""

    def __init__(
        self,
        adapter: ProviderAdapter,
        *,
        redis: aredis.Redis,
        provider: ProviderSettings,
        breaker: CircuitBreaker,
        caps: ProviderCaps,
        inflight: InflightTracker,
        stats: RoutingStatsSettings,
        rand: Callable[[], float] = random.random,
        defer_success_writes: bool = False,
    ) -> None:
        self._adapter = adapter
        self._redis = redis
        self._provider = provider
        self._breaker = breaker
        self._caps = caps
        self._inflight = inflight
        self._stats = stats
        self._rand = rand
        self._defer_success_writes = defer_success_writes
        self._deferred: dict[str, list[ScriptCall]] = {}  # by job id, until guard_commands() takes them
        self._broken: frozenset[str] = frozenset()  # deployments whose breaker is not closed (note_broken)
        self._broken_seen_at = -math.inf  # loop time of that view; -inf: none to trust
        self._counting: set[asyncio.Future[Any]] = set()  # in-flight +1 writes not waited for
        self._uncounted: dict[str, asyncio.TimerHandle] = {}  # by job id: its +1, not written yet

    def note_broken(self, deployments: Iterable[bytes | str]) -> None:
        """The deployments whose breaker is not closed, as Redis listed them just now."""
        self._broken = frozenset(d.decode() if isinstance(d, bytes) else d for d in deployments)
        self._broken_seen_at = asyncio.get_running_loop().time()

    def _known_closed(self, dep: str) -> bool:
        fresh = asyncio.get_running_loop().time() - self._broken_seen_at <= BROKEN_VIEW_FRESH
        return fresh and dep not in self._broken

    def _count_started(self, dep: str, job_id: str) -> None:
        """In-flight +1 for ``dep``, counted (here and in Redis) :data:`COUNT_AFTER` from now, without
        waiting for the write."""
        loop = asyncio.get_running_loop()
        self._uncounted[job_id] = loop.call_later(COUNT_AFTER, self._write_count, job_id, dep)

    def _write_count(self, job_id: str, dep: str) -> None:
        del self._uncounted[job_id]
        # Counted locally only now: the heartbeat's renewal re-asserts the local counts, and must not
        # write a +1 that the job's end will not take back.
        write = asyncio.ensure_future(self._inflight.started_call(dep).run(self._redis))
        self._counting.add(write)
        write.add_done_callback(self._counted)

    def _uncount(self, job_id: str) -> bool:
        """Whether the job was counted in flight; one not counted yet never will be."""
        pending = self._uncounted.pop(job_id, None)
        if pending is None:
            return True
        pending.cancel()
        return False

    def _counted(self, write: asyncio.Future[Any]) -> None:
        self._counting.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.warning("in-flight count not written (the heartbeat renews it): %r", write.exception())

    async def aclose(self) -> None:
        await self._adapter.aclose()

    async def renew(self) -> None:
        """Renew this process' leases (in-flight counts, provider slots): call on every heartbeat."""
        try:
            await self._inflight.renew()
            await self._caps.renew()
        except ServiceUnavailable:  # the next heartbeat tries again; leases outlive one missed beat
            log.warning("in-flight and provider-slot leases not renewed", exc_info=True)

    async def stream(self, job: CompletionJob) -> AsyncIterator[Delta]:
        dep = deployment_id(Deployment(job.provider, job.upstream_model))
        async with self._caps.slot(job.request_id):
            if self._known_closed(dep):
                decision = _CLOSED
                self._count_started(dep, job.request_id)
            else:  # one round trip: the breaker's decision and the in-flight count (taken back if refused)
                calls = [self._breaker.allow_call(dep), self._inflight.started_call(dep)]
                reply, _ = await self._together(calls)
                decision = decision_of(reply)
            if not decision.allowed:
                await asyncio.shield(self._finish(dep, None, probe=False, record=False))
                raise UpstreamUnavailable(
                    f"Deployment {dep!r} is cooling down after repeated failures.",
                    code="circuit_open",
                    headers={"Retry-After": str(max(1, round(decision.retry_after + 0.5)))},
                )
            error: BaseException | None = None
            ttft: list[float] = []
            try:
                async for delta in self._attempts(job, dep, ttft):
                    yield delta
            except BaseException as exc:
                error = exc
                raise
            finally:
                counted = self._uncount(job.request_id)
                if error is None and self._defer_success_writes:  # complete()'s final round trip takes them
                    self._deferred[job.request_id] = self._finish_calls(
                        dep, None, decision.is_probe, ttft, counted=counted
                    )
                else:
                    finish = self._finish(dep, error, probe=decision.is_probe, ttft=ttft, counted=counted)
                    await asyncio.shield(finish)

    def streams(self, job: CompletionJob) -> bool:
        return self._adapter.streams(job)

    def guard_commands(self, job: CompletionJob) -> list[Command]:
        """The writes of a job that ended well (in-flight -1, the breaker's success, the TTFT sample),
        held back with ``defer_success_writes`` to ride in the round trip that publishes the job's final
        frame; empty otherwise.  Call once, when that frame's commands are built."""
        return [call.command() for call in self._deferred.pop(job.request_id, ())]

    async def _attempts(self, job: CompletionJob, dep: str, ttft: list[float]) -> AsyncIterator[Delta]:
        """The adapter's deltas, retried on the same deployment before any content; the time to the
        first content goes into ``ttft`` (recorded with the job's last round trip, not mid-stream)."""
        loop = asyncio.get_running_loop()
        timed = self._adapter.streams(job)  # a call answered whole has no first token: no sample
        attempt = 0
        while True:
            started = loop.time()
            answered = False  # content or a finish went out: from here on, no second attempt
            try:
                async for delta in self._adapter.stream(job):
                    if not answered and (delta.has_message_part or delta.finish_reason is not None):
                        answered = True
                        if timed:
                            ttft.append(loop.time() - started)
                    yield delta
                return
            except UpstreamUnavailable as exc:
                pause = None if answered else self._pause_before_retry(attempt, exc)
                if pause is None:
                    raise
                log.info("job %s: %s; retrying %s in %.2fs", job.request_id, exc.message, dep, pause)
            attempt += 1
            await asyncio.sleep(pause)

    def _pause_before_retry(self, attempt: int, error: AIORouterError) -> float | None:
        """Seconds to wait before the next attempt on the same deployment; None: give up here."""
        p = self._provider
        if attempt >= p.retries:
            return None
        retry_after = _retry_after(error)
        if retry_after is not None:
            return retry_after if retry_after <= p.max_retry_after else None
        return float(p.retry_backoff * 2**attempt * (0.5 + self._rand()))

    async def _finish(
        self,
        dep: str,
        error: BaseException | None,
        *,
        probe: bool,
        record: bool = True,
        ttft: Sequence[float] = (),
        counted: bool = True,
    ) -> None:
        """In-flight -1 (when the job was ``counted``) and, when ``record``, the breaker's sample and the
        time to first token: one round trip."""
        if isinstance(error, Exception):  # a failure may trip the breaker: ask it again until the next view
            self._broken_seen_at = -math.inf
        calls = self._finish_calls(dep, error, probe, ttft, record=record, counted=counted)
        try:
            await self._together(calls)
        except ServiceUnavailable:
            log.warning("breaker, in-flight count or TTFT of %s not updated", dep, exc_info=True)

    def _finish_calls(
        self,
        dep: str,
        error: BaseException | None,
        probe: bool,
        ttft: Sequence[float],
        *,
        record: bool = True,
        counted: bool = True,
    ) -> list[ScriptCall]:
        calls: list[ScriptCall] = []
        finished = self._inflight.finished_call(dep) if counted else None
        if finished is not None:  # None: the job never counted as in flight here
            calls.append(finished)
        sample = self._breaker.record_call(dep, error, probe=probe) if record else None
        if sample is not None:  # None: the outcome says nothing of the deployment (a cancel)
            calls.append(sample)
        calls.extend(ttft_call(dep, seconds, self._stats) for seconds in ttft[:1])
        return calls

    async def _together(self, calls: list[ScriptCall]) -> list[Any]:
        if not calls:
            return []
        try:
            return await run_together(self._redis, calls)
        except RedisError as exc:
            raise ServiceUnavailable("Circuit breaker or routing statistics are unavailable.") from exc


def _retry_after(error: AIORouterError) -> float | None:
    value = error.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def guarded_provider(
    adapter: ProviderAdapter,
    redis: aredis.Redis,
    settings: Settings,
    *,
    pool: str,
    worker_name: str,
    defer_success_writes: bool = False,
) -> GuardedProvider:
    """``adapter`` behind the breaker, the caps and retries; leases last ``worker_dead_after``."""
    lease = settings.worker_dead_after
    return GuardedProvider(
        adapter,
        redis=redis,
        provider=settings.provider(pool),
        breaker=CircuitBreaker(redis, settings.breaker),
        caps=ProviderCaps(redis, settings.provider(pool), lease),
        inflight=InflightTracker(redis, worker_name, lease),
        stats=settings.routing_stats,
        defer_success_writes=defer_success_writes,
    )
