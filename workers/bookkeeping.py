"""rq's bookkeeping for the jobs of an :class:`~workers.worker.AsyncWorker`, recorded with rq's own code.

Each function calls rq's methods on a recording pipeline (:mod:`shared.rq_bridge`) and returns the
commands; the worker replays them on its asyncio connection, one round trip per transition.  Keys,
fields, scores and TTLs are therefore rq's, and ``rq info``, rq-dashboard and rq's registry clean-up
read them as they read a stock worker's.

Three differences from a stock worker, on purpose: a finished job's hash is not rewritten whole (rq's
``Job.save`` re-sends the compressed call); only the fields that change are set.  And once loaded, a job's
call is replaced by its diagnostic copy (:func:`shared.jobs.diagnostic_call`, :func:`strip_commands`), so
the request body leaves Redis as soon as a worker holds it.  And an execution's heartbeat
(:func:`execution_beat_commands`) is built here, not by rq's ``Execution.heartbeat``, which builds two
registry objects per running job on every beat; its commands are rq's (``tests/workers/test_bookkeeping.py``
compares them).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rq.executions import Execution, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.utils import current_timestamp, now, utcformat
from rq.worker.base import WorkerStatus

from shared import keys
from shared.redis_commands import Command
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer

if TYPE_CHECKING:
    from rq.worker.base import BaseWorker


@dataclass(slots=True)
class StartedJob:
    """A job this worker marked started: its rq record, the execution it runs under, and the keys its
    execution's heartbeat renews."""

    job: Job
    execution: Execution
    execution_key: str = field(init=False)
    started_registry_key: str = field(init=False)  # rq's StartedJobRegistry of the job's queue
    executions_key: str = field(init=False)  # rq's ExecutionRegistry of the job

    def __post_init__(self) -> None:
        self.execution_key = self.execution.key
        self.started_registry_key = StartedJobRegistry.key_template.format(self.job.origin)
        self.executions_key = ExecutionRegistry.key_template.format(self.job.id)


def start_commands(worker: BaseWorker, job: Job, heartbeat_ttl: int) -> tuple[Execution, list[Command]]:
    """Mark ``job`` started, as ``Worker.prepare_execution`` + ``prepare_job_execution`` do."""
    pipe = recording_pipeline()
    job.prepare_for_execution(worker.name, pipeline=pipe)
    pipe.persist(job.key)
    pipe.lrem(job_queue_intermediate_key(job), 1, job.id)
    execution = Execution.create(job, heartbeat_ttl, pipeline=pipe, worker_name=worker.name)
    worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
    return execution, recorded(pipe)


def job_queue_intermediate_key(job: Job) -> str:
    return intermediate_key(job.origin)


def intermediate_key(queue: str) -> str:
    """The intermediate queue of rq queue ``queue``: where BLMOVE puts the jobs a worker takes."""
    return IntermediateQueue.get_intermediate_queue_key(keys.rq_queue_key(queue))


_DATES = (b"created_at", b"enqueued_at")
"""The times a queued job's hash holds, parsed here rather than by rq's ``strptime`` (its slowest part)."""


def adopt(job_id: str, raw: dict[bytes, bytes]) -> Job:
    """The job whose hash HGETALL read as ``raw``, as rq's ``Job.fetch`` would load it (it records, and
    :func:`start_commands` marks it started)."""
    job = Job(job_id, connection=RECORDING_CLIENT, serializer=OrjsonSerializer)
    dates = {name: raw[name] for name in _DATES if raw.get(name)}
    job.restore({name: value for name, value in raw.items() if name not in dates} if dates else raw)
    if b"created_at" in dates:
        job.created_at = parse_time(dates[b"created_at"])
    if b"enqueued_at" in dates:
        job.enqueued_at = parse_time(dates[b"enqueued_at"])
    return job


def parse_time(value: bytes) -> datetime:
    """An rq timestamp (``utcformat``'s ``2026-12-06T14:49:46.775521Z``, or rq's older form without
    microseconds) as the aware UTC datetime rq's ``utcparse`` gives."""
    return datetime.fromisoformat(value.decode())


def strip_commands(job: Job) -> list[Command]:
    """Write ``job``'s current call (its diagnostic copy, set by the worker) over the one in its record."""
    pipe = recording_pipeline()
    pipe.hset(job.key, "data", zlib.compress(job.data))
    return recorded(pipe)


def forget_commands(job_id: str, queue: str) -> list[Command]:
    """Drop a job whose hash turned out not to exist from the intermediate queue of ``queue`` (nothing
    else of it was written: :func:`start_commands` comes after the load)."""
    return [(("LREM", intermediate_key(queue), 1, job_id), {})]


