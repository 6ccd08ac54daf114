"""rq's bookkeeping for the jobs of an :class:`~workers.worker.AsyncWorker`, as rq's own code writes it.

Each function returns the commands of one transition; the worker replays them on its asyncio connection,
one round trip per transition.  Keys, fields, scores and TTLs are rq's, and ``rq info``, rq-dashboard and
rq's registry clean-up read them as they read a stock worker's.  The rare transitions call rq's methods on
a recording pipeline (:mod:`shared.rq_bridge`); the ones every job makes (start, success, the execution's
heartbeat) are built from the keys, because rq's objects (a registry, an execution, a result per call,
and its clock read through ``strftime``) cost several times the commands they queue:
``tests/workers/test_bookkeeping.py`` compares each with rq's own, command for command, on a frozen clock.

Two differences from a stock worker, on purpose: a finished job's hash is not rewritten whole (rq's
``Job.save`` re-sends the compressed call); only the fields that change are set.  And once loaded, a job's
call is replaced by its diagnostic copy (:func:`shared.jobs.diagnostic_call`, :func:`strip_commands`), so
the request body leaves Redis as soon as a worker holds it.
"""

from __future__ import annotations

from base64 import b64encode
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.utils import current_timestamp, now, utcformat
from rq.worker.base import WorkerStatus

from shared import keys
from shared.redis_commands import Command
from shared.rq_bridge import RECORDING_CLIENT, recorded, recording_pipeline
from shared.serialization import OrjsonSerializer, stored_call

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
    """Mark ``job`` started: what ``Worker.prepare_execution`` + ``prepare_job_execution`` queue (rq's
    ``Job.prepare_for_execution``, ``Execution.create``, ``Worker.set_state``), built from the keys
    rather than through rq's registry objects (``tests/workers/test_bookkeeping.py`` compares them)."""
    execution = Execution(uuid4().hex, job.id, RECORDING_CLIENT, worker_name=worker.name)
    execution._job = job
    stamp = execution.created_at
    job.worker_name, job.last_heartbeat, job.started_at = worker.name, stamp, stamp
    job._status = JobStatus.STARTED
    worker._state = WorkerStatus.BUSY
    started, moment = utcformat(stamp), stamp.timestamp()
    score = int(moment) + heartbeat_ttl  # rq's current_timestamp() + ttl, at the same instant
    composite = execution.composite_key
    executions = ExecutionRegistry.key_template.format(job.id)
    worker_executions = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker.name)
    status = JobStatus.STARTED
    commands: list[Command] = [
        (
            (
                "HSET",
                job.key,
                "last_heartbeat",
                started,
                "status",
                status,
                "started_at",
                started,
                "worker_name",
                worker.name,
            ),
            {},
        ),
        (("PERSIST", job.key), {}),
        (("LREM", job_queue_intermediate_key(job), 1, job.id), {}),
        (
            (
                "HSET",
                execution.key,
                "id",
                execution.id,
                "job_id",
                job.id,
                "created_at",
                moment,
                "last_heartbeat",
                moment,
                "worker_name",
                worker.name,
            ),
            {},
        ),
        (("EXPIRE", execution.key, heartbeat_ttl), {}),
        (("ZADD", executions, score + 60, execution.id), {}),
        (("EXPIRE", executions, heartbeat_ttl + 60), {}),
        (("ZADD", StartedJobRegistry.key_template.format(job.origin), score, composite), {}),
        (("SADD", worker_executions, composite), {}),
        (("EXPIRE", worker_executions, heartbeat_ttl + 60), {}),
        (("HSET", worker.key, "state", WorkerStatus.BUSY), {}),
    ]
    return execution, commands


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
    pipe.hset(job.key, "data", stored_call(job.data))
    return recorded(pipe)


def forget_commands(job_id: str, queue: str) -> list[Command]:
    """Drop a job whose hash turned out not to exist from the intermediate queue of ``queue`` (nothing
    else of it was written: :func:`start_commands` comes after the load)."""
    return [(("LREM", intermediate_key(queue), 1, job_id), {})]


def success_commands(worker: BaseWorker, started: StartedJob, result: Any, *, idle: bool) -> list[Command]:
    """Record a finished job: what ``Worker.handle_job_success`` queues, built from the keys rather than
    through rq's registry and result objects (``tests/workers/test_bookkeeping.py`` compares them); a
    job whose result TTL is 0 (deleted at once) or negative (kept for ever) goes through rq's own code."""
    job, execution = started.job, started.execution
    result_ttl = job.get_result_ttl(worker.default_result_ttl)
    if result_ttl <= 0:
        return _success_commands_by_rq(worker, started, result, result_ttl, idle=idle)
    ended = job.ended_at = now()
    job._result = result
    job._status = JobStatus.FINISHED
    results = Result.get_key(job.id)  # type: ignore[no-untyped-call]  # rq's is untyped
    fields: list[Any] = ["type", Result.Type.SUCCESSFUL.value, "worker_name", worker.name]
    if result is not None:
        try:
            serialized = job.serializer.dumps(result)
        except Exception:  # as rq's Result.serialize: a placeholder, never a lost job
            serialized = job.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
        fields += ["return_value", b64encode(serialized).decode()]
    fields += ["execution_id", execution.id]
    fields += [
        "execution_started_at",
        execution.created_at.timestamp(),
        "execution_ended_at",
        ended.timestamp(),
    ]
    finished_at = int(ended.timestamp()) + result_ttl  # rq's current_timestamp() + ttl, at the same instant
    commands: list[Command] = [
        (("HSET", job.key, "status", JobStatus.FINISHED), {}),
        (("HSET", job.key, "ended_at", utcformat(ended)), {}),
        (("XADD", results, b"MAXLEN", b"~", "10", "*", *fields), {}),
        (("EXPIRE", results, result_ttl), {}),
        (("ZADD", FinishedJobRegistry.key_template.format(job.origin), finished_at, job.id), {}),
        (("EXPIRE", job.key, result_ttl), {}),
        (("EXPIRE", job.dependents_key, result_ttl), {}),
        (("EXPIRE", job.dependencies_key, result_ttl), {}),
        (("DEL", started.execution_key), {}),
        (("ZREM", started.started_registry_key, execution.composite_key), {}),
        (("ZREM", started.executions_key, execution.id), {}),
    ]
    if execution.worker_name:
        commands.append((("SREM", execution.worker_executions_key, execution.composite_key), {}))
    commands.append((("HINCRBY", worker.key, "successful_job_count", 1), {}))
    if job.started_at:
        working = (ended - job.started_at).total_seconds()
        commands.append((("HINCRBYFLOAT", worker.key, "total_working_time", working), {}))
    if idle:
        worker._state = WorkerStatus.IDLE
        commands.append((("HSET", worker.key, "state", WorkerStatus.IDLE), {}))
    return commands


def _success_commands_by_rq(
    worker: BaseWorker, started: StartedJob, result: Any, result_ttl: int, *, idle: bool
) -> list[Command]:
    """What ``Worker.handle_job_success`` queues, through rq's own objects."""
    job, execution = started.job, started.execution
    pipe = recording_pipeline()
    job.ended_at = now()
    job._result = result
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
