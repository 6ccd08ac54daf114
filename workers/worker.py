"""``AsyncWorker``: an rq worker that runs up to N jobs of one pool at once on one asyncio loop.

It stays on rq's data model (worker registration and heartbeats, BLMOVE through the intermediate queue,
started/finished/failed registries, executions, job counts), so ``rq info`` and rq-dashboard tell the
truth, but does rq's writes with :mod:`workers.bookkeeping` on asyncio Redis:

    BLMOVE, with the job's read (hash, cancel marker) behind it: one round trip (:mod:`workers.dequeue`)
    →  S frame, with the job marked started (built once the upstream request is sent; the frame waits
       up to ``START_HOLD`` for the first content, to share its publish)  →  C… frames
    →  the D/E frame, with the request's settlement  →  rq's finished/failed bookkeeping (and the
       start's, when the S frame went out with the final one), built and written once the frame landed

Frames and bookkeeping go through one :class:`~workers.publish_batcher.PublishBatcher`: the jobs that
publish at the same moment share a pipeline.

A slot is taken before each BLMOVE, so the worker never holds more jobs than it can run, and it holds at
most ``worker_prefetch`` jobs it has not started yet: a burst spreads over the pool's workers instead of
landing on whichever dequeues first, and a worker that dies mid-burst takes few jobs down with it.

A heartbeat task refreshes rq's worker hash, every running execution and AIOrouter's liveness keys; a
thread runs rq's registry maintenance (sync code, off the loop), which is what fails the jobs of a
worker that died.  A last task reads the store marker (:mod:`shared.store_marker`) and logs once
if Redis lost its data under the worker.

The heartbeat also looks after the requests behind the running jobs, in the same round trip: it renews
their credit holds (a lease, :func:`shared.credits.extend_call`) when half the lease has gone, and asks
``PUBSUB NUMSUB`` of their reply channels: a job whose ingress has no subscription any more (it died)
stops at its next delta and releases its hold (:mod:`workers.settlement`).  A job publishing
frames learns the same from its own ``PUBLISH`` replies (:mod:`workers.publisher`).  The worker remembers
such a channel, and a queued job for it is checked (``PUBSUB NUMSUB``) before it runs: the queued jobs of
a dead ingress are released without calling the upstream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
from redis.exceptions import RedisError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.worker.base import BaseWorker, WorkerStatus

from shared import credits, events, keys, pool_stats
from shared.credits import Reservation
from shared.errors import AIORouterError, IngressGone, UpstreamTimeout, WorkerLost
from shared.job_billing import JobBilling
from shared.jobs import CompletionJob, diagnostic_call, unreadable_call
from shared.redis_client import async_client
from shared.redis_commands import Command, replay, run_commands
from shared.rq_bridge import memoize_serializer_lookup
from shared.serialization import OrjsonSerializer
from shared.settings import Settings
from shared.store_marker import StoreMarker, watch_store
from workers import bookkeeping, dequeue, settlement, stop_requests
from workers.batch_lane import BatchLane, lane_limit
from workers.bookkeeping import StartedJob
from workers.completion import JobEnding, complete
from workers.dequeue import StartReads
from workers.guarded_provider import GuardedProvider, guarded_provider
from workers.job_report import JobReporter
from workers.lane_throttle import LaneThrottle
from workers.liveness import LivenessBeacon
from workers.loop_load import LoopGuard, LoopLag
from workers.metrics import WorkerMetrics
from workers.providers import make_adapter
from workers.publish_batcher import PublishBatcher
from workers.publisher import FramePublisher
from workers.stop_requests import StopRequest

log = logging.getLogger(__name__)

DEQUEUE_TIMEOUT = 1  # seconds a BLMOVE blocks; bounds how long a shutdown waits for the dequeue loop
MAINTENANCE_INTERVAL = 30.0  # seconds between runs of rq's registry clean-up
RENEWAL_BEATS = 3  # heartbeats between two renewals of a running job's rq execution
FINAL_WRITES_WAIT = 10.0  # seconds jobs stopped at the end of the shutdown grace get for their last writes
_RETRY_PAUSE = 1.0
_CONNECTION_WAIT = 20.0  # seconds a command that cannot share the auto-pipelined connection waits for one
_UNHEARD_CHANNELS_KEPT = 1024  # reply channels remembered as unheard (forgotten all at once beyond)
_EARLY_CANCELS_KEPT = 256  # cancels of jobs not running here remembered, the oldest forgotten beyond


@dataclass(slots=True)
class _Run:
    """One job this process holds, from BLMOVE to its last write."""

    job_id: str
    origin: str  # the rq queue it came from: the pool's, or the pool's batch lane
    reads: StartReads | None = None  # what its start reads, when they came with the move (workers.dequeue)
    taken_at: float = field(default_factory=time.perf_counter)  # when this process took it off its queue
    started: StartedJob | None = None
    task: asyncio.Task[JobEnding] | None = None
    # "cancelled" (client went away), "ingress_gone" (nobody listens), "shutdown" or "timeout" (rq's limit)
    stop_reason: str = ""
    finalized: bool = False
    publisher: FramePublisher | None = None  # set once the job is running
    reservation: Reservation | None = None  # the request's credit hold, renewed while the job runs
    renew_at: float = 0.0  # loop time at which the hold's lease is renewed next
    beat_at: float = 0.0  # loop time at which the heartbeat renews the job's rq execution next


class AsyncWorker(BaseWorker):
    def __init__(
        self,
        settings: Settings,
        *,
        pool: str,
        concurrency: int,
        connection: redis.Redis,
        name: str | None = None,
        maintenance_interval: float = MAINTENANCE_INTERVAL,
        shutdown_grace: float | None = None,
        reporter: JobReporter | None = None,
    ) -> None:
        memoize_serializer_lookup()  # every job builds a dozen rq objects
        super().__init__(
            [pool, keys.batch_lane(pool)],  # rq's registry clean-up then covers the batch lane too
            name=name,
            connection=connection,
            serializer=OrjsonSerializer,
            worker_ttl=max(1, math.ceil(settings.worker_dead_after)),
            default_result_ttl=settings.result_ttl,
            maintenance_interval=int(maintenance_interval),
        )
        self.settings = settings
        self.pool = pool
        self.concurrency = concurrency
        self.shutdown_grace = settings.worker_shutdown_grace if shutdown_grace is None else shutdown_grace
        self.maintenance_every = maintenance_interval
        # A running job's rq execution is renewed every RENEWAL_BEATS heartbeats, not at each (a beat then
        # renews a fraction of thousands of streams), and lives that much longer: its score in rq's
        # started registry keeps the margin a renewal at every beat would give (twice worker_dead_after,
        # at least three beats), which is how long the loop may stall before rq's clean-up fails it.
        heartbeat = settings.worker_heartbeat_interval
        self.execution_renew_every = RENEWAL_BEATS * heartbeat
        self.execution_ttl = max(3, math.ceil(2 * settings.worker_dead_after), math.ceil(3 * heartbeat))
        self.execution_ttl += math.ceil(self.execution_renew_every - heartbeat)
        self._runs: dict[str, _Run] = {}
        self._provider: GuardedProvider | None = None  # set in run(): its leases renew on each heartbeat
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._force = asyncio.Event()
        self.prefetch = max(1, settings.worker_prefetch)
        self._unstarted = 0  # jobs taken whose start (load, mark started) has not completed
        self._wake = asyncio.Event()  # a slot freed up, a job started, or a stop was requested
        self.loop_lag = LoopLag()  # sampled from run() on: how late the loop runs ready callbacks
        self.batch_lane: BatchLane | None = None  # set in run()
        self.loop_guard = LoopGuard(settings.worker_saturated_lag)
        self._maintenance_stop = threading.Event()
        # Reply channels a job found without subscriber: a queued job for one is checked before it runs.
        self._unheard_channels: dict[str, None] = {}
        self._early_cancels: dict[str, None] = {}  # cancels of jobs not running here (yet): _on_stop_request
        self.reporter = reporter if reporter is not None else JobReporter(WorkerMetrics(settings, pool))
        self.reporter.metrics.watch_slots(lambda: len(self._runs), concurrency)
        self.reporter.metrics.watch_loop_lag(lambda: self.loop_lag.lag)

    # --- rq's interface -----------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: object, working_time: float = 0.0) -> int:
        """Executions live twice ``worker_dead_after``: past that, rq's clean-up may fail the job."""
        return self.execution_ttl

    def work(self, burst: bool = False, **_: object) -> bool:  # type: ignore[override]
        """Run until stopped (or, with ``burst``, until the queue is empty); True if a job ran."""
        try:
            import uvloop

            return uvloop.run(self.run(burst=burst))
        except ImportError:  # uvloop is optional (not on Windows)
            return asyncio.run(self.run(burst=burst))

    def request_stop(self, signum: object = None, frame: object = None) -> None:
        """Warm shutdown: stop dequeuing, let in-flight jobs finish; a second request stops at once."""
        if self._stopping:
            self._force.set()
        self._stopping = True
        self._wake.set()
        self.log.info(
            "Worker %s: stop requested; %d job(s) in flight get %.0f s to finish",
            self.name,
            len(self._runs),
            self.shutdown_grace,
        )

    # --- the loop -----------------------------------------------------------------------------------

    async def run(self, burst: bool = False) -> bool:
        loop = asyncio.get_running_loop()
        handled = _handle_signals(loop, self.request_stop)
        self._redis = _client(self.settings, max_connections=max(4, min(self.concurrency, 64)))
        self._batcher = PublishBatcher(self._redis)
        # Heartbeats get a connection of their own, so that a beat never queues behind the jobs' writes on
        # the shared one: a late beat makes the ingress take a busy worker for dead.
        self._heartbeat_redis = _client(self.settings, max_connections=1)
        # The dequeue loop's moves block: they get a connection of their own (auto-pipelined, for its cheap
        # round trips; nothing else shares it).
        self._blocking = async_client(
            self.settings.redis_url,
            max_connections=1,
            auto_pipeline=self.settings.redis_auto_pipeline,
            socket_timeout=DEQUEUE_TIMEOUT + 10,
        )
        adapter = self._provider = guarded_provider(
            make_adapter(self.settings.provider(self.pool)),
            self._redis,
            self.settings,
            pool=self.pool,
            worker_name=self.name,
            defer_success_writes=True,  # complete() sends them with the final frame: guard_commands
        )
        await asyncio.to_thread(self._register_birth)
        await dequeue.load_script(self._blocking)
        beacon = LivenessBeacon(
            self.settings.redis_url,
            worker_name=self.name,
            pool=self.pool,
            interval=self.settings.worker_heartbeat_interval,
            alive_ttl_ms=int(self.settings.worker_dead_after * 1000),
        )
        await beacon.start()
        await self._beat()
        maintenance = threading.Thread(target=self._maintain, name=f"rq-maintenance-{self.name}", daemon=True)
        maintenance.start()
        halt = asyncio.Event()
        heartbeats = loop.create_task(self._heartbeats(halt))
        store = loop.create_task(watch_store(StoreMarker(), self._redis, halt=halt))
        listener = loop.create_task(
            stop_requests.listen(
                self._redis, self.pubsub_channel_name, self._on_stop_request, self._read_cancel_markers
            )
        )
        lane = self.batch_lane = self._batch_lane(adapter)
        lane_task = loop.create_task(lane.run())
        self.loop_lag.start()
        worked = False
        try:
            worked = await self._dequeue(adapter, burst)
            lane.stop()
            await lane_task
            await self._drain()
        finally:
            self.loop_lag.stop()
            lane.stop()
            await asyncio.gather(lane_task, return_exceptions=True)
            halt.set()  # heartbeat and store watch end between reads: a cancel mid-pipeline would leak it
            listener.cancel()
            await asyncio.gather(heartbeats, listener, store, return_exceptions=True)
            self._maintenance_stop.set()
            await asyncio.to_thread(maintenance.join, 5)
            await asyncio.to_thread(beacon.stop)
            await self._depart()
            await adapter.aclose()
            await self._redis.aclose()
            await self._heartbeat_redis.aclose()
            await self._blocking.aclose()
            for sig in handled:
                loop.remove_signal_handler(sig)
        return worked

    def _register_birth(self) -> None:
        self.register_birth()  # type: ignore[no-untyped-call]  # rq's is untyped
        self.set_state(WorkerStatus.STARTED)
        self.log.info("Worker %s: serving pool %s with %d slots", self.name, self.pool, self.concurrency)

    async def _depart(self) -> None:
        try:
            await self._execute(bookkeeping.departure_commands(self, self.pool))
            await asyncio.to_thread(self.register_death)
        except (RedisError, OSError):
            self.log.warning("Worker %s: could not register its death", self.name, exc_info=True)

    async def _dequeue(self, adapter: GuardedProvider, burst: bool) -> bool:
        """Take jobs while a slot is free and the loop keeps up: never more jobs held than
        ``concurrency``, never more than ``prefetch`` of them not started yet, none while the loop guard
        finds the loop saturated (:mod:`workers.loop_load`).

        One BLMOVE waits for a job (on this loop's own connection, each move with its job's reads:
        :mod:`workers.dequeue`); once one came and more are queued, they are taken with LMOVEs pipelined
        on that connection, as many as are free slots and queued jobs, up to a batch that doubles (up to
        ``prefetch``) while the queue keeps them coming and starts over at one when it runs dry: under
        load a round trip takes several jobs, not one, and a burst after a lull spreads over the
        pool's workers."""
        source = keys.rq_queue_key(self.pool)
        target = IntermediateQueue.get_intermediate_queue_key(source)
        worked = False
        batch = 1
        while not self._stopping:
            if len(self._runs) >= self.concurrency or self._unstarted >= self.prefetch:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.loop_guard.admits(self.loop_lag.lag):
                await asyncio.sleep(self.loop_lag.tick)  # the lag is sampled once a tick
                continue
            try:
                taken = await dequeue.take(
                    self._blocking, source, target, block=None if burst else DEQUEUE_TIMEOUT
                )
            except (RedisError, OSError):
                self.log.warning("Worker %s: dequeue failed; retrying", self.name, exc_info=True)
                await asyncio.sleep(_RETRY_PAUSE)
                continue
            if not taken.jobs:
                if burst:
                    break
                continue
            [job] = taken.jobs
            if self._stopping:  # taken while a stop was requested: put it back at the head of the queue
                await self._requeue(job.job_id, source, target)
                break
            if not self.loop_guard.admits(self.loop_lag.lag):  # saturated while BLMOVE waited: give it back
                await self._requeue(job.job_id, source, target)
                continue
            worked = True
            self._launch(job.job_id, adapter, reads=job.reads)
            want = min(self.concurrency - len(self._runs), self.prefetch - self._unstarted, batch)
            short = taken.queued is not None and taken.queued < want  # fewer queued than the batch
            if short:
                want = taken.queued or 0
            if want <= 0:
                if taken.queued == 0:
                    batch = 1  # the queue ran dry: the next burst starts small again
                    if len(self._runs) == 1:  # the job is all there is to do: its upstream call first
                        await _let_job_call_upstream()
                continue
            # Let the job take its first step before the moves are built.
            await asyncio.sleep(0)
            try:
                more = (await dequeue.take(self._blocking, source, target, block=None, count=want)).jobs
            except (RedisError, OSError):  # what it moved, rq's intermediate-queue clean-up fails
                self.log.warning("Worker %s: dequeue failed; retrying", self.name, exc_info=True)
                continue
            batch = next_batch(batch, wanted=want, moved=len(more), short=short, prefetch=self.prefetch)
            if self._stopping:
                for extra in reversed(more):
                    await self._requeue(extra.job_id, source, target)
                break
            for extra in more:
                self._launch(extra.job_id, adapter, reads=extra.reads)
        return worked

    def _batch_lane(self, adapter: GuardedProvider) -> BatchLane:
        """The lane that fills the slots interactive jobs leave free with batch lines, and yields the
        loop to interactive jobs."""
        batches = self.settings.batches
        throttle = LaneThrottle(
            lane_limit(self.concurrency, batches.interactive_reserve),
            yield_lag=batches.yield_lag,
            floor=batches.yield_floor,
            interactive_grace=batches.interactive_grace,
        )
        return BatchLane(
            self._redis,
            pool=self.pool,
            concurrency=self.concurrency,
            interactive_reserve=batches.interactive_reserve,
            running=lambda: len(self._runs),
            unstarted_room=lambda: self.prefetch - self._unstarted,
            launch=lambda job_id, origin: self._launch(job_id, adapter, origin),
            throttle=throttle,
            lag=lambda: self.loop_lag.peak,
            admits=lambda: self.loop_guard.admits(self.loop_lag.lag),
        )

    def _launch(
        self, job_id: str, adapter: GuardedProvider, origin: str = "", reads: StartReads | None = None
    ) -> asyncio.Task[None]:
        run = _Run(job_id, origin or self.pool, reads)
        if job_id in self._early_cancels:  # cancelled between its move's reads and now
            del self._early_cancels[job_id]
            run.stop_reason = "cancelled"
        self._runs[run.job_id] = run
        self._unstarted += 1
        task = asyncio.get_running_loop().create_task(self._run(run, adapter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _requeue(self, job_id: str, source: str, target: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrem(target, 1, job_id)
                pipe.lpush(source, job_id)
                await pipe.execute()
        except (RedisError, OSError):  # rq's intermediate-queue clean-up will fail it after a minute
            self.log.warning("Worker %s: could not requeue job %r", self.name, job_id, exc_info=True)

    async def _drain(self) -> None:
        """Wait for in-flight jobs: all of them, within the grace period, then stop the rest (their clients
        get a ``worker_lost`` error) and give their final writes up to ``FINAL_WRITES_WAIT``."""
        if not self._tasks:
            return
        everything = asyncio.gather(*self._tasks, return_exceptions=True)
        force = asyncio.ensure_future(self._force.wait())
        timeout = self.shutdown_grace if self._stopping else None
        waiters: list[asyncio.Future[Any]] = [everything, force]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        for run in list(self._runs.values()):
            self._stop(run, "shutdown")
        await asyncio.wait([everything], timeout=FINAL_WRITES_WAIT)

    # --- one job ------------------------------------------------------------------------------------

    async def _run(self, run: _Run, adapter: GuardedProvider) -> None:
        try:
            await self._execute_job(run, adapter)
        except (RedisError, OSError) as exc:  # Redis lost while the job started or ended: no bug of ours
            self.log.warning(
                "Worker %s: job %s: Redis failed (%s); rq's clean-up of its registries takes it",
                self.name,
                run.job_id,
                exc,
            )
        except Exception:
            self.log.exception("Worker %s: job %s broke the worker's bookkeeping", self.name, run.job_id)
        finally:
            self._runs.pop(run.job_id, None)
            self._wake.set()

    async def _execute_job(self, run: _Run, adapter: GuardedProvider) -> None:
        try:
            record, cancelled, broken = await self._start(run.job_id, run.origin, run.reads)
            run.reads = None  # the job's request: not kept while it runs
        finally:
            self._unstarted -= 1
            self._wake.set()
        if record is None:
            return
        adapter.note_broken(broken)
        body_bytes = len(record.data)
        try:
            job = CompletionJob.from_wire(record.args[0])
        except (TypeError, KeyError, IndexError, ValueError) as exc:  # not an AIOrouter job: nobody to answer
            record.data = unreadable_call(body_bytes)
            started, start = self._mark_started(run, record)
            reason = f"Malformed completion job: {exc!r}"
            idle = self._last_one(run)
            failure = bookkeeping.failure_commands(self, started, reason, stopped=False, idle=idle)
            await self._execute([*start, *failure])
            return
        unsent: list[list[Command]] = []  # the start's commands, built and not yet handed to a write

        def start_job() -> StartedJob:
            """Mark the job started, once: its commands wait in ``unsent`` for the job's first write.
            From here on rq's record of the job keeps a diagnostic copy, not the request: the final
            bookkeeping writes it (rq's failure path saves the whole hash), and so does the strip."""
            if run.started is None:
                record.data = diagnostic_call(
                    job, body_bytes=body_bytes, prompt_bytes=self.settings.job_record_prompt_bytes
                )
                _, start = self._mark_started(run, record)
                billing = JobBilling.of_job(job)  # the heartbeat renews its hold from now on
                run.reservation = billing.reservation if billing is not None else None
                unsent.append([*start, *bookkeeping.strip_commands(record)])
            assert run.started is not None
            return run.started

        def start_commands() -> list[Command]:
            start_job()
            return unsent.pop() if unsent else []

        if cancelled or run.stop_reason == "cancelled":
            started = start_job()
            commands = bookkeeping.failure_commands(
                self,
                started,
                "Cancelled: the client went away before the job started.",
                stopped=True,
                idle=self._last_one(run),
            )
            await self._execute([*start_commands(), *commands])
            return
        if job.reply_to in self._unheard_channels and await self._ingress_gone(job.reply_to):
            started = start_job()
            await self._drop_unheard(run, started, job, start_commands())
            return
        listened = job.reply_to != keys.BATCH_REPLY_CHANNEL  # a batch line's frames have no reader
        publisher = FramePublisher(
            self._redis, job.reply_to, job.request_id, self._batcher, listened=listened
        )
        # The start rides with the S frame, built once the upstream request is on its way (attach_later):
        # whoever sees the S frame sees the job started.
        publisher.attach_later(start_commands)
        run.publisher = publisher

        def bookkeeping_commands(ending: JobEnding) -> list[Command]:
            started = start_job()  # built already, unless the job ended before its S frame went out
            if ending.error is None:
                return bookkeeping.success_commands(self, started, ending.summary(), idle=self._last_one(run))
            reason = f"{type(ending.error).__name__}: {ending.error.message}"
            return bookkeeping.failure_commands(
                self, started, reason, stopped=False, idle=self._last_one(run)
            )

        loop = asyncio.get_running_loop()
        run.task = loop.create_task(
            complete(
                job,
                adapter,
                publisher,
                worker_name=self.name,
                taken_at=run.taken_at,
                bookkeeping_commands=bookkeeping_commands,
                guard_commands=adapter.guard_commands,
            )
        )
        limit = record.timeout
        timer = loop.call_later(limit, self._stop, run, "timeout") if limit and limit > 0 else None
        try:
            ending = await run.task
        except asyncio.CancelledError:
            if run.finalized or publisher.finishing:  # its final frame and bookkeeping go on, shielded
                return
            await self._record_stop(run, start_job(), publisher, start_commands, job)
            self.reporter.stopped(job, run.stop_reason)
        else:
            self.reporter.ended(job, ending)
        finally:
            if timer is not None:
                timer.cancel()
            if publisher.unheard:
                self._note_unheard(job.reply_to)

    async def _ingress_gone(self, channel: str) -> bool:
        """Whether nobody subscribes to ``channel`` any more (one ``PUBSUB NUMSUB``; asked only for the
        channel of an ingress already seen gone, so its queued jobs never reach the upstream)."""
        try:
            ((_, count),) = await self._redis.pubsub_numsub(channel)
        except (RedisError, OSError):
            return False
        if count:
            self._unheard_channels.pop(channel, None)
        return not count

    async def _drop_unheard(
        self, run: _Run, started: StartedJob, job: CompletionJob, start: list[Command]
    ) -> None:
        """Record a job whose ingress is gone as failed without running it (``start`` marks it started
        first), and release its hold."""
        error = IngressGone()
        reason = f"IngressGone: {error.message}"
        await self._execute(
            [
                *start,
                *bookkeeping.failure_commands(self, started, reason, stopped=False, idle=self._last_one(run)),
                *settlement.billing_commands(job, error=error),
                *self._pool_minute(pool_stats.GONE),
            ]
        )

    def _note_unheard(self, channel: str) -> None:
        if len(self._unheard_channels) >= _UNHEARD_CHANNELS_KEPT:
            self._unheard_channels.clear()
        self._unheard_channels[channel] = None

    async def _record_stop(
        self,
        run: _Run,
        started: StartedJob,
        publisher: FramePublisher,
        start: Callable[[], list[Command]],
        job: CompletionJob,
    ) -> None:
        """Record a job stopped mid-run; ``start()`` gives the job's start if no S frame carried it yet (the
        job was stopped before it ran), for the failure's write."""
        if run.stop_reason in ("cancelled", "ingress_gone"):
            publisher.abandon()
            # The S frame's write carries the job's start: the failure must land after it, or carry it
            # (the start built for an S frame that never went out, and the start not built yet).
            await asyncio.gather(publisher.flush(), return_exceptions=True)
            if run.stop_reason == "cancelled":  # its ingress releases the hold
                reason, stopped, release = "Cancelled: the client went away.", True, []
            else:  # nobody else will: release it, recording the job as its ingress' loss
                gone = IngressGone()
                reason, stopped = f"IngressGone: {gone.message}", False
                release = settlement.billing_commands(job, error=gone)
            await self._execute(
                [
                    *publisher.take_riders(),
                    *start(),
                    *bookkeeping.failure_commands(
                        self, started, reason, stopped=stopped, idle=self._last_one(run)
                    ),
                    *release,
                    *self._pool_minute(pool_stats.GONE),
                ]
            )
            return
        error: AIORouterError
        if run.stop_reason == "timeout":
            error = UpstreamTimeout(f"The completion ran past its time limit ({started.job.timeout} s).")
        else:
            error = WorkerLost("The worker shut down before the completion finished.")
        reason = f"{type(error).__name__}: {error.message}"
        commands = [
            *bookkeeping.failure_commands(self, started, reason, stopped=False, idle=self._last_one(run)),
            *self._pool_minute(pool_stats.ERROR),
        ]
        await publisher.finish(events.ERROR, error.to_event(), b"", commands)

    def _pool_minute(self, field: str) -> list[Command]:
        """Count a job this worker stopped in its pool's current minute (:mod:`shared.pool_stats`)."""
        return pool_stats.record_commands(self.pool, field, now=time.time())

    async def _start(
        self, job_id: str, origin: str, reads: StartReads | None = None
    ) -> tuple[Job | None, bool, list[Any]]:
        """The job, whether it was cancelled, and the deployments whose breaker is not closed (so the
        guard needs no round trip of its own for a closed one): from ``reads`` when they came with the
        move, else read in one round trip.  Marking it started (:meth:`_mark_started`) rides with the
        job's first write."""
        if reads is None:
            reads = dequeue.start_reads(await run_commands(self._redis, dequeue.start_read_commands(job_id)))
        if not reads.job_hash:
            self.log.warning("Worker %s: job %s vanished before it started", self.name, job_id)
            await self._execute(bookkeeping.forget_commands(job_id, origin))
            return None, False, reads.broken
        return bookkeeping.adopt(job_id, reads.job_hash), reads.cancelled, reads.broken

    def _mark_started(self, run: _Run, record: Job) -> tuple[StartedJob, list[Command]]:
        """The job's start (its execution, status, registries, the worker busy), as commands; from here on
        the heartbeat renews its execution."""
        execution, commands = bookkeeping.start_commands(self, record, self.execution_ttl)
        run.started = StartedJob(record, execution)
        run.beat_at = asyncio.get_running_loop().time() + self.execution_renew_every
        return run.started, commands

    def _stop(self, run: _Run, reason: str) -> None:
        if run.stop_reason:
            return
        run.stop_reason = reason
        if run.task is not None:
            run.task.cancel()

    def _last_one(self, run: _Run) -> bool:
        """Mark ``run`` as writing its final bookkeeping; True when no other job is still running (then
        that bookkeeping also sets rq's worker state back to idle)."""
        run.finalized = True
        return all(other.finalized for other in self._runs.values())

    async def _execute(self, commands: list[Command], client: aredis.Redis | None = None) -> list[object]:
        return await run_commands(client or self._redis, commands)

    # --- background duties --------------------------------------------------------------------------

    async def _heartbeats(self, halt: asyncio.Event) -> None:
        while not halt.is_set():
            try:
                await asyncio.wait_for(halt.wait(), self.settings.worker_heartbeat_interval)
                return
            except TimeoutError:
                pass
            try:
                await self._beat()
            except Exception:  # a beat that fails must not end the heartbeats: the worker would look dead
                self.log.warning("Worker %s: heartbeat failed", self.name, exc_info=True)

    async def _beat(self) -> None:
        now = asyncio.get_running_loop().time()
        due = [run for run in self._runs.values() if run.started is not None and run.beat_at <= now]
        running = [run.started for run in due if run.started is not None]
        commands = bookkeeping.heartbeat_commands(self, running, execution_ttl=self.execution_ttl)
        leases = self._due_leases(now)
        commands += [
            credits.extend_call(run.reservation, self.settings.reservation_lease).command()
            for run in leases
            if run.reservation is not None
        ]
        listening = [
            run
            for run in self._runs.values()
            if run.publisher is not None and run.publisher.listened and not run.finalized
        ]
        channels = sorted({run.publisher.channel for run in listening if run.publisher is not None})
        async with self._heartbeat_redis.pipeline(transaction=False) as pipe:
            replay(pipe, commands)
            if channels:
                pipe.pubsub_numsub(*channels)
            replies = await pipe.execute()
        for run in due:  # only now: a beat that failed leaves them due for the next one
            run.beat_at = now + self.execution_renew_every
        for run in leases:
            run.renew_at = now + self.settings.reservation_lease / 2
        if replies and replies[0] == 1:  # rq's worker hash had expired: HSET created it anew
            await self._execute(bookkeeping.rebirth_commands(self), self._heartbeat_redis)
        if channels:
            self._stop_unheard(listening, replies[-1])
        if self._provider is not None:
            await self._provider.renew()

    def _due_leases(self, now: float) -> list[_Run]:
        """The running jobs whose credit hold this beat renews: half its lease gone."""
        return [
            run
            for run in self._runs.values()
            if run.reservation is not None and not run.finalized and run.renew_at <= now
        ]

    def _stop_unheard(self, runs: list[_Run], numsub: list[tuple[bytes | str, int]]) -> None:
        """Stop the jobs whose reply channel has no subscriber left (their ingress is gone): each stops at
        its next upstream delta, recording what the upstream produced; one still running at the next
        beat (its upstream silent: waiting for a first token, or stalled) is cancelled there, so that no
        upstream call (nor a retry of it) runs on for nobody."""
        subscribers = {_text(channel): int(count) for channel, count in numsub}
        for run in runs:
            if run.publisher is not None and subscribers.get(run.publisher.channel, 1) == 0:
                if not run.publisher.unheard:
                    self.log.warning(
                        "Worker %s: job %s has no ingress left; stopping it", self.name, run.job_id
                    )
                elif not run.publisher.finishing:
                    self._stop(run, "ingress_gone")
                run.publisher.stop_unheard()
                self._note_unheard(run.publisher.channel)

    async def _read_cancel_markers(self) -> None:
        """Stop the running jobs whose cancel marker is set: their cancel may have been published while
        the stop-request subscription was down (Redis restarting), and nobody heard it."""
        job_ids = list(self._runs)
        if not job_ids:
            return
        markers = await run_commands(
            self._redis, [(("EXISTS", keys.cancelled_marker(j)), {}) for j in job_ids]
        )
        for job_id, marked in zip(job_ids, markers, strict=True):
            if marked:
                self._on_stop_request(StopRequest(job_id))

    def _on_stop_request(self, request: StopRequest) -> None:
        if request.job_id is None:
            self.request_stop()
            return
        run = self._runs.get(request.job_id)
        if run is not None:
            self.log.info("Worker %s: cancelling job %s", self.name, request.job_id)
            self._stop(run, "cancelled")
            return
        # A job this worker may have taken already, its cancel marker read with the move, but not
        # launched yet (the move's reply and this cancel arrived in the same pass): _launch checks here.
        if len(self._early_cancels) >= _EARLY_CANCELS_KEPT:
            self._early_cancels.pop(next(iter(self._early_cancels)))
        self._early_cancels[request.job_id] = None

    def _maintain(self) -> None:
        """rq's registry maintenance, in a thread: it is sync and may be slow, the loop must not wait.

        rq takes a queue's maintenance lock (``rq:clean_registries:<queue>``, 899 s) before cleaning it
        and deletes it after: a run that fails midway (Redis frozen, restarting) leaves it, and no worker
        would clean that queue for 15 minutes.  After a failed run the worker deletes its queues' locks
        before the next one (another worker's clean-up may then overlap it: rq's clean-ups are safe to
        repeat)."""
        failed = False
        while not self._maintenance_stop.is_set():
            try:
                if failed:
                    for queue in self.queues:
                        queue.release_maintenance_lock()  # type: ignore[no-untyped-call]  # rq's is untyped
                self.clean_registries()  # type: ignore[no-untyped-call]
                failed = False
            except Exception:  # keep maintaining: a bad job record must not stop the clean-up for good
                failed = True
                self.log.warning("Worker %s: registry maintenance failed", self.name, exc_info=True)
            self._maintenance_stop.wait(self.maintenance_every)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


JOB_FIRST_STEPS = 2
"""Loop passes a job just taken off an emptied queue by an otherwise idle worker runs before the worker's
next ``BLMOVE``: one to its start (:meth:`AsyncWorker._execute_job`), one to its upstream request
(:func:`workers.completion.complete` in a task of its own).  The upstream request leaves first, and the
move that would only wait for the next job does not cost the job a write to Redis on its way to the
upstream.  A busy worker does not wait: there a loop pass runs every other job's work, and two of them
before each move cost more pick-ups than they save one job."""


async def _let_job_call_upstream() -> None:
    for _ in range(JOB_FIRST_STEPS):
        await asyncio.sleep(0)


def next_batch(batch: int, *, wanted: int, moved: int, short: bool, prefetch: int) -> int:
    """The dequeue loop's next batch of moves after one that ``wanted`` jobs and ``moved`` that many:
    twice as many (up to ``prefetch``) while the queue keeps up with the batch, else what it held (at
    least one), so that the batch follows the queue back down when it runs short."""
    if moved == wanted and not short:
        return min(prefetch, batch * 2)
    return max(1, moved)


def _handle_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> list[signal.Signals]:
    """SIGTERM/SIGINT request a warm stop, when this loop may handle signals (the main thread's can)."""
    handled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler)
        except (ValueError, RuntimeError, NotImplementedError):
            continue
        handled.append(sig)
    return handled


def _client(settings: Settings, *, max_connections: int) -> aredis.Redis:
    """The jobs' client: their commands share one auto-pipelined connection (:mod:`shared.autopipeline`);
    the pool serves the stop-request listener's pub/sub."""
    return async_client(
        settings.redis_url,
        max_connections=max_connections,
        timeout=_CONNECTION_WAIT,
        auto_pipeline=settings.redis_auto_pipeline,
    )
