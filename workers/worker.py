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

Beside the jobs run the worker's background loops (:mod:`workers.upkeep`): the heartbeat, liveness,
rq's registry maintenance, the store watch and the stop-request listener.  The heartbeat stops a job
whose ingress has no subscription any more (:mod:`workers.heartbeat`); a job publishing frames learns the
same from its own ``PUBLISH`` replies (:mod:`workers.publisher`).  A queued job of an ingress that is gone
is released without calling the upstream: the move's read answers whether anyone subscribes to its
reply channel (:mod:`workers.dequeue`), and a job read apart from its move is checked against the
channels the worker already found unheard.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.exceptions import RedisError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.worker.base import BaseWorker

from shared import events, keys, pool_stats
from shared.credits import Reservation
from shared.errors import AIORouterError, IngressGone, ServiceUnavailable, UpstreamTimeout, WorkerLost
from shared.job_billing import JobBilling
from shared.jobs import CompletionJob, diagnostic_call, unreadable_call
from shared.redis_commands import Command, run_commands
from shared.rq_bridge import memoize_serializer_lookup
from shared.serialization import OrjsonSerializer
from shared.settings import Settings
from workers import bookkeeping, dequeue, settlement, stop_requests
from workers.batch_lane import BatchLane, configured_throttle
from workers.bookkeeping import StartedJob
from workers.completion import JobEnding, Progress, complete
from workers.connections import WorkerConnections
from workers.dequeue import StartReads, next_batch
from workers.guarded_provider import GuardedProvider, guarded_provider
from workers.heartbeat import execution_lifetime
from workers.job_report import JobReporter
from workers.loop_load import LoopGuard, LoopLag
from workers.metrics import WorkerMetrics
from workers.providers import make_adapter
from workers.publish_batcher import PublishBatcher
from workers.publisher import FramePublisher
from workers.stop_requests import EarlyCancels
from workers.upkeep import Upkeep