def success_commands(worker: BaseWorker, started: StartedJob, result: Any, *, idle: bool) -> list[Command]:
    """Record a finished job, as ``Worker.handle_job_success`` does."""
    job, execution = started.job, started.execution
    pipe = recording_pipeline()
    job.ended_at = now()
    job._result = result
    result_ttl = job.get_result_ttl(worker.default_result_ttl)
    job.set_status(JobStatus.FINISHED, pipeline=pipe)
    pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
    Result.create(
        job,
        Result.Type.SUCCESSFUL,
        ttl=result_ttl,
        return_value=result,
        worker_name=worker.name,
        pipeline=pipe,
        execution_id=execution.id,
        execution_started_at=execution.created_at,
        execution_ended_at=job.ended_at,
    )
    if result_ttl != 0:
        job.finished_job_registry.add(job, result_ttl, pipe)
        job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
    execution.delete(job, pipe)
    if result_ttl == 0:
        pipe.delete(job.key, Result.get_key(job.id))  # type: ignore[no-untyped-call]  # rq's is untyped
    worker.increment_successful_job_count(pipeline=pipe)
    _worked(worker, job, pipe, idle=idle)
    return recorded(pipe)


def failure_commands(
    worker: BaseWorker, started: StartedJob, exc_string: str, *, stopped: bool, idle: bool
) -> list[Command]:
    """Record a failed (or, when ``stopped``, a cancelled) job, as ``Worker.handle_job_failure`` does."""
    job, execution = started.job, started.execution
    pipe = recording_pipeline()
    job.ended_at = now()
    job.set_status(JobStatus.STOPPED if stopped else JobStatus.FAILED, pipeline=pipe)
    execution.delete(job, pipe)
    job._handle_failure(
        exc_string,
        pipeline=pipe,
        worker_name=worker.name,
        execution_id=execution.id,
        execution_started_at=execution.created_at,
        execution_ended_at=job.ended_at,
    )
    worker.increment_failed_job_count(pipeline=pipe)
    _worked(worker, job, pipe, idle=idle)
    return recorded(pipe)


def _worked(worker: BaseWorker, job: Job, pipe: Any, *, idle: bool) -> None:
    if job.started_at and job.ended_at:
        worker.increment_total_working_time(job.ended_at - job.started_at, pipe)
    if idle:
        worker.set_state(WorkerStatus.IDLE, pipeline=pipe)


def heartbeat_commands(worker: BaseWorker, due: list[StartedJob], *, execution_ttl: int) -> list[Command]:
    """One heartbeat of rq's records: the worker hash first (its HSET reply tells whether the hash had
    expired), then the executions in ``due``.  AIOrouter's liveness keys are the thread's
    (:mod:`workers.liveness`)."""
    pipe = recording_pipeline()
    worker.heartbeat(pipeline=pipe)
    return recorded(pipe) + execution_beat_commands(due, execution_ttl=execution_ttl)


def execution_beat_commands(due: list[StartedJob], *, execution_ttl: int) -> list[Command]:
    """What rq's ``Execution.heartbeat(job.started_job_registry, execution_ttl, pipeline)`` queues for each
    of ``due``: the execution's ``last_heartbeat`` and TTL, its score in the queue's started registry and in
    the job's execution registry (``XX``: an execution rq has already dropped stays dropped)."""
    stamp = now()
    last_heartbeat = stamp.timestamp()
    score = current_timestamp() + execution_ttl
    commands: list[Command] = []
    for started in due:
        execution = started.execution
        execution.last_heartbeat = stamp
        commands += [
            (("HSET", started.execution_key, "last_heartbeat", last_heartbeat), {}),
            (("EXPIRE", started.execution_key, execution_ttl), {}),
            (("ZADD", started.started_registry_key, b"XX", score, execution.composite_key), {}),
            (("ZADD", started.executions_key, b"XX", score + 60, execution.id), {}),
            (("EXPIRE", started.executions_key, execution_ttl + 60), {}),
        ]
    return commands


def rebirth_commands(worker: BaseWorker) -> list[Command]:
    """Recreate a worker hash that expired (the loop stalled longer than its TTL), as rq does."""
    pipe = recording_pipeline()
    pipe.hset(worker.key, mapping=worker.serialize())
    pipe.hset(worker.key, "state", worker.get_state())
    pipe.expire(worker.key, worker.worker_ttl + 60)
    return recorded(pipe)


def departure_commands(worker: BaseWorker, pool: str) -> list[Command]:
    """Drop AIOrouter's liveness keys of a worker that stops (rq's death is registered separately)."""
    pipe = recording_pipeline()
    pipe.delete(keys.worker_alive(worker.name))
    pipe.zrem(keys.pool_workers(pool), worker.name)
    return recorded(pipe)
