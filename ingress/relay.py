"""Relaying one job's frames to its client: wait for the start, then one JSON body or an SSE stream.

Nothing is sent, not even the headers of a stream, before the first real content (the first ``C``
frame, or ``D``): until then a queue timeout or an error is still a plain HTTP error even for
``stream: true``, and a retryable one lets :mod:`ingress.fallback` try the next deployment.  Payload
bytes go to the client untouched.  The response headers carry ``Server-Timing``: the queue wait, the
upstream's time to first byte and, for a JSON body, the total (a stream's headers leave at its first
content, before the total is known).  A request that ends
before its final frame (client gone, watchdog, lost frames, a stalled job) abandons its job: withdrawn
from the queue if no worker has it, else cancelled.  A job whose client left after a worker started it is
charged by that worker for what it produced; any other abandoned job's credit hold is released before the
job is stopped (:meth:`CompletionRelay.abandon_if_unfinished`).

Every started request ends within a bound whatever its worker, Redis or the upstream do: a stream whose
job sends no frame for its stall timeout (:meth:`Settings.stall_timeout`: ``stream_stall_timeout``, or
longer for a provider allowed to stay silent longer; pings do not count) ends with a
``response_stalled`` error event; a non-stream request, which gets no frame between its start and its
answer, waits at most ``job_timeout`` plus that long.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Final

import redis.asyncio as aredis
from redis.exceptions import RedisError
from starlette.types import Send

from ingress import job_control
from ingress.deferred_cleanup import DeferredCleanup, release_hold
from ingress.reply_hub import SILENCE, ClientGone, Delivery, Silence, Subscription
from ingress.request_record import RequestRecord
from shared import events
from shared.errors import (
    AIORouterError,
    QueueTimeout,
    ResponseStalled,
    ServiceUnavailable,
    WorkerLost,
    error_from_event,
)
from shared.events import Frame
from shared.job_billing import JobBilling
from shared.jobs import CompletionJob
from shared.settings import Settings

log = logging.getLogger(__name__)

RawHeaders = list[tuple[bytes, bytes]]
"""Response headers as ASGI sends them: (lower-case name, value) pairs of bytes."""

SSE_HEADERS: Final[RawHeaders] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class CompletionRelay:
    """One request's job, from enqueue to the last byte written."""

    def __init__(
        self,
        redis: aredis.Redis,
        settings: Settings,
        subscription: Subscription,
        job: CompletionJob,
        *,
        decision: str,
        cleanup: DeferredCleanup | None = None,
        record: RequestRecord | None = None,
    ) -> None:
        self._redis = redis
        self._cleanup = cleanup  # where a cancel Redis refused waits for it to answer again
        self._settings = settings
        self._subscription = subscription
        self._queue: asyncio.Queue[Delivery] = subscription.queue
        self._job = job
        self.record = record if record is not None else RequestRecord()  # times and usage, for metrics
        self.enqueued = False
        self.started = False  # the S frame arrived: a worker owns the job
        self.finished = False  # the job reached a final state that needs no clean-up
        self.answered = False  # its D frame arrived: the worker charged the request (workers.settlement)
        self.left_to_worker = False  # its client left after the start: the worker charges what it produced
        self.released = False  # the request's credit hold was released before the job was stopped
        # Completion headers: X-Automated-Decision now, X-Provider once a worker starts the job.
        self.headers: RawHeaders = [(b"x-automated-decision", decision.encode())]

    async def enqueue(self) -> int:
        """Put the job on its queue; the queue's length with it.  A round trip whose fate is unknown (a
        frozen Redis may still run it) leaves the job to be abandoned once Redis answers."""
        self.record.enqueued_at = time.perf_counter()
        try:
            depth = await job_control.enqueue_completion(self._redis, self._job, self._settings)
        except ServiceUnavailable:
            if self._cleanup is not None:
                self._cleanup.abandon_later(self._job.provider, self._job.request_id, started=False)
            raise
        self.enqueued = True
        return depth

    def enqueued_ahead(self, depth: int) -> int:
        """The job went on its queue in the admission's round trip; ``depth``, the queue's length then."""
        self.record.enqueued_at = time.perf_counter()
        self.enqueued = True
        return depth

    async def withdraw(self) -> bool:
        """Take the job back off its queue before any worker has it; False if one took it already."""
        if await job_control.withdraw(self._redis, self._job.provider, self._job.request_id):
            self.finished = True
            return True
        return False

    async def wait_for_start(self) -> bool:
        """Wait for the S frame; False if the client left first.

        After ``queue_timeout`` without a start the job is withdrawn from the queue (503
        ``queue_timeout``); if a worker took it meanwhile, that worker gets one more ``queue_timeout``
        to report before the request ends with 503 ``worker_lost``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.queue_timeout
        withdraw_tried = False
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await self._queue.get()
                if isinstance(item, Silence):
                    continue
            except TimeoutError:
                if withdraw_tried:
                    raise self._error(
                        WorkerLost("The worker that took this request never started it.")
                    ) from None
                withdraw_tried = True
                if await self.withdraw():
                    retry_after = str(max(1, math.ceil(self._settings.queue_timeout)))
                    raise self._error(QueueTimeout(headers={"Retry-After": retry_after})) from None
                deadline = loop.time() + self._settings.queue_timeout
                continue
            if isinstance(item, ClientGone):
                return False
            if isinstance(item, AIORouterError):
                raise self._error(item)
            if item.kind == events.START:
                held = item.meta.get("held_ms")  # the worker held it for content: it started that much sooner
                held_s = held / 1000 if isinstance(held, int | float) and held > 0 else 0.0
                self.record.started_at = time.perf_counter() - held_s
                self.started = True
                prep = item.meta.get("prep_ms")
                self.record.worker_prep = prep / 1000 if isinstance(prep, int | float) else None
                provider = str(item.meta.get("provider") or self._job.provider)
                self.headers.append((b"x-provider", provider.encode()))
                return True
            raise self._final_error(item)

    async def first_content(self) -> Frame | None:
        """After the start, the first frame with something for the client (C or D) or the job's E frame;
        None if the client left first.  Nothing is sent meanwhile, so the request may still fall back.
        A job that sends nothing for too long (see the module docstring) raises ``response_stalled``."""
        budget = self._settings.stall_timeout(self._job.provider)
        if not self._job.stream:  # no frame between a non-stream job's start and its answer
            budget += self._settings.job_timeout
        while True:
            try:
                async with asyncio.timeout(budget):
                    item = await self._queue.get()
                if isinstance(item, Silence):
                    continue
            except TimeoutError:
                raise self._error(self._stalled(budget)) from None
            if isinstance(item, ClientGone):
                return None
            if isinstance(item, AIORouterError):
                raise self._error(item)
            if item.kind in (events.CHUNKS, events.DONE, events.ERROR):
                self.finished = item.is_final
                if item.kind != events.ERROR:
                    self.record.first_content_at = time.perf_counter()
                    self._note_done(item)
                return item

    def error_of(self, frame: Frame) -> AIORouterError:
        """The error an E frame carries, with the completion headers known so far."""
        return self._error(error_from_event(frame.meta))

    async def send_json(self, send: Send, first: Frame | None = None) -> None:
        """Wait for the D frame (``first``, when already read) and send its payload as the JSON body (an
        E frame raises)."""
        while True:
            item = first if first is not None else await self._queue.get()
            first = None
            if isinstance(item, Silence):
                continue
            if isinstance(item, ClientGone):
                return
            if isinstance(item, AIORouterError):
                raise self._error(item)
            if item.kind == events.DONE:
                self.finished = self.answered = True
                self._note_done(item)
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(item.payload)).encode()),
                    *self.headers,
                    (b"server-timing", self.record.server_timing(total=True)),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": item.payload})
                return
            if item.kind == events.ERROR:
                raise self._final_error(item)

    async def send_stream(self, send: Send, first: Frame | None = None) -> None:
        """Send the SSE response: C payloads as they come (from ``first``, when already read), then D's;
        an error ends it with an error event, and so does a job silent for its stall timeout.  A client
        too far behind (:meth:`Subscription.interrupt`) ends it at once: the connection is closed and
        the job cancelled."""
        subscription = self._subscription
        task = asyncio.current_task()
        subscription.relay_task = task
        try:
            await self._stream_frames(send, first)
        except asyncio.CancelledError:
            if not subscription.too_slow or task is None or task.uncancel() > 0:
                raise
            log.warning(
                "client of request %s reads too slowly (%d bytes waiting); closing its stream",
                self._job.request_id,
                subscription.queued_bytes - subscription.taken_bytes,
            )
        finally:
            subscription.relay_task = None

    async def _stream_frames(self, send: Send, first: Frame | None) -> None:
        """The body of :meth:`send_stream`.  The silence is counted by a :class:`SilenceTimer`, in whole
        waits from the last frame's arrival, so the deadline costs nothing per chunk."""
        subscription = self._subscription
        timing = (b"server-timing", self.record.server_timing(total=False))  # the total is not known yet
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *self.headers, timing]}
        )
        stall_after = self._settings.stall_timeout(self._job.provider)
        ping_interval = self._settings.stream_ping_interval
        wait = silence_wait(ping_interval, stall_after)
        queue = self._queue
        timer = SilenceTimer(subscription, wait)
        try:
            while True:
                item: Delivery
                if first is not None:
                    item, first = first, None
                else:
                    item = queue.get_nowait() if not queue.empty() else await queue.get()
                if isinstance(item, Silence):
                    silence = timer.take()
                    if silence >= stall_after - 1e-6:  # a whole number of waits, in floating point
                        await self._end_with_error_event(send, self._stalled(silence))
                        return
                    if ping_interval > 0:
                        await send({"type": "http.response.body", "body": events.SSE_PING, "more_body": True})
                    continue
                if isinstance(item, ClientGone):
                    return
                if isinstance(item, AIORouterError):
                    await self._end_with_error_event(send, item)
                    return
                if item.kind == events.CHUNKS:
                    subscription.taken_bytes += len(item.payload)
                    await send({"type": "http.response.body", "body": item.payload, "more_body": True})
                elif item.kind == events.DONE:
                    self.finished = self.answered = True
                    self._note_done(item)
                    await send({"type": "http.response.body", "body": item.payload})
                    return
                elif item.kind == events.ERROR:
                    self.finished = True
                    await self._end_with_error_event(send, error_from_event(item.meta))
                    return
        finally:
            timer.cancel()

    async def _end_with_error_event(self, send: Send, error: AIORouterError) -> None:
        """End a started stream with ``error`` as its last event; the request's log line and metrics
        record that error (its HTTP status was 200 already)."""
        self.record.failed(error)
        await _send_error_event(send, error)

    def _note_done(self, frame: Frame) -> None:
        """Keep what a D frame tells about the request: its usage, the upstream's time to first byte."""
        if frame.kind != events.DONE:
            return
        usage = frame.meta.get("usage")
        self.record.usage = usage if isinstance(usage, dict) else None
        timing = frame.meta.get("timing")
        if isinstance(timing, dict):
            ttfb, upstream = timing.get("ttfb_ms"), timing.get("upstream_ms")
            self.record.upstream_ttfb = ttfb / 1000 if isinstance(ttfb, int | float) else None
            self.record.upstream_total = upstream / 1000 if isinstance(upstream, int | float) else None

    @property
    def hold_settled(self) -> bool:
        """Whether the request's credit hold needs nothing more from the ingress: the worker charged the
        answer, or charges what a job whose client left produced (:attr:`left_to_worker`), or
        :meth:`abandon_if_unfinished` released it (or left its release to the deferred clean-up)."""
        return self.answered or self.left_to_worker or self.released

    async def abandon_if_unfinished(self, *, client_left: bool = False) -> None:
        """Withdraw or cancel the job if the request ends before the job did; once Redis answers if it
        could not, or if the shutdown cut this short (:meth:`DeferredCleanup.bounded`).

        A job a worker started whose client left (``client_left``) is cancelled and its hold left to that
        worker, which charges what the job produced (:mod:`workers.settlement`).  Any other job's hold is
        released first, then the job stopped: its worker's settlement then finds the hold settled and
        charges nothing (the request ended for a reason of ours, or before a worker started it)."""
        if not self.enqueued or self.finished:
            return
        self.finished = True
        pool, job_id, started = self._job.provider, self._job.request_id, self.started
        self.left_to_worker = started and client_left
        abandoned = False
        try:
            if not self.left_to_worker and not await self._release_hold():
                return  # the release waits for Redis: the job's stop waits behind it, never before it
            abandoned = await job_control.abandon(self._redis, pool, job_id, started=started)
        finally:
            if not abandoned and self._cleanup is not None:
                self._cleanup.abandon_later(pool, job_id, started=started)

    async def _release_hold(self) -> bool:
        """Release the request's credit hold and give back its counted tokens; once Redis answers if it
        could not, or if the shutdown cut this short.  False when the release waits in the deferred
        clean-up, which stops the job only after it: a worker told first would charge a client that left."""
        billing = JobBilling.of_job(self._job)
        if billing is None:
            return True
        try:
            await release_hold(self._redis, billing)
        except RedisError:
            if self._cleanup is None:
                log.warning("could not release the credit hold of job %s", self._job.request_id)
                return True
            self._cleanup.release_later(billing)
            self.released = True
            return False
        except asyncio.CancelledError:
            if self._cleanup is not None:
                self._cleanup.release_later(billing)
                self.released = True
            raise
        self.released = True
        return True

    def _stalled(self, silence: float) -> ResponseStalled:
        """The error of a started job silent for ``silence`` seconds (logged: an operator should know)."""
        log.warning(
            "job %s on %s sent nothing for %.0f s after it started; ending its request (response_stalled)",
            self._job.request_id,
            self._job.provider,
            silence,
        )
        return ResponseStalled()

    def _final_error(self, frame: Frame) -> AIORouterError:
        if frame.kind == events.ERROR:
            self.finished = True
            return self._error(error_from_event(frame.meta))
        return self._error(AIORouterError(f"The worker sent a {frame.kind.decode()!r} frame out of order."))

    def _error(self, error: AIORouterError) -> AIORouterError:
        """``error`` carrying the completion headers known so far."""
        for name, value in self.headers:
            error.headers.setdefault(name.decode(), value.decode())
        return error