DEQUEUE_TIMEOUT = 1  # seconds a BLMOVE blocks; bounds how long a shutdown waits for the dequeue loop
MAINTENANCE_INTERVAL = 30.0  # seconds between runs of rq's registry clean-up
FINAL_WRITES_WAIT = 10.0  # seconds jobs stopped at the end of the shutdown grace get for their last writes
_RETRY_PAUSE = 1.0
_UNHEARD_CHANNELS_KEPT = 1024  # reply channels remembered as unheard (forgotten all at once beyond)


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
    progress: Progress = field(default_factory=Progress)  # what its upstream produced (workers.completion)
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
        self.execution_renew_every, self.execution_ttl = execution_lifetime(settings)  # workers.heartbeat
        self._runs: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._force = asyncio.Event()
        self.prefetch = max(1, settings.worker_prefetch)
        self._unstarted = 0  # jobs taken whose start (load, mark started) has not completed
        self._wake = asyncio.Event()  # a slot freed up, a job started, or a stop was requested
        self.loop_lag = LoopLag()  # sampled from run() on: how late the loop runs ready callbacks
        self.batch_lane: BatchLane | None = None  # set in run()
        self.loop_guard = LoopGuard(settings.worker_saturated_lag)
        # Reply channels a job found without subscriber: a queued job for one is checked before it runs.
        self._unheard_channels: dict[str, None] = {}
        self._early_cancels = EarlyCancels()  # cancels heard before their job's launch
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
        handled = stop_requests.handle_signals(loop, self.request_stop)
        connections = WorkerConnections.open(self.settings, self.concurrency, longest_block=DEQUEUE_TIMEOUT)
        self._redis, self._blocking = connections.jobs, connections.blocking
        self._batcher = PublishBatcher(self._redis)
        adapter = guarded_provider(
            make_adapter(self.settings.provider(self.pool)),
            self._redis,
            self.settings,
            pool=self.pool,
            worker_name=self.name,
            defer_success_writes=True,  # complete() sends them with the final frame: guard_commands
        )
        await dequeue.load_script(self._blocking)
        upkeep = self.upkeep = Upkeep(
            self,
            self.settings,
            connections,
            adapter,
            pool=self.pool,
            concurrency=self.concurrency,
            runs=self._runs,
            stop=self._stop,
            note_unheard=self._note_unheard,
            stop_worker=self.request_stop,
            early_cancels=self._early_cancels,
            maintenance_every=self.maintenance_every,
        )
        await upkeep.start()
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
            await upkeep.stop()
            await adapter.aclose()
            await connections.aclose()
            for sig in handled:
                loop.remove_signal_handler(sig)
        return worked

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
        return BatchLane(
            self._redis,
            pool=self.pool,
            concurrency=self.concurrency,
            interactive_reserve=batches.interactive_reserve,
            running=lambda: len(self._runs),
            unstarted_room=lambda: self.prefetch - self._unstarted,
            launch=lambda job_id, origin: self._launch(job_id, adapter, origin),
            throttle=configured_throttle(self.concurrency, batches),
            lag=lambda: self.loop_lag.peak,
            admits=lambda: self.loop_guard.admits(self.loop_lag.lag),
        )

    def _launch(
        self, job_id: str, adapter: GuardedProvider, origin: str = "", reads: StartReads | None = None
    ) -> asyncio.Task[None]:
        run = _Run(job_id, origin or self.pool, reads)
        if self._early_cancels.claim(job_id):  # cancelled between its move's reads and now
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
            record, cancelled, broken, unheard = await self._start(run.job_id, run.origin, run.reads)
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
        if unheard or (job.reply_to in self._unheard_channels and await self._ingress_gone(job.reply_to)):
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
                progress=run.progress,
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
        """Whether nobody subscribes to ``channel`` any more (one ``PUBSUB NUMSUB``): asked of a job the
        take script did not check (read on its own, or enqueued without its channel in its hash:
        :mod:`workers.dequeue`), and only once this worker has seen its channel unheard."""
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
        first), release its hold, and note its channel unheard."""
        self._note_unheard(job.reply_to)
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
        if channel in self._unheard_channels:
            return
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
        job was stopped before it ran), for the failure's write.

        A job whose client left (``cancelled``: its ingress left the settlement to it) is charged what it
        produced so far; one whose ingress is gone releases its hold (:mod:`workers.settlement`).  Either
        write is retried while Redis cannot be reached, a retry carrying only the idempotent settlement."""
        if run.stop_reason in ("cancelled", "ingress_gone"):
            publisher.abandon()
            # The S frame's write carries the job's start: the failure must land after it, or carry it
            # (the start built for an S frame that never went out, and the start not built yet).
            await asyncio.gather(publisher.flush(), return_exceptions=True)
            produced = run.progress.usage_so_far(job)
            if run.stop_reason == "cancelled":
                reason, stopped = "Cancelled: the client went away.", True
                billing, retry = settlement.final_commands(
                    job, error=None, token_usage=produced, client_left=True
                )
            else:  # nobody else will: release it, recording the job as its ingress' loss
                gone = IngressGone()
                reason, stopped = f"IngressGone: {gone.message}", False
                billing, retry = settlement.final_commands(job, error=gone, token_usage=produced)
            commands = [
                *publisher.take_riders(),
                *start(),
                *bookkeeping.failure_commands(
                    self, started, reason, stopped=stopped, idle=self._last_one(run)
                ),
                *billing,
                *self._pool_minute(pool_stats.GONE),
            ]
            try:
                await publisher.write_final(commands, retry)
            except ServiceUnavailable as exc:  # the hold's lease runs out: the sweep releases it
                self.log.warning(
                    "Worker %s: job %s: its stop was not recorded (%s)", self.name, run.job_id, exc.__cause__
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
    ) -> tuple[Job | None, bool, list[Any], bool]:
        """The job, whether it was cancelled, the deployments whose breaker is not closed (so the guard
        needs no round trip of its own for a closed one), and whether nobody subscribed to its reply
        channel as it was taken: from ``reads`` when they came with the move, else read in one round trip
        (the job then taken as heard, :mod:`workers.dequeue`).  Marking it started
        (:meth:`_mark_started`) rides with the job's first write."""
        if reads is None:
            reads = dequeue.start_reads(await run_commands(self._redis, dequeue.start_read_commands(job_id)))
        if not reads.job_hash:
            self.log.warning("Worker %s: job %s vanished before it started", self.name, job_id)
            await self._execute(bookkeeping.forget_commands(job_id, origin))
            return None, False, reads.broken, False
        return bookkeeping.adopt(job_id, reads.job_hash), reads.cancelled, reads.broken, reads.unheard

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

    async def _execute(self, commands: list[Command]) -> list[object]:
        return await run_commands(self._redis, commands)


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
