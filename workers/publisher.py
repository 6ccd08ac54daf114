"""Per-job frame publisher that coalesces chunks and keeps frames in order.

A chunk that arrives while no publish of its job is in flight goes out at once; chunks arriving while one
is in flight are joined into the next single ``C`` frame.  "At once" takes a few passes of the event loop
(the publish is a task, the shared pipeline's sender another, the connection writes at the end of a
pass), and a publish in flight needs its reply read first: a job that reads an upstream's burst without
pausing would parse the whole burst before its first chunk goes out, so :meth:`FramePublisher.let_out`
gives the loop those passes (a stream's first content waits for no more).  There is never more than one
publish of a job in flight, so Redis pub/sub delivers its frames in ``seq`` order.  The final frame
(``D`` or ``E``) can carry other Redis commands (the request's settlement) in the same round trip, queued
before the ``PUBLISH`` so that whoever sees the final frame also sees them; the writes nobody waiting
for the answer needs (rq's bookkeeping, statistics) follow in a write of their own once it landed, so
that Redis runs them off the answer's path.  With a :class:`PublishBatcher`, each round trip is shared
with the other jobs of the worker.

A publish that fails (Redis unreachable, frozen, restarting) is retried, the same frames again, for up to
:data:`PUBLISH_PATIENCE` seconds: a publish whose reply was lost may have landed, and the ingress drops a
frame it already has (its ``seq``).  The final frame's retries carry only its ``retry_commands`` (the
idempotent settlement, with a charged job's refund and usage record:
:func:`workers.settlement.final_commands`), never the bookkeeping that would count twice.  Only after
that does a publish fail for good; the final frame is still attempted then, so the client learns how its
job ended.

A ``PUBLISH`` answers how many subscribers received the frame: 0 means the ingress that waited for the job
is gone (killed, or it lost Redis and failed its requests), so the job stops there, with
:class:`~shared.errors.IngressGone` from the next call, at no extra round trip.  A publisher made with
``listened=False`` (a batch line's: its results go to the batch, nobody subscribes) ignores that count.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError, ResponseError

from shared import events
from shared.errors import IngressGone, ServiceUnavailable
from shared.redis_commands import Command, replay
from workers.publish_batcher import PublishBatcher

log = logging.getLogger(__name__)

PUBLISH_PATIENCE = 60.0  # seconds a failing publish is retried before the job's publishing fails for good
RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0)  # seconds between retries of one publish; the last one repeats
# Loop passes from a publish taking the queued chunks to Redis' socket: the shared pipeline's sender runs
# (PublishBatcher), then the auto-pipelined connection writes what that pass queued.
PASSES_TO_THE_WIRE = 2
LET_OUT_PASSES = 8  # passes let_out waits at most for a publish to take the queued chunks


class FramePublisher:
    def __init__(
        self,
        redis: aredis.Redis,
        channel: str,
        request_id: str,
        batcher: PublishBatcher | None = None,
        *,
        listened: bool = True,
    ) -> None:
        self._redis = redis
        # False for a channel nobody subscribes to by design (a batch line's): a publish reaching nobody
        # then says nothing about the job's requester.
        self.listened = listened
        self._batcher = batcher  # the worker's shared pipeline (one round trip for many jobs), if any
        self.channel = channel
        self._request_id = request_id
        self._seq = 0
        self._pending: list[bytes] = []
        self._in_flight: asyncio.Future[Any] | None = None  # a publish task, or a pipeline submission
        self._failure: ServiceUnavailable | None = None
        self._closing = False  # the final frame is coming: chunks queued from now on ride along with it
        self._riders: list[Command] = []  # commands that go out with the next publish (see attach)
        self._later: list[Callable[[], Sequence[Command]]] = []  # riders built at that publish (attach_later)
        self._abandoned = False  # the job was cancelled: nothing more is worth retrying
        self.patience = PUBLISH_PATIENCE
        self.published = 0  # PUBLISH commands sent, for tests and stats
        self.unheard = False  # a publish reached no subscriber: nobody waits for this job any more
        self.content_queued = False  # a C frame was queued: the client may have content, no fallback now
        self.finishing = False  # finish() was called: the final frame, and what follows it, is on its way
        self._held: dict[str, Any] | None = None  # the S frame's meta, while it waits for content (start)
        self._held_since = 0.0
        self._hold_timer: asyncio.TimerHandle | None = None

    def _frame(self, kind: bytes, meta: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
        frame = events.encode(kind, self._request_id, self._seq, meta, payload)
        self._seq += 1
        return frame

    def attach(self, commands: Sequence[Command]) -> None:
        """Send ``commands`` with the next publish (the ``S`` frame's, for a job not started yet), in its
        round trip: writes the job does not wait for, without a round trip of their own.  They must be
        idempotent: a publish that failed takes them again when it is retried."""
        self._riders.extend(commands)

    def attach_later(self, build: Callable[[], Sequence[Command]]) -> None:
        """Like :meth:`attach`, with commands that ``build()`` makes when the next publish is sent: the
        ``S`` frame's goes out from its own task, once the job has sent its upstream request, so building
        them costs the job no time before that request."""
        self._later.append(build)

    def start(self, meta: dict[str, Any], *, hold: float = 0.0) -> None:
        """Publish the ``S`` frame, the first one, without waiting for it: the job's next round trips
        (the breaker's decision, the upstream call) overlap it; chunks queue behind it.  A failure
        surfaces from the next call (:meth:`send_chunks`, :meth:`flush`, :meth:`finish`).

        With ``hold`` (seconds), the frame waits that long for the job's first content or its final
        frame and goes out in the same publish: one round trip instead of two when the upstream answers
        at once, and a stream's first content no longer waits behind the start's reply.  Its meta then
        says how long it waited (``held_ms``), which the ingress takes off its queue wait."""
        loop = asyncio.get_running_loop()
        if hold <= 0:
            self._in_flight = loop.create_task(self._drain(first=self._frame(events.START, meta)))
            return
        self._held, self._held_since = meta, loop.time()
        self._hold_timer = loop.call_later(hold, self._release)
        loop.call_soon(self._build_riders)  # while the job waits for its upstream, not once content came

    def send_chunks(self, sse: bytes) -> None:
        """Queue SSE bytes for a ``C`` frame; publishes at once unless a publish is in flight (with the
        held ``S`` frame, if any).  Raises what stopped the job's publishing (see :meth:`check`)."""
        if self._failure is not None:
            raise self._failure
        self._pending.append(sse)
        self.content_queued = True
        if self._held is not None:
            self._release()
        elif self._in_flight is None:
            self._publish_pending()

    def _publish_pending(self) -> None:
        """Publish the queued chunks as one ``C`` frame.  Through the shared pipeline this is a
        submission with a done callback, no task: the next chunks go out from :meth:`_landed`, so a
        stream's chunk costs the loop no task, coroutine or wake-up of its own.  A publish that fails
        goes on as a task (:meth:`_drain`), which retries it for :attr:`patience` seconds."""
        if self._batcher is None or self._later or self._riders:
            self._in_flight = asyncio.get_running_loop().create_task(self._drain())
            return
        frame = self._frame(events.CHUNKS, None, b"".join(self._pending))
        self._pending.clear()
        done = self._batcher.submit((), self.channel, [frame])
        done.add_done_callback(functools.partial(self._landed, frame))
        self._in_flight = done

    def _landed(self, frame: bytes, done: asyncio.Future[int]) -> None:
        """The shared pipeline ran the publish of ``frame``: go on with the chunks queued meanwhile, or
        retry the frame from a task when the publish failed."""
        self._in_flight = None
        error = None if done.cancelled() else done.exception()
        if error is not None:
            self._in_flight = asyncio.get_running_loop().create_task(self._drain(first=frame, failed=error))
            return
        self.published += 1
        if not done.cancelled() and not done.result() and self.listened:
            self.stop_unheard()
        elif self._pending and not self._closing:
            self._publish_pending()

    def _build_riders(self) -> None:
        """Build the riders :meth:`attach_later` left for the next publish now; one that fails is left
        to that publish, which reports its error as before."""
        while self._later:
            try:
                commands = self._later[0]()
            except Exception:  # raised again, and handled, by the publish
                return
            del self._later[0]
            self._riders.extend(commands)

    def _release(self) -> None:
        """Publish the held ``S`` frame now, with the chunks queued by then."""
        frame = self._take_held()
        if frame is not None:
            self._in_flight = asyncio.get_running_loop().create_task(self._drain(first=frame))

    def _take_held(self) -> bytes | None:
        """The held ``S`` frame, built now: its meta says how long it was held (``held_ms``)."""
        meta = self._drop_held()
        if meta is None:
            return None
        held = asyncio.get_running_loop().time() - self._held_since
        return self._frame(events.START, {**meta, "held_ms": round(held * 1000, 2)})

    def _drop_held(self) -> dict[str, Any] | None:
        """End the hold: the held ``S`` frame's meta, if one was held."""
        meta, self._held = self._held, None
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        return meta

    async def let_out(self) -> None:
        """Give the event loop the passes that the chunks queued so far need to reach Redis' socket
        before the job takes its next delta: up to :data:`LET_OUT_PASSES` for a publish to take them
        (at once when none is in flight; after the reply of the one in flight, such as the S frame's,
        when that reply has come), then :data:`PASSES_TO_THE_WIRE`.  An upstream that sends many chunks
        in one read would otherwise have all of them parsed first."""
        passes = 0
        while self._pending and passes < LET_OUT_PASSES:
            await asyncio.sleep(0)
            passes += 1
        if not self._pending:
            for _ in range(PASSES_TO_THE_WIRE):
                await asyncio.sleep(0)

    async def finish(
        self,
        kind: bytes,
        meta: dict[str, Any],
        payload: bytes = b"",
        commands: Sequence[Command] = (),
        retry_commands: Sequence[Command] = (),
        after: Callable[[], Sequence[Command]] | None = None,
    ) -> None:
        """Publish the final frame after every queued chunk, with ``commands`` in the same round trip
        (``retry_commands`` instead, when that round trip has to be repeated).

        For ``D`` the chunks still queued are prepended to its payload (they are SSE bytes too); before
        ``E`` they go out as one last ``C`` frame, in the same round trip.  A chunk publish that failed
        for good does not stop it: the ingress sees the gap, or gets the frames it missed here.

        With ``after``, the writes nobody waiting for the answer needs go in a write of their own once
        the final frame landed, so that neither building them nor Redis running them delays it: the
        riders not sent yet (the start's, when the ``S`` frame goes out with this one), then what
        ``after()`` builds then (see :meth:`write_after`).
        """
        self._closing = self.finishing = True
        held = self._take_held()  # the S frame still held goes out first, in the final frame's publish
        try:
            await self.flush()
        except ServiceUnavailable:
            self._failure = None
        frames: list[bytes] = [held] if held is not None else []
        if self._pending and kind == events.DONE:
            payload = b"".join([*self._pending, payload])
        elif self._pending:
            frames.append(self._frame(events.CHUNKS, None, b"".join(self._pending)))
        self._pending.clear()
        frames.append(self._frame(kind, meta, payload))
        riders: list[Command] = []
        later: list[Callable[[], Sequence[Command]]] = []
        if after is not None:
            riders, self._riders, later, self._later = self._riders, [], self._later, []
        await self._publish_patiently(commands, frames, retry_commands, final=True)
        if after is not None:
            for build in later:
                riders.extend(build())
            await self.write_after([*riders, *after()])

    async def write_after(self, commands: Sequence[Command]) -> None:
        """Run ``commands``, which follow the job's final frame, in one round trip (shared with other jobs
        through the worker's pipeline), retried like a publish while Redis cannot be reached.  A retry
        after a reply lost on the way back runs them twice: they are rq's bookkeeping and statistics,
        where that counts a job twice in a worker's totals at worst.  A command Redis refuses is not
        retried, and nothing is raised: the answer is out, and rq's registry clean-up settles a job
        whose record was not written."""
        if not commands:
            return
        try:
            await self._publish_patiently(commands, [], commands, final=True, refused_ends=True)
        except ServiceUnavailable as exc:
            log.warning(
                "job %s: rq's bookkeeping after its answer was not written (%s)",
                self._request_id,
                exc.__cause__,
            )

    async def write_final(self, commands: Sequence[Command], retry_commands: Sequence[Command] = ()) -> None:
        """Run the last writes of a job that ends without a final frame (stopped: its client left, or its
        ingress is gone) in one round trip, retried like a publish while Redis cannot be reached, a retry
        carrying only ``retry_commands`` (its idempotent settlement).  Raises
        :class:`~shared.errors.ServiceUnavailable` once it gives up."""
        await self._publish_patiently(commands, [], retry_commands, final=True)

    def check(self) -> None:
        """Raise what stops the job's publishing (Redis lost for good, or nobody listening), if anything."""
        if self._failure is not None:
            raise self._failure

    def stop_unheard(self) -> None:
        """Nobody subscribes to the job's reply channel any more (the worker's heartbeat saw it): the job
        stops with :class:`IngressGone` at its next call."""
        self.unheard = True
        if self._failure is None:
            self._failure = IngressGone()

    async def flush(self) -> None:
        """Wait for the publishes in flight and queued (if any) to land; raise if publishing failed."""
        while self._in_flight is not None:  # its callback, or its task, goes on with the queued chunks
            await asyncio.wait([self._in_flight])
        if self._failure is not None:
            raise self._failure

    def take_riders(self) -> list[Command]:
        """The riders no publish took (an abandoned job's start, when its ``S`` frame was still held or
        its publish failed): the caller writes them with its own commands."""
        riders, self._riders = self._riders, []
        return riders

    def abandon(self) -> None:
        """Stop publishing (the job was cancelled): drop queued chunks; the publish in flight, if any, lands
        (cancelling it mid-command would cost its Redis connection)."""
        self._pending.clear()
        self._drop_held()  # a job stopped before its start went out: its failure records the start
        self._closing = self._abandoned = True

    async def _drain(self, first: bytes | None = None, failed: BaseException | None = None) -> None:
        """Publish ``first`` (the ``S`` frame, or a frame whose publish ``failed``), then the chunks
        queued, one ``C`` frame at a time, until none are left."""
        try:
            if first is not None:
                frames = [first]
                if self._pending and not self._closing:  # chunks that came while the S frame was held
                    frames.append(self._frame(events.CHUNKS, None, b"".join(self._pending)))
                    self._pending.clear()
                await self._publish_patiently([], frames, failed=failed)
            while self._pending and not self._closing and not self.unheard:
                payload = b"".join(self._pending)
                self._pending.clear()
                await self._publish_patiently([], [self._frame(events.CHUNKS, None, payload)])
            if self.unheard:
                self.stop_unheard()
        except ServiceUnavailable as exc:
            self._failure = exc
        except Exception:  # a bug (a rider that failed to build): the job fails, its frames stop here
            log.exception("job %s: publishing failed", self._request_id)
            self._failure = ServiceUnavailable("The worker failed while publishing the reply.")
        finally:
            self._in_flight = None

    async def _publish_patiently(
        self,
        commands: Sequence[Command],
        frames: list[bytes],
        retry_commands: Sequence[Command] = (),
        *,
        final: bool = False,
        failed: BaseException | None = None,
        refused_ends: bool = False,
    ) -> None:
        """:meth:`_publish`, retried for :attr:`patience` seconds while Redis cannot be reached (``failed``:
        the error of a first attempt the caller made); with ``refused_ends``, a command Redis answered
        with an error is not retried."""
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        attempt = 0
        while True:
            try:
                if failed is not None:
                    raise _publish_failed() from failed
                if not await self._publish(commands, frames) and self.listened:
                    self.unheard = True
                return
            except ServiceUnavailable as exc:
                failed = None
                if refused_ends and isinstance(exc.__cause__, ResponseError):
                    raise
                now = loop.time()
                if give_up_at is None:
                    give_up_at = now + self.patience
                    log.warning("job %s: publishing failed (%s); retrying", self._request_id, exc.__cause__)
                if now >= give_up_at or (self._abandoned and not final):
                    raise
            await asyncio.sleep(RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)])
            attempt += 1
            commands = retry_commands

    async def _publish(self, commands: Sequence[Command], frames: list[bytes]) -> int:
        """Run ``commands`` and publish ``frames``; how many subscribers the last frame reached."""
        if self._later:
            later, self._later = self._later, []
            for build in later:
                self._riders.extend(build())
        riders, self._riders = self._riders, []
        if riders:
            commands = [*riders, *commands]
        try:
            if self._batcher is not None:
                receivers = await self._batcher.submit(commands, self.channel, frames)
            elif not frames:
                async with self._redis.pipeline(transaction=False) as pipe:
                    replay(pipe, commands)
                    await pipe.execute()
                receivers = 1  # nothing published: nobody had to hear it
            elif not commands and len(frames) == 1:
                receivers = await self._redis.publish(self.channel, frames[0])
            else:  # a transaction when it carries writes: none of them run unless its frames do
                async with self._redis.pipeline(transaction=bool(commands)) as pipe:
                    replay(pipe, commands)
                    for frame in frames:
                        pipe.publish(self.channel, frame)
                    receivers = (await pipe.execute())[-1]
        except (RedisError, OSError) as exc:
            self._riders = [*riders, *self._riders]  # they may not have landed: the retry takes them again
            raise _publish_failed() from exc
        self.published += len(frames)
        return int(receivers)


def _publish_failed() -> ServiceUnavailable:
    return ServiceUnavailable("Lost the connection to Redis while publishing a reply.")