def silence_wait(ping_interval: float, stall_after: float) -> float:
    """The silence a stream's :class:`SilenceTimer` counts in: at most ``ping_interval`` (when pinging,
    > 0), and ``stall_after`` a whole number of it, so that a stalled stream ends at ``stall_after``,
    not up to one ping interval later."""
    if ping_interval <= 0 or ping_interval >= stall_after:
        return stall_after
    return stall_after / math.ceil(stall_after / ping_interval)


class SilenceTimer:
    """Tells a stream's relay when its job has been silent for one more ``wait``: one loop timer per
    ``wait`` seconds, nothing per frame.

    Silence is counted from the arrival of the job's last frame (:attr:`Subscription.heard_at`, set by
    the reply hub), in whole waits: a frame resets the count.  At each wait of silence the timer queues
    :data:`~ingress.reply_hub.SILENCE` for the relay (once until the relay takes it: a relay blocked on a
    slow client does not find a pile of them), and the relay reads the silence so far with :meth:`take`."""

    def __init__(self, subscription: Subscription, wait: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._subscription = subscription
        self._wait = wait
        self._waits = 0  # whole waits of silence since the last frame arrived
        self._counted_from = self._loop.time()
        self._posted = False  # a SILENCE is queued that the relay has not taken yet
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._counted_from + wait, self._check)

    def take(self) -> float:
        """The relay took the queued SILENCE: the seconds of silence so far (whole waits; none if a frame
        arrived since the count was last looked at)."""
        self._posted = False
        self._restart_if_heard()
        return self._waits * self._wait

    def _restart_if_heard(self) -> None:
        heard_at = self._subscription.heard_at
        if heard_at > self._counted_from:
            self._counted_from, self._waits = heard_at, 0

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._restart_if_heard()
        due = self._counted_from + self._wait * (self._waits + 1)
        if self._loop.time() >= due:
            self._waits += 1
            if not self._posted:
                self._posted = True
                self._subscription.queue.put_nowait(SILENCE)
            due += self._wait
        self._handle = self._loop.call_at(due, self._check)


async def _send_error_event(send: Send, error: AIORouterError) -> None:
    """End a started stream with ``data: {"error": {...}}`` and no ``[DONE]``."""
    await send({"type": "http.response.body", "body": events.sse_data(error.envelope())})
